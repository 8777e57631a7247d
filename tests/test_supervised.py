"""Supervised scenarios, cross-checked beyond the scenario matrix: resume equals an uninterrupted
run, hand parameter counts equal the frameworks' counts, layouts agree with a hand recurrence,
user data files run."""

import numpy as np
import pytest

from dllab import registry
from dllab.errors import UsageError
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
    pytest.importorskip("torch")
    spec = registry.get("supervised/cnn")
    run_scenario(spec, seed=0, framework="torch", quick=True, overrides=["epochs=1"], out_dir=tmp_path / "a")
    with pytest.raises(UsageError, match="seed 0"):
        run_scenario(spec, seed=1, framework="torch", quick=True, overrides=["epochs=2"],
                     out_dir=tmp_path / "a", resume_from=tmp_path / "a")


@pytest.mark.parametrize("size", [8, 28])
def test_hand_parameter_count_equals_torch_count(size):
    pytest.importorskip("torch")
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


def test_torch_layouts_against_the_hand_recurrence():
    """The seed's sequence-first layout with output[-1] and dllab's batch-first one with
    output[:, -1] compute the same logits as the recurrence stepped by hand over the rows;
    the rows read as columns do not."""
    pytest.importorskip("torch")
    import torch

    from dllab.supervised.rnn_torch import RowReader, layout_difference, reference_logits

    torch.manual_seed(0)
    images = torch.rand(5, 8, 8)
    for cell in ("rnn", "lstm", "gru"):
        model = RowReader(cell)
        assert layout_difference(model, images, images.numpy()) < 1e-6
        seed_layout = RowReader(cell, batch_first=False)
        seed_layout.load_state_dict(model.state_dict())
        with torch.no_grad():
            logits = seed_layout(images.transpose(0, 1)).double().numpy()
        assert np.max(np.abs(logits - reference_logits(model, images.numpy()))) < 1e-6
        assert layout_difference(model, images.transpose(1, 2), images.numpy()) > 1e-3
    model = RowReader("gru")
    output, hidden = model.recurrent(images)
    assert torch.equal(output[:, -1, :], hidden[-1])  # last step == final hidden state
    assert output[-1].shape == (8, 64)  # the seed's output[-1] on batch-first: one image's sequence


def test_expected_hook_order_grammar():
    pytest.importorskip("keras")
    from dllab.supervised.callbacks_keras import expected_hooks

    hooks = expected_hooks(epochs=2, train_steps=3, validation_steps=1)
    assert hooks[0] == "train_begin" and hooks[-1] == "train_end"
    assert hooks.count("epoch_begin") == 2 and hooks.count("train_batch_end") == 6
    assert hooks.index("test_begin") > hooks.index("train_batch_end")


def test_user_npz_trains_and_a_missing_file_fails_with_one_line(tmp_path):
    pytest.importorskip("torch")
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
    with pytest.raises(UsageError) as bad:
        run_scenario(spec, framework="torch", quick=True, overrides=[f"data={tmp_path / 'nope.npz'}"],
                     out_dir=tmp_path / "bad")
    assert "no such file" in str(bad.value) and "\n" not in str(bad.value)


def test_every_training_run_leaves_curves_and_tensorboard_scalars(tmp_path):
    pytest.importorskip("torch")
    result = run_scenario(registry.get("supervised/rnn"), framework="torch", quick=True,
                          overrides=["epochs=1"], out_dir=tmp_path / "rnn")
    pngs = sorted(p.name for p in (tmp_path / "rnn").glob("*.png"))
    assert result.status == "ok" and pngs == ["gru.png", "lstm.png", "rnn.png"]
    assert list((tmp_path / "rnn" / "tensorboard").iterdir())


# --- supervised/transfer: the pieces of the fair comparison ---------------------------------------

def test_transfer_target_is_digits_5_to_9_relabelled_and_few_shots_draw_each_class_once():
    from dllab.supervised.transfer_common import few_shots, source_and_target

    source, target = source_and_target(0)
    assert set(source.train.labels) == set(target.test.labels) == set(range(5))
    assert len(source.train) + len(target.train) == 1167  # every training image, in exactly one task
    samples = few_shots(target.train, 3, np.random.default_rng(1))
    assert np.bincount(samples.labels).tolist() == [3] * 5
    assert len({image.tobytes() for image in samples.images}) == 15  # without replacement
    with pytest.raises(ValueError, match="shots"):
        few_shots(target.train, 0, np.random.default_rng(1))


def test_transfer_learning_rate_is_chosen_on_validation_and_test_only_reports(tmp_path):
    """A fake trainer whose validation prefers 0.1 and whose test would prefer 0.2: the protocol
    must report the 0.1 runs, and the advantages must be per draw against scratch."""
    from dllab.supervised.transfer_common import ARMS, compare, source_and_target

    _, target = source_and_target(0)
    scores = {0.1: (0.9, 0.5), 0.2: (0.4, 0.8)}  # learning rate -> (validation, test)

    def train_arms(samples, learning_rate, init_seed):
        validation, test = scores[learning_rate]
        return {arm: (validation, test - 0.1 * (arm == "frozen")) for arm in ARMS}

    def features(images):
        return {"conv": images.reshape(len(images), -1), "features": images.reshape(len(images), -1)[:, :8]}

    spec = registry.get("supervised/transfer")
    ctx = RunContext(spec=spec, seed=0, framework="torch", device="cpu", profile="quick", out_dir=tmp_path,
                     threads=1, params={}, show_progress=False)
    metrics = compare(ctx, target, train_arms, features, shots=[1, 2], learning_rates=[0.2, 0.1], draws=2)
    ctx.close()
    assert metrics["scratch_learning_rate_2shot"] == 0.1 and metrics["scratch_accuracy_2shot"] == 0.5
    assert metrics["frozen_advantage_max"] == pytest.approx(-0.1) and metrics["warm_start_advantage_mean"] == 0
    assert (tmp_path / "accuracy_vs_shots.png").is_file()


def test_keras_reset_optimizer_trains_exactly_like_a_fresh_compile():
    """transfer_keras reuses one compiled model per arm: after resetting the weights and Adam's
    variables it must train exactly as a newly compiled model does."""
    pytest.importorskip("keras")
    import keras

    from dllab.data.digits import Split
    from dllab.supervised.cnn_keras import build_cnn, compile_classifier
    from dllab.supervised.transfer_keras import train_steps

    rng = np.random.default_rng(0)
    first, second = (Split(rng.random((10, 8, 8), dtype=np.float32), np.arange(10) % 5) for _ in range(2))
    keras.utils.set_random_seed(0)
    start = build_cnn(classes=5).get_weights()
    reused = compile_classifier(build_cnn(classes=5), 1e-3)
    train_steps(reused, first, 5, 0.05)  # moves the weights and Adam's moments
    reused.set_weights(start)
    train_steps(reused, second, 5, 0.01)
    fresh = compile_classifier(build_cnn(classes=5), 1e-3)
    fresh.set_weights(start)
    train_steps(fresh, second, 5, 0.01)
    for a, b in zip(reused.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
