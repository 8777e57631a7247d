"""Cross-checks of the framework-mechanics helpers beyond the scenario matrix: the numpy reference
of framework-performance against torch autograd, the DataLoader augmentation's independence of
the process that computes it, and the TensorBoard reader's choice of scalar tags."""

import numpy as np
import pytest

from dllab.concepts import framework_performance as performance


def test_numpy_reference_training_matches_torch_autograd_in_float64():
    """The hand-written forward/backward/update equals torch autograd's, step for step."""
    torch = pytest.importorskip("torch")
    problem = performance.make_problem(0, hidden=16)
    expected = performance.numpy_losses(problem, steps=5, learning_rate=0.1)
    weights = [torch.tensor(problem[f"{kind}{i}"], dtype=torch.float64, requires_grad=True)
               for i in range(3) for kind in ("w", "b")]
    inputs = torch.tensor(problem["inputs"], dtype=torch.float64)
    labels = torch.from_numpy(problem["labels"])
    losses = []
    for _ in range(5):
        hidden = inputs
        for layer in range(3):
            hidden = hidden @ weights[2 * layer] + weights[2 * layer + 1]
            hidden = torch.relu(hidden) if layer < 2 else hidden
        loss = torch.nn.functional.cross_entropy(hidden, labels)
        gradients = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for weight, gradient in zip(weights, gradients):
                weight -= 0.1 * gradient
        losses.append(loss.item())
    np.testing.assert_allclose(expected, losses, rtol=1e-12)
    assert expected[-1] < expected[0]


def test_implementation_choice_is_checked():
    assert "torch" in performance.available("current") or "tensorflow" in performance.available("current")
    with pytest.raises(ValueError, match="keras_backends"):
        performance.available("some")


def test_per_sample_augmentation_does_not_depend_on_access_order():
    """What makes 2 DataLoader workers equal to 0: sample i's randomness is keyed on (seed, epoch, i)."""
    pytest.importorskip("torch")
    from dllab.concepts.torch_data import AugmentedDigits

    rng = np.random.default_rng(0)
    images, labels = rng.random((10, 8, 8), dtype=np.float32), np.arange(10)
    dataset = AugmentedDigits(images, labels, seed=3, noise=0.1)
    forward = [dataset[i][0] for i in range(10)]
    backward = [dataset[i][0] for i in reversed(range(10))][::-1]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(forward, backward))
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[0][0].numpy(), forward[0].numpy())  # a new epoch, new noise
    with pytest.raises(ValueError, match="randomness"):
        AugmentedDigits(images, labels, seed=0, noise=0.1, randomness="threads")


def test_tensorboard_reader_keeps_scalars_and_ignores_text(tmp_path):
    """tf.summary writes scalars as tensors; a text tensor (as the Keras callback writes) is skipped."""
    tf = pytest.importorskip("tensorflow")
    from dllab.concepts.tensorboard_demo import read_scalar_curves

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step, value in enumerate([0.5, 0.25, 0.125]):
            tf.summary.scalar("losses/train", value, step=step)
        tf.summary.text("config", "not a number", step=0)
    writer.close()
    assert read_scalar_curves(tmp_path) == {"losses/train": [(0, 0.5), (1, 0.25), (2, 0.125)]}
