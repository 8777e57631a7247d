"""Keras callbacks (questions 15, 29, 38), each checked by measurement on the bundled digits.

A deliberately overfitting MLP (a 256-unit hidden layer trained on a small slice of the training
images) is trained by `fit` with four callbacks in this order:

1. `LearningRateScheduler(schedule)`: the learning rate at each epoch's start must equal
   `schedule(epoch)` (rounded to float32, the optimizer's dtype);
2. `HookRecorder` (below): records every hook Keras calls, and the weights and `val_loss` at each
   epoch's end; the recorded order must match the documented order exactly;
3. `ModelCheckpoint(save_best_only=True)`: the file it keeps must predict exactly what the
   restored model predicts;
4. `EarlyStopping(restore_best_weights=True)`: training must stop before `max_epochs`, and the
   final weights must be bit-identical to those recorded at the epoch of lowest `val_loss`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from dllab.supervised.common import load_images, report_history
from dllab.supervised.keras_training import backend, max_difference, predict_logits, weights


class HookRecorder(keras.callbacks.Callback):
    """Records hook names, the learning rate at each epoch start, weights and val_loss at each end."""

    def __init__(self):
        super().__init__()
        self.hooks: list[str] = []
        self.learning_rates: list[float] = []
        self.epoch_weights: list[list[np.ndarray]] = []
        self.val_losses: list[float] = []

    def on_train_begin(self, logs=None): self.hooks.append("train_begin")
    def on_train_end(self, logs=None): self.hooks.append("train_end")
    def on_train_batch_begin(self, batch, logs=None): self.hooks.append("train_batch_begin")
    def on_train_batch_end(self, batch, logs=None): self.hooks.append("train_batch_end")
    def on_test_begin(self, logs=None): self.hooks.append("test_begin")
    def on_test_end(self, logs=None): self.hooks.append("test_end")
    def on_test_batch_begin(self, batch, logs=None): self.hooks.append("test_batch_begin")
    def on_test_batch_end(self, batch, logs=None): self.hooks.append("test_batch_end")

    def on_epoch_begin(self, epoch, logs=None):
        self.hooks.append("epoch_begin")
        self.learning_rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch, logs=None):
        self.hooks.append("epoch_end")
        self.epoch_weights.append(weights(self.model))
        self.val_losses.append(float(logs.get("val_loss", math.nan)))  # NaN: no validation this epoch


def expected_hooks(epochs: int, train_steps: int, validation_steps: int) -> list[str]:
    """The order Keras documents for `fit` with validation data."""
    epoch = (["epoch_begin"] + ["train_batch_begin", "train_batch_end"] * train_steps
             + ["test_begin"] + ["test_batch_begin", "test_batch_end"] * validation_steps
             + ["test_end", "epoch_end"])
    return ["train_begin"] + epoch * epochs + ["train_end"]


def build_callbacks(ctx, schedule, recorder: HookRecorder, *, patience: int, monitor: str,
                    restore_best_weights: bool, fault: str) -> tuple[list, keras.callbacks.EarlyStopping]:
    """The four callbacks, in the order fit runs them; the control "recorder-before-scheduler"
    puts the recorder first, so it reads the learning rate before the scheduler sets it."""
    scheduler = keras.callbacks.LearningRateScheduler(schedule)
    checkpoint = keras.callbacks.ModelCheckpoint(ctx.artifact("checkpoints/best.keras"), monitor="val_loss",
                                                 save_best_only=True)
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience,
                                            restore_best_weights=restore_best_weights)
    first = [recorder, scheduler] if fault == "recorder-before-scheduler" else [scheduler, recorder]
    return [*first, checkpoint, stopper], stopper


def run(ctx, *, max_epochs: int, patience: int, train_size: int, hidden: int, batch_size: int,
        learning_rate: float, decay: float, monitor: str = "val_loss", restore_best_weights: bool = True,
        validation_freq: int = 1, fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed)
    if not 10 <= train_size <= len(digits.train):
        raise ValueError(f"train_size must lie in 10..{len(digits.train)}, got {train_size}")
    x, y = digits.train.flat()[:train_size], digits.train.labels[:train_size]
    val_x, val_y = digits.validation.flat(), digits.validation.labels

    def schedule(epoch: int, current: float = 0.0) -> float:
        return learning_rate * decay ** epoch

    model = keras.Sequential([keras.Input((x.shape[1],)), layers.Dense(hidden, activation="relu"),
                              layers.Dense(10)], name="overfitting_mlp")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    recorder = HookRecorder()
    callbacks, stopper = build_callbacks(ctx, schedule, recorder, patience=patience, monitor=monitor,
                                         restore_best_weights=restore_best_weights, fault=fault)
    fitted = model.fit(x, y, batch_size=batch_size, epochs=max_epochs, validation_data=(val_x, val_y),
                       validation_freq=validation_freq, callbacks=callbacks, verbose=0)
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    report_history(ctx, {k: v for k, v in history.items() if k != "learning_rate"}, "callbacks",
                   f"Keras ({backend()}): early stopping on val_loss")
    for epoch, rate in enumerate(recorder.learning_rates):
        ctx.log_scalar("charts/callbacks/learning_rate", rate, epoch + 1)

    epochs_run = len(recorder.val_losses)
    best_epoch = int(np.nanargmin(recorder.val_losses))  # the first epoch with the lowest val_loss
    restored = weights(model)
    checkpoint = keras.models.load_model(ctx.artifact("checkpoints/best.keras"), safe_mode=True)
    expected = expected_hooks(epochs_run, math.ceil(len(y) / batch_size), math.ceil(len(val_y) / batch_size))
    scheduled = np.float32([schedule(epoch) for epoch in range(epochs_run)])
    return {
        "epochs_run": epochs_run,
        "stopped_early": float(epochs_run < max_epochs and stopper.stopped_epoch > 0),
        "best_epoch": best_epoch + 1,
        "early_stopping_best_epoch_agrees": float(stopper.best_epoch == best_epoch),
        "restored_vs_best_epoch_weight_difference": max_difference(restored, recorder.epoch_weights[best_epoch]),
        "restored_vs_last_epoch_weight_difference": max_difference(restored, recorder.epoch_weights[-1]),
        "checkpoint_vs_restored_prediction_difference": float(np.max(np.abs(
            predict_logits(checkpoint, val_x) - predict_logits(model, val_x)))),
        "hook_order_matches": float(recorder.hooks == expected),
        "train_batch_hooks": recorder.hooks.count("train_batch_end"),
        "expected_train_batch_hooks": expected.count("train_batch_end"),
        "learning_rate_schedule_error": float(np.max(np.abs(np.float32(recorder.learning_rates) - scheduled))),
        "best_val_loss": recorder.val_losses[best_epoch],
        "last_val_loss": recorder.val_losses[-1],
    }
