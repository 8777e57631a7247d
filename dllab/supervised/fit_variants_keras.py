"""One model, five ways to feed Keras 3's `fit` (questions 23, 36, 44), on the bundled digits.

The same MLP (64 pixels -> Dense 64 relu -> Dense 10), from the same initial weights, trained by:

1. `fit` on numpy arrays (Keras shuffles them);
2. `fit` on a Python generator (Keras 3 has no `fit_generator`: `fit` takes generators);
3. `fit` on a `keras.utils.PyDataset` (the successor of `keras.utils.Sequence`);
4. `fit` on a `tf.data.Dataset` (TensorFlow backend; skipped on torch);
5. `fit` with an overridden `train_step` (the "custom loop inside fit" of keras-io), on the generator.

Measured: each variant's test accuracy and their spread (they must land in the same band), and
that the overridden `train_step`, fed the same batches in the same order as the built-in one,
ends with the same weights (the hand-written step does the built-in step's arithmetic).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from dllab.supervised.common import class_sorted_orders, epoch_orders, fed_digits, load_images, report_history
from dllab.supervised.keras_training import accuracy, backend, max_difference, weights


def batches(x: np.ndarray, y: np.ndarray, orders: list[np.ndarray], batch_size: int):
    """A Python generator of (images, labels) batches, epoch after epoch in the given orders."""
    for order in orders:
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield x[index], y[index]


class DigitsPyDataset(keras.utils.PyDataset):
    """Batch number i of the current order; `on_epoch_end` draws a new order from its own seeded
    generator. (Keras may call `__getitem__` and `on_epoch_end` an extra time to inspect the
    data, so the order is not tied to an epoch count.)"""

    def __init__(self, x, y, batch_size: int, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(y))

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, batch: int):
        index = self.order[batch * self.batch_size:(batch + 1) * self.batch_size]
        return self.x[index], self.y[index]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))


class CustomStepMLP(keras.Sequential):
    """`fit` calls this `train_step` per batch: forward, loss, gradients, update, metrics, written
    out by hand for each backend (TensorFlow: GradientTape; torch: autograd's backward)."""

    fault = "none"  # "logits-as-probabilities": a negative control's mistake in the loss

    def step_loss(self, x, y, y_pred):
        if self.fault == "logits-as-probabilities":  # from_logits=True forgotten
            return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))
        return self.compute_loss(x=x, y=y, y_pred=y_pred)

    def train_step(self, data):
        x, y = data
        if backend() == "torch":
            import torch

            self.zero_grad()
            y_pred = self(x, training=True)
            loss = self.step_loss(x, y, y_pred)
            loss.backward()
            gradients = [v.value.grad for v in self.trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(gradients, self.trainable_weights)
        else:
            import tensorflow as tf

            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.step_loss(x, y, y_pred)
            self.optimizer.apply(tape.gradient(loss, self.trainable_weights), self.trainable_weights)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)


def build_mlp(kind=keras.Sequential, hidden: int = 64, classes: int = 10, pixels: int = 64) -> keras.Model:
    model = kind([keras.Input((pixels,)), layers.Dense(hidden, activation="relu"), layers.Dense(classes)])
    return model


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, data: str,
        fault: str = "none") -> dict[str, float]:
    digits = fed_digits(load_images(ctx.seed, data), fault, ctx.seed)
    x, y = digits.train.flat(), digits.train.labels
    validation = (digits.validation.flat(), digits.validation.labels)
    steps = -(-len(y) // batch_size)
    orders = epoch_orders(ctx.seed, len(y), epochs)
    if fault == "class-sorted":  # a control's mistake: the batches come class by class
        orders = class_sorted_orders(y, epochs)
    initial = weights(build_mlp(pixels=x.shape[1], classes=int(y.max()) + 1))

    def train(name, source, kind=keras.Sequential, **fit_args):
        model = build_mlp(kind, pixels=x.shape[1], classes=int(y.max()) + 1)
        model.set_weights(initial)
        model.fault = fault
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        fitted = model.fit(*source, epochs=epochs, validation_data=validation, verbose=0, **fit_args)
        report_history(ctx, {k: [float(v) for v in vs] for k, vs in fitted.history.items()}, name,
                       f"Keras ({backend()}): fit on {name.replace('_', ' ')}")
        return model

    models = {
        "arrays": train("arrays", (x, y), batch_size=batch_size, shuffle=True),
        "generator": train("generator", (batches(x, y, orders, batch_size),), steps_per_epoch=steps,
                           shuffle=False),
        "pydataset": train("pydataset", (DigitsPyDataset(x, y, batch_size, ctx.seed),), shuffle=False),
        "custom_train_step": train("custom_train_step", (batches(x, y, orders, batch_size),), CustomStepMLP,
                                   steps_per_epoch=steps, shuffle=False),
    }
    if backend() == "tensorflow":
        import tensorflow as tf

        dataset = (tf.data.Dataset.from_tensor_slices((x, y))
                   .shuffle(len(y), seed=ctx.seed, reshuffle_each_iteration=True).batch(batch_size))
        models["tf_data"] = train("tf_data", (dataset,), shuffle=False)  # the dataset shuffles itself
    else:
        ctx.skip_metric("tf_data_accuracy", f"tf.data is TensorFlow's input pipeline; this run uses the "
                                            f"{backend()} backend and keeps TensorFlow out of the process")
    metrics = {f"{name}_accuracy": accuracy(model, digits.test.flat(), digits.test.labels)
               for name, model in models.items()}
    values = list(metrics.values())
    metrics.update(
        accuracy_spread=max(values) - min(values), worst_accuracy=min(values),
        same_batches_weight_difference=max_difference(
            weights(models["custom_train_step"]), weights(models["generator"])),
        fit_generator_exists=float(hasattr(keras.Model, "fit_generator")),
    )
    return metrics
