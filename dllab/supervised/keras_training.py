"""Keras helpers shared by the Keras scenarios, for either backend (TensorFlow or torch):
the backend's name, weights as numpy, and a resumable epoch-by-epoch `fit`.

`fit` with `resumable=True` calls `model.fit` once per epoch on a training set shuffled by
(seed, epoch), so that a run resumed from its last checkpoint (weights + optimizer variables + history + RNG states, saved
after every epoch) sees exactly the batches of an uninterrupted run and ends with the same metrics.
"""

from __future__ import annotations

import keras
import numpy as np

from dllab.checkpoint import check_owner, rng_state, set_rng_state
from dllab.supervised.common import epoch_orders


def backend() -> str:
    """The Keras backend doing the work: "tensorflow", "torch" or "jax"."""
    return keras.backend.backend()


def weights(model) -> list[np.ndarray]:
    """A copy of every weight as numpy (what `model.get_weights()` gives, on any backend)."""
    return [np.array(w, copy=True) for w in model.get_weights()]


def max_difference(first, second) -> float:
    """The largest absolute difference between two lists of arrays (0.0 = bit-identical values)."""
    return float(max(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))) for a, b in zip(first, second)))


def predict_logits(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images, batch_size=512, verbose=0))


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predict_logits(model, images).argmax(axis=1) == labels))


def _optimizer_arrays(model) -> dict[str, np.ndarray]:
    return {f"optimizer/{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}


def _restore(model, arrays: dict[str, np.ndarray]) -> None:
    model.set_weights([arrays[f"model/{i}"] for i in range(len(model.weights))])
    model.optimizer.build(model.trainable_variables)
    variables = model.optimizer.variables
    for i, variable in enumerate(variables):
        variable.assign(arrays[f"optimizer/{i}"])


def fit(ctx, model, train_x, train_y, validation: tuple[np.ndarray, np.ndarray], *, epochs: int,
        batch_size: int, name: str, resumable: bool = False, callbacks=()) -> dict[str, list[float]]:
    """`model.fit` epoch by epoch (model compiled with metrics=["accuracy"]); the Keras history."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be positive")
    history: dict[str, list[float]] = {}
    start_epoch = 0
    state = ctx.load_checkpoint() if resumable else None
    if state is not None:
        arrays, meta = state
        check_owner(meta, name, ctx.seed)
        _restore(model, arrays)
        set_rng_state(arrays, meta)
        history, start_epoch = meta["history"], int(meta["epoch"])
    if not resumable:  # one call; Keras shuffles with its own seeded generator
        logs = model.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, shuffle=True,
                         validation_data=validation, verbose=0, callbacks=list(callbacks)).history
        ctx.record(**{f"{name}_val_accuracy": logs["val_accuracy"][-1], f"{name}_epochs_done": epochs})
        return {key: [float(v) for v in values] for key, values in logs.items()}
    orders = epoch_orders(ctx.seed, len(train_y), epochs)
    for epoch in range(start_epoch, epochs):
        order = orders[epoch]
        logs = model.fit(train_x[order], train_y[order], batch_size=batch_size, epochs=epoch + 1,
                         initial_epoch=epoch, shuffle=False, validation_data=validation, verbose=0,
                         callbacks=list(callbacks)).history
        for key, values in logs.items():
            history.setdefault(key, []).append(float(values[-1]))
        ctx.record(**{f"{name}_val_accuracy": history["val_accuracy"][-1], f"{name}_epochs_done": epoch + 1})
        if resumable:
            arrays = {f"model/{i}": w for i, w in enumerate(weights(model))}
            rng_arrays, rng_meta = rng_state()
            ctx.save_checkpoint({**arrays, **_optimizer_arrays(model), **rng_arrays},
                                {**rng_meta, "trainer": name, "seed": ctx.seed, "epoch": epoch + 1,
                                 "history": history})
    return history
