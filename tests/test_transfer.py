"""supervised/transfer: the self-supervised pieces and the freezing mechanics, piece by piece."""

from __future__ import annotations

import numpy as np
import pytest

from dllab.supervised.selfsup_common import (
    bootstrap_interval,
    contrastive_batches,
    distort,
    nt_xent_reference,
    unlabeled_pool,
)


def test_distortion_without_any_change_is_the_identity_and_is_seeded():
    images = np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)
    same = distort(images, np.random.default_rng(1), elastic=0.0, rotate=0.0, scale=0.0, shift=0.0)
    np.testing.assert_allclose(same, images, atol=1e-6)
    first, second = (distort(images, np.random.default_rng(2), elastic=1.0) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - images).max() > 0.05


def test_contrastive_batches_pair_two_views_of_the_same_images():
    pool = np.random.default_rng(0).random((20, 8, 8), dtype=np.float32)
    batches = contrastive_batches(
        pool, np.random.default_rng(0), epochs=2, batch_size=8, elastic=0.0
    )
    assert batches.shape == (4, 16, 8, 8)  # 20 // 8 = 2 full batches per epoch, the rest dropped
    with pytest.raises(ValueError, match="exceeds the pool"):
        contrastive_batches(pool, np.random.default_rng(0), epochs=1, batch_size=21, elastic=0.0)


def test_shuffled_pixels_keep_each_image_values_but_not_their_places():
    images = np.random.default_rng(0).random((4, 8, 8), dtype=np.float32)
    shuffled = unlabeled_pool(images, True, np.random.default_rng(1))
    for before, after in zip(images, shuffled):
        np.testing.assert_array_equal(np.sort(before.ravel()), np.sort(after.ravel()))
    assert not np.array_equal(images, shuffled)
    assert unlabeled_pool(images, False, np.random.default_rng(1)) is images


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [0.1, 0.3, 0.2, 0.5, 0.0]
    low, high = bootstrap_interval(values, np.random.default_rng(3))
    assert (low, high) == bootstrap_interval(values, np.random.default_rng(3))
    assert low < np.mean(values) < high and 0.0 <= low and high <= 0.5
    assert bootstrap_interval([0.2] * 5, np.random.default_rng(0)) == pytest.approx((0.2, 0.2))


def test_nt_xent_of_torch_and_keras_match_the_numpy_reference():
    projections = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    expected = nt_xent_reference(projections.astype(np.float64), 0.5)
    torch = pytest.importorskip("torch")
    from dllab.supervised.selfsup_torch import nt_xent

    assert float(nt_xent(torch.from_numpy(projections), 0.5)) == pytest.approx(expected, rel=1e-5)
    pytest.importorskip("keras")
    from keras import ops

    from dllab.supervised.selfsup_keras import nt_xent as keras_nt_xent

    per_row = ops.convert_to_numpy(keras_nt_xent(8, 0.5)(None, ops.convert_to_tensor(projections)))
    assert float(np.mean(per_row)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("fault", ["none", "base_not_frozen", "stale_optimizer"])
def test_torch_freezing_not_the_optimizer_keeps_the_base_still(tmp_path, fault):
    """Adam is given every parameter: requires_grad_(False) alone must keep the base bit-identical
    while the head moves, and the head must be the one trained on precomputed features (the
    frozen arms' shortcut); forgetting it moves the base, a stale optimizer leaves the head
    still."""
    torch = pytest.importorskip("torch")
    from dllab.data.digits import load_digits
    from dllab.supervised.cnn_torch import CNN
    from dllab.supervised.transfer_common import few_shots
    from dllab.supervised.transfer_torch import Arms

    torch.manual_seed(0)
    path = tmp_path / "base.pt"
    torch.save(CNN(classes=10).state_dict(), path)
    digits = load_digits(0)
    arms = Arms(path, digits, 4, 10, arms=("frozen",), fault=fault, measure=True)
    arms(few_shots(digits.train, 1, np.random.default_rng(0)), 0.01, 0)
    measured = arms.mechanics
    head_parameters = 128 * 10 + 10
    if fault == "none":
        assert measured["max_frozen_base_change"] == 0 and measured["frozen_head_change"] > 0
        assert measured["feature_head_difference"] == 0
        assert (
            measured["frozen_trainable_parameters"]
            == measured["optimizer_held_parameters"]
            == head_parameters
        )
    elif fault == "base_not_frozen":
        assert measured["max_frozen_base_change"] > 0 and measured["feature_head_difference"] > 0
        assert measured["optimizer_held_parameters"] > head_parameters
    else:
        assert measured["frozen_head_change"] == 0 and measured["optimizer_held_parameters"] == 0


def test_torch_batchnorm_statistics_move_unless_in_eval_mode():
    pytest.importorskip("torch")
    from dllab.data.digits import load_digits
    from dllab.supervised.transfer_torch import batchnorm_statistics

    train = load_digits(0).train
    changes = batchnorm_statistics(train.images[:64], train.labels[:64], "none")
    assert changes["bn_stats_change_inference_mode"] == 0
    assert (
        changes["bn_stats_change_training_mode"] > 0
        and changes["bn_stats_change_requires_grad_false"] > 0
    )


@pytest.mark.parametrize("fault", ["none", "base_not_frozen", "whole_model_frozen"])
def test_keras_trainable_false_keeps_the_base_still_and_matches_the_features_head(tmp_path, fault):
    """trainable = False on the base alone keeps it bit-identical while the head moves and the
    optimizer holds only the head (on either backend); the head trained inside the frozen model
    equals the one trained on precomputed features; forgetting it or freezing everything shows."""
    keras = pytest.importorskip("keras")
    from dllab.data.digits import load_digits
    from dllab.supervised.cnn_keras import build_cnn
    from dllab.supervised.transfer_common import few_shots
    from dllab.supervised.transfer_keras import Arms

    keras.utils.set_random_seed(0)
    path = tmp_path / "base.keras"
    build_cnn(classes=10).save(path)
    digits = load_digits(0)
    arms = Arms(path, digits, 4, 10, arms=("frozen",), fault=fault, measure=True)
    arms(few_shots(digits.train, 1, np.random.default_rng(0)), 0.01, 0)
    measured = arms.mechanics
    head_parameters = 128 * 10 + 10
    if fault == "none":
        assert measured["max_frozen_base_change"] == 0 and measured["frozen_head_change"] > 0
        assert measured["feature_head_difference"] == 0
        assert measured["frozen_trainable_parameters"] == head_parameters
        assert measured["optimizer_held_parameters"] == head_parameters
    elif fault == "base_not_frozen":
        assert measured["max_frozen_base_change"] > 0 and measured["feature_head_difference"] > 0
    else:
        assert measured["frozen_head_change"] == 0 and measured["optimizer_held_parameters"] == 0
