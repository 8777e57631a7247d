"""The float64 numpy references of the supervised scenarios against torch, and the Keras
recurrent weights converted to torch's layout."""

import numpy as np
import pytest

from dllab.supervised.common import class_sorted_orders, fed_digits, shuffled_labels
from dllab.supervised.references import adam_mlp_reference, recurrent_last_state


def test_adam_reference_equals_torch_in_float64():
    torch = pytest.importorskip("torch")
    from dllab.supervised.fit_variants_torch import build_mlp, reference_difference, train

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    batches = [(rng.random((16, 64)), rng.integers(0, 10, 16)) for _ in range(12)]
    tensors = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    initial = build_mlp().double()
    for fault, low, high in (("none", 0.0, 1e-12), ("no-zero-grad", 1e-3, np.inf),
                             ("logits-as-probabilities", 1e-3, np.inf)):
        model = build_mlp().double()
        model.load_state_dict(initial.state_dict())
        train(model, iter(tensors), 0.01, len(tensors), lambda m: (0.0, 0.0), fault)
        assert low <= reference_difference([model], initial, batches, 0.01) <= high, fault


def test_adam_reference_styles_and_refusal():
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(2, 3)), np.zeros(3), rng.normal(size=(3, 2)), np.zeros(2)]
    batches = [(rng.random((4, 2)), np.array([0, 1, 0, 1]))]
    torch_style = adam_mlp_reference(weights, batches, 0.01, "torch")
    keras_style = adam_mlp_reference(weights, batches, 0.01, "keras")
    gap = max(np.max(np.abs(a - b)) for a, b in zip(torch_style, keras_style))
    assert gap < 0.1 * 0.01  # only the size and place of epsilon differ
    assert not np.array_equal(torch_style[0], weights[0])
    with pytest.raises(ValueError, match="style"):
        adam_mlp_reference(weights, batches, 0.01, "sgd")


def test_recurrence_equals_torch_cells():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = torch.rand(4, 6, 5, dtype=torch.float64)
    for cell, kind in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        layer = kind(5, 7, batch_first=True).double()
        output, _ = layer(x)
        weights = [getattr(layer, f"{name}_l0").detach().numpy()
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        state = recurrent_last_state(cell, x.numpy(), *weights)
        assert np.max(np.abs(state - output[:, -1].detach().numpy())) < 1e-12, cell
    with pytest.raises(ValueError, match="cell"):
        recurrent_last_state("transformer", x.numpy(), *weights)


def test_keras_recurrent_weights_in_torch_layout():
    keras = pytest.importorskip("keras")
    from dllab.supervised.rnn_keras import build_row_reader, layout_difference

    images = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    for cell in ("rnn", "lstm", "gru"):
        model = build_row_reader(cell, hidden=5)
        assert layout_difference(model, cell, images, images) < 1e-5, cell
        columns = np.ascontiguousarray(images.transpose(0, 2, 1))
        assert layout_difference(model, cell, columns, images) > 1e-3, cell
    assert keras.backend.backend() in ("tensorflow", "torch", "jax")


def test_fed_digits_faults_leave_the_loaded_digits_alone():
    from dllab.data.digits import load_digits

    digits = load_digits(0)
    labels = digits.train.labels.copy()
    shuffled = fed_digits(digits, "labels-shuffled", 0)
    assert np.array_equal(np.sort(shuffled.train.labels), np.sort(labels))
    assert np.mean(shuffled.train.labels == labels) < 0.3
    assert shuffled.test is digits.test and np.array_equal(digits.train.labels, labels)
    columns = fed_digits(digits, "columns-as-steps", 0)
    assert np.array_equal(columns.test.images[3], digits.test.images[3].T)
    assert fed_digits(digits, "none", 0) is digits
    assert np.array_equal(shuffled_labels(labels, 1), shuffled_labels(labels, 1))
    order = class_sorted_orders(labels, 2)
    assert np.all(np.diff(labels[order[0]]) >= 0) and np.array_equal(order[0], order[1])
