"""Supervised scenarios, cross-checked beyond the scenario matrix: resume equals an uninterrupted
run, hand parameter counts equal the frameworks' counts, layouts agree, user data files run."""

import numpy as np
import pytest

from dllab import registry
from dllab.runner import RunContext, run_scenario
from dllab.supervised.common import cnn_parameter_count, epoch_orders


def interrupt_after_checkpoint(monkeypatch, epoch: int):
    """Make the run stop (as Ctrl-C would) right after the checkpoint of `epoch` is written."""
    original = RunContext.save_checkpoint

    def save_then_interrupt(self, arrays, meta):
        path = original(self, arrays, meta)
        if meta["epoch"] == epoch:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(RunContext, "save_checkpoint", save_then_interrupt)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_interrupted_cnn_resumes_to_the_uninterrupted_metrics(tmp_path, monkeypatch, framework):
    pytest.importorskip(framework)
    spec = registry.get("supervised/cnn")
    settings = dict(seed=0, framework=framework, quick=True, overrides=["epochs=3"])
    whole = run_scenario(spec, out_dir=tmp_path / "whole", **settings)
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, epoch=2)
        first = run_scenario(spec, out_dir=tmp_path / "cut", **settings)
    assert first.status == "interrupted" and first.metrics["cnn_epochs_done"] == 2
    resumed = run_scenario(spec, out_dir=tmp_path / "cut", resume_from=tmp_path / "cut", **settings)
    assert whole.status == resumed.status == "ok"
    assert resumed.metrics == whole.metrics and resumed.fingerprint == whole.fingerprint


def test_resume_refuses_another_trainers_checkpoint(tmp_path):
    spec = registry.get("supervised/cnn")
    run_scenario(spec, seed=0, framework="torch", quick=True, overrides=["epochs=1"], out_dir=tmp_path / "a")
    result = run_scenario(spec, seed=1, framework="torch", quick=True, overrides=["epochs=2"],
                          out_dir=tmp_path / "a", resume_from=tmp_path / "a")
    assert result.status == "failed" and "seed 0" in result.error


@pytest.mark.parametrize("size", [8, 28])
def test_hand_parameter_count_equals_torch_count(size):
    from dllab.supervised.cnn_torch import CNN, parameter_count

    assert parameter_count(CNN(size, size, 10)) == cnn_parameter_count(size, size, 10)["total"]
    assert cnn_parameter_count(8, 8, 10)["total"] == 53_002


def test_hand_parameter_count_equals_keras_count():
    pytest.importorskip("keras")
    from dllab.supervised.cnn_keras import build_cnn

    for size, classes in [(8, 10), (12, 5)]:
        assert build_cnn(size, size, classes).count_params() == cnn_parameter_count(size, size, classes)["total"]


def test_cnn_rejects_sizes_it_cannot_pool():
    with pytest.raises(ValueError, match="divisible by 4"):
        cnn_parameter_count(10, 10, 10)


def test_epoch_orders_depend_on_seed_and_epoch_only():
    first, again = epoch_orders(0, 50, 3), epoch_orders(0, 50, 5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1]) and sorted(first[2]) == list(range(50))
    assert not np.array_equal(epoch_orders(1, 50, 1)[0], first[0])


def test_torch_sequence_first_and_batch_first_layouts_agree():
    import torch

    from dllab.supervised.rnn_torch import RowReader, layout_difference

    torch.manual_seed(0)
    images = torch.rand(5, 8, 8)
    for cell in ("rnn", "lstm", "gru"):
        assert layout_difference(RowReader(cell), images) == 0.0
    model = RowReader("gru")
    output, hidden = model.recurrent(images)
    assert torch.equal(output[:, -1, :], hidden[-1])  # last step == final hidden state
    assert output[-1].shape == (8, 64)  # the seed's output[-1] on batch-first: one image's sequence


def test_expected_hook_order_grammar():
    from dllab.supervised.callbacks_keras import expected_hooks

    hooks = expected_hooks(epochs=2, train_steps=3, validation_steps=1)
    assert hooks[0] == "train_begin" and hooks[-1] == "train_end"
    assert hooks.count("epoch_begin") == 2 and hooks.count("train_batch_end") == 6
    assert hooks.index("test_begin") > hooks.index("train_batch_end")


def test_user_npz_trains_and_a_missing_file_fails_with_one_line(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    images = (rng.random((300, 8, 8)) * 60).astype(np.uint8)
    images[labels == 1, :4] += 150  # three easy classes: plain, top half bright, bottom half bright
    images[labels == 2, 4:] += 150
    np.savez(tmp_path / "mine.npz", x_train=images, y_train=labels)
    spec = registry.get("supervised/cnn")
    good = run_scenario(spec, framework="torch", quick=True, overrides=[f"data={tmp_path / 'mine.npz'}", "epochs=3"],
                        out_dir=tmp_path / "good")
    assert good.status == "ok" and good.metrics["test_accuracy"] > 0.9
    assert good.metrics["parameter_count_error"] == 0  # a 3-class head
    bad = run_scenario(spec, framework="torch", quick=True, overrides=[f"data={tmp_path / 'nope.npz'}"],
                       out_dir=tmp_path / "bad")
    assert bad.status == "failed" and "no such file" in bad.error and "\n" not in bad.error


def test_every_training_run_leaves_curves_and_tensorboard_scalars(tmp_path):
    result = run_scenario(registry.get("supervised/rnn"), framework="torch", quick=True,
                          overrides=["epochs=1"], out_dir=tmp_path / "rnn")
    pngs = sorted(p.name for p in (tmp_path / "rnn").glob("*.png"))
    assert result.status == "ok" and pngs == ["gru.png", "lstm.png", "rnn.png"]
    assert list((tmp_path / "rnn" / "tensorboard").iterdir())
