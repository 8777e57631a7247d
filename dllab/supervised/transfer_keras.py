"""Transfer learning (questions 26, 35) in Keras 3: pretrain on digits 0-4, reuse for 5-9.

1. Pretrain the CNN of `cnn_keras` on the digits 0-4 and save it as a `.keras` file.
2. Load the file, cut the base at the "features" layer and set `base.trainable = False`. For a few
   labelled images per class of 5-9 (1, 2, 5, 10 by default; several draws) train four arms on the
   very same images with the same optimizer and steps (see `transfer_common`): `scratch` (fresh
   weights), `frozen` (the frozen base and a new head), `fine_tuned` (the head first, then the
   whole network at a tenth of the learning rate, as in keras-io's transfer-learning guide) and
   `warm_start` (every layer trains from the pretrained weights).
3. Report test accuracy on 5-9 against shots for each arm, its advantage over `scratch` per draw,
   and linear probes on pixels and on the frozen features (the same figures as `transfer_torch`).

Two compiled models (the frozen base with its head, the whole CNN) serve every arm, reset between
trainings (weights and Adam's variables), so that Keras traces each training step once, not once
per training.
`keras.applications` models are built offline with `weights=None` (random weights, no download;
`weights="imagenet"` would fetch a file on first use) and one is frozen and run as a base.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from dllab.data.digits import Split
from dllab.supervised.cnn_keras import build_cnn, compile_classifier
from dllab.supervised.common import report_history
from dllab.supervised.keras_training import accuracy, fit, max_difference, weights
from dllab.supervised.transfer_common import TARGET, check_protocol, compare, source_and_target


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


def reset_optimizer(model: keras.Model, learning_rate: float) -> None:
    """Adam as if new (zero step count and moments) with the given learning rate."""
    for variable in model.optimizer.variables:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    model.optimizer.learning_rate = learning_rate


def train_steps(model: keras.Model, samples: Split, steps: int, learning_rate: float) -> None:
    """Full-batch Adam on the few samples for `steps` steps (only trainable weights move): one
    epoch over the samples repeated `steps` times, in batches of exactly the samples."""
    reset_optimizer(model, learning_rate)
    images, labels = np.tile(samples.images[..., None], (steps, 1, 1, 1)), np.tile(samples.labels, steps)
    model.fit(images, labels, batch_size=len(samples), epochs=1, shuffle=False, verbose=0)


class Arms:
    """Trains the four arms on one set of few samples; checks that the frozen base never moves."""

    def __init__(self, path: Path, target, steps: int):
        loaded = keras.models.load_model(path, safe_mode=True)
        self.pretrained_base = weights(loaded)[:-2]  # everything but the 0-4 head
        self.base = keras.Model(loaded.inputs[0], loaded.get_layer("features").output, name="base")
        self.base.trainable = False
        self.frozen = compile_classifier(keras.Sequential([self.base, keras.layers.Dense(len(TARGET), name="new_head")],
                                                          name="transfer"), 1e-3)
        self.full = compile_classifier(build_cnn(classes=len(TARGET)), 1e-3)  # all weights train
        self.images = np.concatenate([target.validation.images, target.test.images])[..., None]
        self.labels, self.validation_size = np.concatenate([target.validation.labels, target.test.labels]), len(target.validation)
        self.steps, self.max_frozen_base_change = steps, 0.0
        self.trainable_parameters = sum(int(np.prod(w.shape)) for w in self.frozen.trainable_weights)

    def accuracies(self, model: keras.Model) -> tuple[float, float]:
        logits = keras.ops.convert_to_numpy(model(self.images, training=False))  # one call: no predict loop
        correct = logits.argmax(axis=1) == self.labels
        return float(correct[:self.validation_size].mean()), float(correct[self.validation_size:].mean())

    def __call__(self, samples: Split, learning_rate: float, init_seed: int) -> dict[str, tuple[float, float]]:
        keras.utils.set_random_seed(init_seed)
        fresh = weights(build_cnn(classes=len(TARGET)))  # a new random initialisation
        transferred = self.pretrained_base + fresh[-2:]  # the saved base under a new random head
        results = {}
        self.full.set_weights(fresh)
        train_steps(self.full, samples, self.steps, learning_rate)
        results["scratch"] = self.accuracies(self.full)

        self.frozen.set_weights(transferred)
        train_steps(self.frozen, samples, self.steps, learning_rate)
        results["frozen"] = self.accuracies(self.frozen)
        change = max_difference(self.pretrained_base, weights(self.base))
        self.max_frozen_base_change = max(self.max_frozen_base_change, change)

        self.frozen.set_weights(transferred)  # stage 1: the head on the frozen base
        train_steps(self.frozen, samples, self.steps // 2, learning_rate)
        self.full.set_weights(weights(self.frozen))  # stage 2: everything, with a small learning rate
        train_steps(self.full, samples, self.steps - self.steps // 2, learning_rate / 10)
        results["fine_tuned"] = self.accuracies(self.full)

        self.full.set_weights(transferred)  # nothing frozen: pretrained initialisation
        train_steps(self.full, samples, self.steps, learning_rate)
        results["warm_start"] = self.accuracies(self.full)
        return results


def run(ctx, *, pretrain_epochs: int, batch_size: int, learning_rate: float, shots: list[int],
        learning_rates: list[float], steps: int, draws: int) -> dict[str, float]:
    check_protocol(shots, learning_rates, steps, draws)
    source, target = source_and_target(ctx.seed)
    pretrained = compile_classifier(build_cnn(classes=5), learning_rate)
    history = fit(ctx, pretrained, source.train.images[..., None], source.train.labels,
                  (source.validation.images[..., None], source.validation.labels),
                  epochs=pretrain_epochs, batch_size=batch_size, name="pretrain")
    report_history(ctx, history, "pretrain", f"Keras ({keras.backend.backend()}) CNN pretrained on digits 0-4")
    path = ctx.artifact("pretrained_0-4.keras")
    pretrained.save(path)
    metrics = {"pretrain_test_accuracy": accuracy(pretrained, source.test.images[..., None], source.test.labels)}

    reloaded = keras.models.load_model(path, safe_mode=True)
    extractor = keras.Model(reloaded.inputs[0], [reloaded.get_layer(name).output for name in ("flatten", "features")])

    def features(images: np.ndarray) -> dict[str, np.ndarray]:
        conv, dense = extractor(images[..., None], training=False)
        return {"conv": keras.ops.convert_to_numpy(conv), "features": keras.ops.convert_to_numpy(dense)}

    arms = Arms(path, target, steps)
    metrics.update(compare(ctx, target, arms, features, shots=shots, learning_rates=learning_rates, draws=draws))
    metrics.update(max_frozen_base_change=arms.max_frozen_base_change,
                   frozen_trainable_parameters=arms.trainable_parameters)
    metrics.update(applications_offline(target.test.images))
    return metrics
