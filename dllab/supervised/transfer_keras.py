"""Transfer learning (questions 26, 35) in Keras 3: pretrain on digits 0-4, reuse for 5-9.

1. Pretrain the CNN of `cnn_keras` on the digits 0-4 and save it as a `.keras` file.
2. For each draw of a few labelled images per class of 5-9: load the file, cut the base at the
   "features" layer, set `base.trainable = False`, add a new 5-way head and train only the head;
   train the same CNN from scratch on the very same images for the same number of steps.
3. Compare test accuracy on all test images of 5-9 (see `transfer_torch` for what it shows).

`keras.applications` models are built offline with `weights=None` (random weights, no download;
`weights="imagenet"` would fetch a file on first use) and one is frozen and run as a base.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from dllab.data.digits import load_digits
from dllab.supervised.cnn_keras import build_cnn, compile_classifier
from dllab.supervised.common import report_history
from dllab.supervised.keras_training import accuracy, fit, max_difference, weights
from dllab.supervised.transfer_torch import few_shots, split_classes, summarize


def keras_cache_files() -> set[str]:
    """Files in Keras's download cache (`$KERAS_HOME/models`, default ~/.keras/models)."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return {str(p) for p in home.rglob("*")} if home.is_dir() else set()


def applications_offline(images: np.ndarray) -> dict[str, float]:
    """Build MobileNetV2 with weights=None, freeze it as a base and run it
    on digits upscaled to 32x32 RGB; nothing may land in Keras's download cache."""
    before = keras_cache_files()
    mobilenet = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    mobilenet.trainable = False
    rgb = np.repeat(np.kron(images[:8], np.ones((4, 4), np.float32))[..., None], 3, axis=-1)
    features = keras.ops.convert_to_numpy(mobilenet(rgb, training=False))
    return {
        "applications_mobilenet_parameters": mobilenet.count_params(),
        "applications_frozen_trainable_weights": len(mobilenet.trainable_weights),
        "applications_feature_size": features.shape[1],
        "applications_features_finite": float(np.all(np.isfinite(features))),
        "applications_downloads": len(keras_cache_files() - before),
    }


def transfer_model(path: Path, classes: int) -> tuple[keras.Model, keras.Model]:
    """The saved CNN cut at "features", frozen, with a new head: (model, base)."""
    loaded = keras.models.load_model(path, safe_mode=True)
    base = keras.Model(loaded.inputs, loaded.get_layer("features").output, name="base")
    base.trainable = False
    model = keras.Sequential([base, keras.layers.Dense(classes, name="new_head")], name="transfer")
    return model, base


def train_few(model: keras.Model, samples, steps: int, learning_rate: float) -> keras.Model:
    """Full-batch Adam on the few samples for `steps` steps (only trainable weights move): one
    epoch over the samples repeated `steps` times, in batches of exactly the samples."""
    compile_classifier(model, learning_rate)
    images, labels = np.tile(samples.images[..., None], (steps, 1, 1, 1)), np.tile(samples.labels, steps)
    model.fit(images, labels, batch_size=len(samples), epochs=1, shuffle=False, verbose=0)
    return model


def run(ctx, *, pretrain_epochs: int, batch_size: int, learning_rate: float, shots: int, finetune_steps: int,
        finetune_learning_rate: float, seeds: int) -> dict[str, float]:
    digits = load_digits(ctx.seed)
    source = type(digits)(*(split_classes(s, range(0, 5)) for s in (digits.train, digits.validation, digits.test)))
    target_train, target_test = split_classes(digits.train, range(5, 10)), split_classes(digits.test, range(5, 10))

    pretrained = compile_classifier(build_cnn(classes=5), learning_rate)
    history = fit(ctx, pretrained, source.train.images[..., None], source.train.labels,
                  (source.validation.images[..., None], source.validation.labels),
                  epochs=pretrain_epochs, batch_size=batch_size, name="pretrain")
    report_history(ctx, history, "pretrain", f"Keras ({keras.backend.backend()}) CNN pretrained on digits 0-4")
    path = ctx.artifact("pretrained_0-4.keras")
    pretrained.save(path)
    metrics = {"pretrain_test_accuracy": accuracy(pretrained, source.test.images[..., None], source.test.labels)}

    for draw in range(seeds):
        samples = few_shots(target_train, shots, ctx.rng(100 + draw))
        keras.utils.set_random_seed(ctx.seed * 1000 + draw)
        transfer, base = transfer_model(path, 5)
        base_before = weights(base)
        train_few(transfer, samples, finetune_steps, finetune_learning_rate)
        keras.utils.set_random_seed(ctx.seed * 1000 + draw)
        scratch = train_few(build_cnn(classes=5), samples, finetune_steps, finetune_learning_rate)
        metrics[f"transfer_accuracy_{draw}"] = accuracy(transfer, target_test.images[..., None], target_test.labels)
        metrics[f"scratch_accuracy_{draw}"] = accuracy(scratch, target_test.images[..., None], target_test.labels)
        metrics[f"frozen_base_change_{draw}"] = max_difference(base_before, weights(base))
        ctx.log_scalar("charts/transfer_accuracy", metrics[f"transfer_accuracy_{draw}"], draw)
        ctx.log_scalar("charts/scratch_accuracy", metrics[f"scratch_accuracy_{draw}"], draw)
    trainable = sum(int(np.prod(w.shape)) for w in transfer.trainable_weights)
    metrics = summarize(metrics, seeds, trainable)
    metrics.update(applications_offline(digits.test.images))
    return metrics
