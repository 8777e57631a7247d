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

Two compiled models (a head on the frozen base's precomputed features, the whole CNN) serve
every arm, reset between trainings (weights and Adam's variables), so that Keras traces each
training step once, not once per training; the whole frozen model is trained once, to measure
freezing and to check the precomputed-features shortcut against it.
`keras.applications` models are built offline with `weights=None` (random weights, no download;
`weights="imagenet"` would fetch a file on first use) and one is frozen and run as a base.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from dllab.data.digits import Split, load_digits
from dllab.supervised.cnn_keras import build_cnn, compile_classifier
from dllab.supervised.common import DENSE_UNITS, log_history
from dllab.supervised.keras_training import accuracy, backend, fit, max_difference, weights
from dllab.supervised.selfsup_common import (
    CLASSES,
    OBJECTIVES,
    choose_objective,
    compare_selfsup,
    plot_labels,
    selfsup_arms,
    selfsup_settings,
    unlabeled_pool,
)
from dllab.supervised.selfsup_keras import pretrain_encoder
from dllab.supervised.transfer_common import (
    ARMS,
    TARGET,
    check_protocol,
    compare,
    labels_off_by_one,
    pretraining_source,
    source_and_target,
    supervised_arms,
)


def keras_cache_files() -> set[str]:
    """Files in Keras's download cache (`$KERAS_HOME/models`, default ~/.keras/models)."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return {str(p) for p in home.rglob("*")} if home.is_dir() else set()


def applications_offline(images: np.ndarray, fault: str) -> dict[str, float]:
    """Build MobileNetV2 with weights=None, freeze it as a base and run it
    on digits upscaled to 32x32 RGB; nothing may land in Keras's download cache."""
    before = keras_cache_files()
    mobilenet = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg"
    )
    mobilenet.trainable = fault == "base_not_frozen"
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


def train_on(
    model: keras.Model, inputs: np.ndarray, labels: np.ndarray, steps: int, learning_rate: float
) -> None:
    """Full-batch Adam on (inputs, labels) for `steps` steps (only trainable weights move): one
    epoch over the inputs repeated `steps` times, in batches of exactly the inputs."""
    reset_optimizer(model, learning_rate)
    tiled = np.tile(inputs, (steps,) + (1,) * (inputs.ndim - 1))
    model.fit(
        tiled, np.tile(labels, steps), batch_size=len(labels), epochs=1, shuffle=False, verbose=0
    )


def train_steps(model: keras.Model, samples: Split, steps: int, learning_rate: float) -> None:
    """`train_on` the few samples' images."""
    train_on(model, samples.images[..., None], samples.labels, steps, learning_rate)


def compile_few_shot(model: keras.Model, steps: int) -> keras.Model:
    """Adam on the cross-entropy of the logits; on TensorFlow `steps // 2` steps run per call of
    the compiled step function (a training is then one or two calls; torch allows only 1)."""
    per_call = 1 if backend() == "torch" else max(1, steps // 2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        steps_per_execution=per_call,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def held_parameters(model: keras.Model) -> int:
    """How many weights the optimizer holds state for (the sizes of Adam's momentum slots)."""
    return sum(
        int(np.prod(v.shape)) for v in model.optimizer.variables if v.path.endswith("_momentum")
    )


class Arms:
    """Trains the arms on one set of few samples, from the base saved at `path`. A frozen base
    computes the same features at every step, so the frozen arms train a head model on
    features computed once; `measure_freezing` checks that shortcut against the whole frozen
    model (base bit-identical, head moving, `trainable = False` all that keeps it still) on the
    first call. Two compiled models serve every training (reset between trainings)."""

    def __init__(
        self,
        path: Path,
        task,
        steps: int,
        classes: int,
        arms=ARMS,
        fault: str = "none",
        measure: bool = False,
    ):
        loaded = keras.models.load_model(path, safe_mode=True)
        self.pretrained_base = weights(loaded)[:-2]  # everything but the head
        self.base = keras.Model(loaded.inputs[0], loaded.get_layer("features").output, name="base")
        self.full = compile_few_shot(build_cnn(classes=classes), steps)  # all weights train
        self.head = compile_few_shot(
            keras.Sequential(
                [keras.Input((DENSE_UNITS,)), keras.layers.Dense(classes, name="new_head")]
            ),
            steps,
        )
        self.images = np.concatenate([task.validation.images, task.test.images])[..., None]
        self.labels = np.concatenate([task.validation.labels, task.test.labels])
        self.validation_size = len(task.validation)
        self.steps, self.classes, self.arms, self.fault = steps, classes, arms, fault
        self.features = self.encode(self.pretrained_base, self.images)
        self.measure, self.mechanics = measure, {}

    def encode(self, base_weights: list, images: np.ndarray) -> np.ndarray:
        """The features of `images` (N, 8, 8, 1) under the given base weights."""
        self.base.set_weights(base_weights)
        return keras.ops.convert_to_numpy(self.base(images, training=False))

    def accuracies(
        self, model: keras.Model, inputs: np.ndarray | None = None
    ) -> tuple[float, float]:
        logits = keras.ops.convert_to_numpy(
            model(self.images if inputs is None else inputs, training=False)
        )  # one call: no predict loop
        correct = logits.argmax(axis=1) == self.labels
        return float(correct[: self.validation_size].mean()), float(
            correct[self.validation_size :].mean()
        )

    def frozen_head(self, start: list, samples: Split, learning_rate: float, steps: int):
        """The head model, from the weights `start` (base + head), trained on the frozen base's
        features of the samples; its (validation, test) accuracies."""
        features = self.encode(start[:-2], samples.images[..., None])
        self.head.set_weights(start[-2:])
        train_on(self.head, features, samples.labels, steps, learning_rate)
        loaded = self.fault != "encoder_not_loaded"
        return self.accuracies(
            self.head, self.features if loaded else self.encode(start[:-2], self.images)
        )

    def measure_freezing(self, start: list, samples: Split, learning_rate: float) -> None:
        """The whole model (frozen base, new head) trained by `fit`: what moved, what Adam holds,
        and how far its head is from the head trained on precomputed features."""
        self.base.trainable = self.fault == "base_not_frozen"
        transfer = keras.Sequential([self.base, keras.layers.Dense(self.classes)], name="transfer")
        if self.fault == "whole_model_frozen":  # a control's mistake (setting True would unfreeze)
            transfer.trainable = False
        compile_few_shot(transfer, self.steps).set_weights(start)
        train_steps(transfer, samples, self.steps, learning_rate)
        trained = weights(transfer)
        self.frozen_head(start, samples, learning_rate, self.steps)
        self.mechanics = {
            "max_frozen_base_change": max_difference(start[:-2], trained[:-2]),
            "frozen_head_change": max_difference(start[-2:], trained[-2:]),
            "frozen_trainable_parameters": sum(
                int(np.prod(w.shape)) for w in transfer.trainable_weights
            ),
            "optimizer_held_parameters": held_parameters(transfer),
            "feature_head_difference": max_difference(trained[-2:], weights(self.head)),
        }

    def __call__(
        self, samples: Split, learning_rate: float, init_seed: int
    ) -> dict[str, tuple[float, float]]:
        keras.utils.set_random_seed(init_seed)
        fresh = weights(build_cnn(classes=self.classes))  # a new random initialisation
        base = fresh[:-2] if self.fault == "encoder_not_loaded" else self.pretrained_base
        transferred = base + fresh[-2:]  # the saved base under a new random head
        if self.measure and not self.mechanics:
            self.measure_freezing(transferred, samples, learning_rate)
        results = {}
        if "scratch" in self.arms:
            self.full.set_weights(fresh)
            train_steps(self.full, samples, self.steps, learning_rate)
            results["scratch"] = self.accuracies(self.full)
        if "frozen" in self.arms:
            results["frozen"] = self.frozen_head(transferred, samples, learning_rate, self.steps)
        if "fine_tuned" in self.arms:  # stage 1: the head on the frozen base; 2: all, lr / 10
            self.frozen_head(transferred, samples, learning_rate, self.steps // 2)
            self.full.set_weights(base + weights(self.head))
            train_steps(self.full, samples, self.steps - self.steps // 2, learning_rate / 10)
            results["fine_tuned"] = self.accuracies(self.full)
        if "warm_start" in self.arms:  # nothing frozen: the pretrained initialisation
            self.full.set_weights(transferred)
            train_steps(self.full, samples, self.steps, learning_rate)
            results["warm_start"] = self.accuracies(self.full)
        return results


def batchnorm_statistics(images: np.ndarray, labels: np.ndarray, fault: str) -> dict[str, float]:
    """How far BatchNorm's moving mean moves in 3 calls on a batch of digits: called with
    `training=True` (training mode), with `training=False` (inference mode), and with
    `training=True` but `trainable = False`, which in Keras also switches BatchNorm to inference
    mode (unlike other layers, and unlike torch's `requires_grad_(False)`). Last, in 3 steps of
    `fit` of a model built as `norm(inputs, training=False)`: `fit`'s training=True is passed
    down to the layer instead (Keras 3's functional models), so only `trainable = False` holds."""
    x = images.reshape(len(images), -1)
    swapped = fault == "bn_modes_swapped"
    changes = {}
    for name, training, frozen in (
        ("training_mode", not swapped, False),
        ("inference_mode", swapped, False),
        ("trainable_false", True, fault != "base_not_frozen"),
    ):
        norm = keras.layers.BatchNormalization()
        norm.build(x.shape)
        norm.trainable = not frozen
        for _ in range(3):
            norm(x, training=training)
        changes[f"bn_stats_change_{name}"] = float(
            np.abs(keras.ops.convert_to_numpy(norm.moving_mean)).max()
        )
    keras.utils.set_random_seed(0)
    inputs, norm = keras.Input((x.shape[1],)), keras.layers.BatchNormalization()
    model = keras.Model(
        inputs, keras.layers.Dense(int(labels.max()) + 1)(norm(inputs, training=False))
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        np.tile(x, (3, 1)),
        np.tile(labels, 3),
        batch_size=len(x),
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    changes["bn_stats_change_fit_over_training_false"] = float(
        np.abs(keras.ops.convert_to_numpy(norm.moving_mean)).max()
    )
    return changes


def pretrain_supervised(
    ctx, source, *, pretrain_epochs: int, batch_size: int, learning_rate: float, classes: int
) -> tuple[Path, float]:
    """The CNN trained on the source digits and saved as a `.keras` file; its source test
    accuracy."""
    pretrained = compile_classifier(build_cnn(classes=classes), learning_rate)
    history = fit(
        ctx,
        pretrained,
        source.train.images[..., None],
        source.train.labels,
        (source.validation.images[..., None], source.validation.labels),
        epochs=pretrain_epochs,
        batch_size=batch_size,
        name="pretrain",
    )
    log_history(ctx, history, "pretrain")
    path = ctx.artifact("pretrained_0-4.keras")
    pretrained.save(path)
    return path, accuracy(pretrained, source.test.images[..., None], source.test.labels)


def supervised_arm(
    ctx, *, fault: str, shots, learning_rates, steps, draws, fine_tuning: bool, **pretraining
) -> dict[str, float]:
    """Pretrain on 0-4, then the arms on a few 5-9s, the probes of the features, and the
    freezing mechanics measured on the first few-shot training."""
    source, target = source_and_target(ctx.seed)
    source = pretraining_source(ctx.seed, source, fault, ctx.rng(31))
    path, source_accuracy = pretrain_supervised(
        ctx, source, classes=int(source.train.labels.max()) + 1, **pretraining
    )
    reloaded = keras.models.load_model(path, safe_mode=True)
    extractor = keras.Model(
        reloaded.inputs[0], [reloaded.get_layer(name).output for name in ("flatten", "features")]
    )

    def features(images: np.ndarray) -> dict[str, np.ndarray]:
        conv, dense = extractor(images[..., None], training=False)
        return {
            "conv": keras.ops.convert_to_numpy(conv),
            "features": keras.ops.convert_to_numpy(dense),
        }

    arms = Arms(
        path,
        target,
        steps,
        len(TARGET),
        arms=supervised_arms(fine_tuning),
        fault=fault,
        measure=True,
    )
    trainer = labels_off_by_one(arms, len(TARGET)) if fault == "labels_off_by_one" else arms
    metrics = {"pretrain_test_accuracy": source_accuracy}
    metrics.update(
        compare(
            ctx,
            target,
            trainer,
            features,
            shots=shots,
            learning_rates=learning_rates,
            draws=draws,
            arms=arms.arms,
        )
    )
    return {**metrics, **arms.mechanics}


def selfsup_arm(
    ctx,
    *,
    fault: str,
    objectives: str,
    shots,
    learning_rates,
    steps,
    draws,
    fine_tuning: bool,
    selfsup_settings: dict,
) -> dict[str, float]:
    """Pretrain an encoder per objective on the unlabeled pool, choose one on validation, then
    scratch / frozen (/ fine-tuned) on a few labelled images of all ten digits."""
    digits = load_digits(ctx.seed)
    pool = unlabeled_pool(digits.train.images, fault == "shuffled_pixels", ctx.rng(41))
    metrics, paths = {}, {}
    for index, objective in enumerate(objectives.split("+")):
        paths[objective] = ctx.artifact(f"selfsup_{objective}.keras")
        losses = pretrain_encoder(
            objective,
            pool,
            paths[objective],
            ctx.rng(42 + index),
            init_seed=ctx.seed,
            **selfsup_settings[objective],
        )
        metrics[f"selfsup_{objective}_final_loss"] = float(np.mean(losses[-5:]))
    chosen = next(iter(paths))
    if len(paths) > 1:
        candidates = {
            o: Arms(p, digits, steps, CLASSES, arms=("frozen",), fault=fault)
            for o, p in paths.items()
        }
        chosen, scores = choose_objective(
            ctx, digits, candidates, learning_rates=learning_rates, draws=draws
        )
        metrics.update(scores)
    metrics["selfsup_objective_index"] = OBJECTIVES.index(chosen)
    arms = Arms(paths[chosen], digits, steps, CLASSES, arms=selfsup_arms(fine_tuning), fault=fault)
    metrics.update(
        compare_selfsup(ctx, digits, arms, shots=shots, learning_rates=learning_rates, draws=draws)
    )
    return metrics


def run(ctx, *, pretrain_epochs: int, batch_size: int, learning_rate: float, shots: list[int],
        learning_rates: list[float], steps: int, draws: int, supervised_draws: int,
        fine_tuning: bool, objectives: str, selfsup_epochs: int, selfsup_batch_size: int,
        selfsup_learning_rate: float, temperature: float, elastic: float, mask: float,
        applications: bool, fault: str) -> dict[str, float]:
    check_protocol(shots, learning_rates, steps, min(draws, supervised_draws))
    if fault == "stale_optimizer":
        raise ValueError("fault 'stale_optimizer' is torch's; Keras's is 'whole_model_frozen'")
    protocol = dict(fault=fault, shots=shots, learning_rates=learning_rates, steps=steps,
                    fine_tuning=fine_tuning)
    metrics = supervised_arm(ctx, pretrain_epochs=pretrain_epochs, batch_size=batch_size,
                             learning_rate=learning_rate, draws=supervised_draws, **protocol)
    settings = selfsup_settings(selfsup_epochs, selfsup_batch_size, selfsup_learning_rate,
                                temperature=temperature, elastic=elastic, mask=mask)
    metrics.update(selfsup_arm(ctx, objectives=objectives, selfsup_settings=settings, draws=draws,
                               **protocol))
    plot_labels(ctx, metrics, shots)
    digits = load_digits(ctx.seed)
    metrics.update(batchnorm_statistics(digits.train.images, digits.train.labels, fault))
    if applications:
        metrics.update(applications_offline(digits.test.images, fault))
    else:
        for name in ("applications_downloads", "applications_frozen_trainable_weights"):
            ctx.skip_metric(
                name, "keras.applications not built in this profile (applications = false)"
            )
    ctx.skip_metric(
        "bn_stats_change_requires_grad_false", "a torch measurement (requires_grad_ on BatchNorm)"
    )
    return metrics
