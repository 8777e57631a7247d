"""A custom loss and a custom layer in Keras (seed question 33), checked, trained, saved and loaded.

A custom loss or layer only defines the forward computation; the backend's automatic
differentiation supplies the gradient. Measured:

- the gradient of the custom loss (pseudo-Huber) with respect to the predictions equals the
  hand-derived formula r / sqrt(1 + (r/delta)^2) / n;
- the gradient of the custom layer (Gaussian radial-basis features with trainable centres and
  widths) with respect to its inputs equals central finite differences (float64);
- a model made of the custom layer and trained with the custom loss closes most of the gap
  between its initial loss and the loss of the true function (which only the outliers cost);
- saved as `.keras` and loaded with `safe_mode=True`, it predicts exactly the same. The loss is
  registered (`register_keras_serializable`), so it is found by name; the layer is not, so loading
  needs `custom_objects` and fails without it. `safe_mode` refuses a Python lambda (a Lambda layer).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from dllab.concepts.keras_autodiff import value_and_gradient


@keras.saving.register_keras_serializable(package="dllab")
class PseudoHuberLoss(keras.losses.Loss):
    """delta^2 (sqrt(1 + (r / delta)^2) - 1), r = prediction - target: quadratic near 0, linear far."""

    def __init__(self, delta: float = 1.0, name: str = "pseudo_huber", **kwargs):
        super().__init__(name=name, **kwargs)
        if delta <= 0:
            raise ValueError(f"delta must be positive, got {delta}")
        self.delta = delta

    def call(self, y_true, y_pred):
        residual = (y_pred - ops.cast(y_true, y_pred.dtype)) / self.delta
        return self.delta**2 * (ops.sqrt(1 + ops.square(residual)) - 1)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


@keras.saving.register_keras_serializable(package="dllab")
class IncompleteConfigPseudoHuber(PseudoHuberLoss):
    """The mistake of control loss-config-incomplete: get_config() forgets delta, so a loaded
    model's loss comes back with the default delta."""

    def get_config(self):
        config = super().get_config()
        config.pop("delta")
        return config


class GaussianFeatures(keras.layers.Layer):
    """units outputs exp(-|x - c_j|^2 / (2 s_j^2)) with trainable centres c_j and widths s_j = e^{w_j}."""

    def __init__(self, units: int, cut_input_gradient: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.cut_input_gradient = units, cut_input_gradient

    def build(self, input_shape):
        self.centres = self.add_weight(shape=(self.units, input_shape[-1]), initializer="random_normal",
                                       name="centres")
        self.log_widths = self.add_weight(shape=(self.units,), initializer="zeros", name="log_widths")

    def call(self, inputs):
        if self.cut_input_gradient:  # the mistake of control layer-gradient-partly-cut:
            squared = (ops.stop_gradient(ops.sum(ops.square(inputs), axis=-1, keepdims=True))  # |x|^2 off the graph
                       - 2 * ops.matmul(inputs, ops.transpose(self.centres)) + ops.sum(ops.square(self.centres), axis=-1))
            return ops.exp(-squared / (2 * ops.exp(2 * self.log_widths)))
        squared = ops.sum(ops.square(ops.expand_dims(inputs, 1) - self.centres), axis=-1)
        return ops.exp(-squared / (2 * ops.exp(2 * self.log_widths)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def pseudo_huber_gradient(targets: np.ndarray, predictions: np.ndarray, delta: float) -> np.ndarray:
    """d mean(loss) / d prediction, derived by hand."""
    residual = predictions - targets
    return residual / np.sqrt(1 + (residual / delta) ** 2) / residual.size


def build_model(features: int, units: int) -> keras.Model:
    inputs = keras.Input((features,))
    return keras.Model(inputs, keras.layers.Dense(1)(GaussianFeatures(units)(inputs)))


def measure_loss_gradient(rng, *, delta: float, fault: str) -> dict[str, float]:
    """The loss's autodiff gradient against the hand-derived one (float64): the custom loss only
    computes the value (Q33)."""
    targets, predictions = rng.normal(size=(32, 1)), rng.normal(scale=3.0, size=(32, 1))
    loss = PseudoHuberLoss(delta, dtype="float64")  # a Loss computes in float32 unless told
    _, gradient, _ = value_and_gradient(lambda p: (loss(targets, p), p), predictions)
    formula = pseudo_huber_gradient(targets, predictions, delta)
    if fault == "formula-sign-error":  # the control's mistake: the hand derivation's sign flipped
        formula = -formula
    return {"loss_gradient_vs_formula_max_abs": float(np.max(np.abs(gradient - formula)))}


def measure_layer_gradient(rng, *, step: float, fault: str) -> dict[str, float]:
    """The layer's input gradient against central finite differences (float64)."""
    layer = GaussianFeatures(4, cut_input_gradient=fault == "layer-gradient-partly-cut", dtype="float64")
    points = rng.normal(size=(6, 3))
    if fault == "flat-region":  # the control's mistake: checked where every feature is 0
        points = points * 100
    upstream = ops.convert_to_tensor(rng.normal(size=(6, 4)))
    _, gradient, _ = value_and_gradient(lambda x: (ops.sum(layer(x) * upstream), x), points)
    weighted = lambda x: float(ops.convert_to_numpy(ops.sum(layer(x) * upstream)))
    finite = np.zeros_like(points)
    for index in np.ndindex(points.shape):
        offset = np.zeros_like(points)
        offset[index] = step
        finite[index] = (weighted(points + offset) - weighted(points - offset)) / (2 * step)
    return {"layer_gradient_vs_finite_differences_max_abs": float(np.max(np.abs(gradient - finite))),
            "layer_gradient_norm": float(np.linalg.norm(gradient))}


def outlier_data(rng, samples: int):
    """A smooth target with 5% gross outliers (what a robust loss is for), and the clean target."""
    inputs = rng.uniform(-2, 2, size=(samples, 2)).astype("float32")
    clean = (np.sin(inputs[:, :1]) * np.cos(inputs[:, 1:])).astype("float32")
    labels = clean.copy()
    outliers = rng.random(samples) < 0.05
    labels[outliers] += rng.choice([-5.0, 5.0], size=(outliers.sum(), 1)).astype("float32")
    return inputs, clean, labels


def measure_training(ctx, model, inputs, clean, labels, *, delta: float, epochs: int) -> dict[str, float]:
    """Train with the custom loss: the share of the gap between the initial loss and the true
    function's loss that is left (0: as good as the truth)."""
    def numpy_loss(predicted):
        residual = (predicted - labels) / delta
        return float(np.mean(delta**2 * (np.sqrt(1 + residual**2) - 1)))

    before = numpy_loss(ops.convert_to_numpy(model(inputs)))
    ideal = numpy_loss(clean)  # the loss of the true function: what only the outliers cost
    history = model.fit(inputs, labels, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    for epoch, value in enumerate(history.history["loss"]):
        ctx.log_scalar("losses/pseudo_huber", value, epoch)
    after = numpy_loss(ops.convert_to_numpy(model(inputs)))
    return {"trained_excess_loss_ratio": (after - ideal) / (before - ideal)}


def measure_reload(model, path, inputs, *, delta: float) -> dict[str, float]:
    """Load with safe_mode=True: the same predictions, and the loss as the custom class."""
    loaded = keras.saving.load_model(path, custom_objects={"GaussianFeatures": GaussianFeatures}, safe_mode=True)
    return {
        "reloaded_prediction_max_abs": float(np.max(np.abs(
            ops.convert_to_numpy(loaded(inputs)) - ops.convert_to_numpy(model(inputs))))),
        "reloaded_loss_is_custom": float(isinstance(loaded.loss, PseudoHuberLoss) and loaded.loss.delta == delta),
    }


def measure_refusals(ctx, path, *, fault: str) -> dict[str, float]:
    """Two refusals, each matched by its error type and message: the unregistered layer without
    custom_objects, and safe_mode against a Lambda layer's Python code."""
    unsafe = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: 2 * x)])
    unsafe_path = ctx.artifact("lambda_model.keras")
    unsafe.save(unsafe_path)
    if fault == "truncated-files":  # the control's mistake: files that fail to load for another reason
        for damaged in (path, unsafe_path):
            damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    return {
        "load_without_custom_objects_failed": refused(path, TypeError, "Could not locate class 'GaussianFeatures'"),
        "lambda_refused_in_safe_mode": refused(unsafe_path, ValueError,
                                               "Requested the deserialization of a `Lambda` layer"),
    }


def run(ctx, *, samples: int, units: int, delta: float, epochs: int, step: float, learning_rate: float,
        fault: str) -> dict[str, float]:
    """Scenario entry: gradients against references, training, and a save/load round trip."""
    rng = ctx.rng()
    metrics = measure_loss_gradient(rng, delta=delta, fault=fault)
    metrics.update(measure_layer_gradient(rng, step=step, fault=fault))
    inputs, clean, labels = outlier_data(rng, samples)
    model = build_model(2, units)
    loss = IncompleteConfigPseudoHuber(delta) if fault == "loss-config-incomplete" else PseudoHuberLoss(delta)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, jit_compile=False)
    path = ctx.artifact("custom_model.keras")
    if fault == "saved-before-training":  # the control's mistake: a stale save
        model.save(path)
    metrics.update(measure_training(ctx, model, inputs, clean, labels, delta=delta, epochs=epochs))
    if fault != "saved-before-training":
        model.save(path)
    metrics.update(measure_reload(model, path, inputs, delta=delta))
    metrics.update(measure_refusals(ctx, path, fault=fault))
    return metrics


def refused(path, error_type: type, message: str) -> float:
    """1 if `load_model(path)` (safe mode, no custom objects) raises `error_type` with `message`
    in its text (that refusal, not another failure), else 0."""
    try:
        keras.saving.load_model(path, safe_mode=True)
        return 0.0
    except error_type as error:
        return float(message in str(error))
    except Exception:  # noqa: BLE001 - another failure is not the refusal measured here
        return 0.0
