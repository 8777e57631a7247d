"""TensorFlow's GradientTape (seed questions 16 and 42), checked by measurement in float64.

A `tf.GradientTape` records the operations run inside its `with` block on watched tensors
(trainable `tf.Variable`s automatically, constants only after `tape.watch`) and differentiates
them afterwards. This module measures:

- tape gradients against the hand-derived derivative and against central finite differences;
- a non-persistent tape can be asked once (a second `gradient` call fails); a persistent one
  answers several questions;
- a constant is not watched (its gradient is None) until `tape.watch`;
- second-order derivatives by nesting tapes, against the hand-derived second derivative;
- cross-framework parity: the same two-layer network, weights and data give the same loss,
  gradient and full Hessian in TensorFlow and in PyTorch autograd (`concepts/autograd`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def cubic_sine(x):
    """f(x) = x^3 sin(x); f' = 3x^2 sin x + x^3 cos x; f'' = 6x sin x + 6x^2 cos x - x^3 sin x."""
    return x**3 * tf.sin(x)


def cubic_sine_derivatives(x: np.ndarray, fault: str = "none") -> tuple[np.ndarray, np.ndarray]:
    first = 3 * x**2 * np.sin(x) + x**3 * np.cos(x)
    second = 6 * x * np.sin(x) + 6 * x**2 * np.cos(x) - x**3 * np.sin(x)
    if fault == "product-rule-dropped":  # the control's mistake: d(uv) taken as u'v
        first, second = 3 * x**2 * np.sin(x), 6 * x * np.sin(x)
    return first, second


def mlp_loss(weights, inputs, targets, hidden: int, fault: str = "none"):
    """The same network as `dllab.concepts.autograd.mlp_loss`, written with TensorFlow ops."""
    features = inputs.shape[1]
    first = tf.reshape(weights[: features * hidden], (features, hidden))
    second = weights[features * hidden:]
    logits = tf.linalg.matvec(tf.tanh(inputs @ first), second)
    penalty = 0.0 if fault == "regularizer-dropped" else 0.005 * tf.reduce_sum(weights**2)
    return tf.reduce_mean(tf.nn.softplus(-targets * logits)) + penalty


def mlp_loss_derivatives(weights: np.ndarray, inputs: np.ndarray, targets: np.ndarray,
                         hidden: int, fault: str = "none") -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, gradient and Hessian by two nested tapes (the outer one differentiates the gradient)."""
    w = tf.Variable(weights, dtype=tf.float64)
    x, y = tf.constant(inputs, tf.float64), tf.constant(targets, tf.float64)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = mlp_loss(w, x, y, hidden, fault)
        gradient = inner.gradient(loss, w)
        if fault == "gradient-partly-off-outer-tape":  # the control's mistake: the output layer's
            split = inputs.shape[1] * hidden  # gradient leaves the outer tape (as a numpy round trip would)
            gradient = tf.concat([gradient[:split], tf.stop_gradient(gradient[split:])], axis=0)
    hessian = outer.jacobian(gradient, w)
    return float(loss), gradient.numpy(), hessian.numpy()


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


NON_PERSISTENT_REFUSAL = "A non-persistent GradientTape can only be used to compute one set of gradients"


def measure_derivatives(x_values, *, step: float, dtype, fault: str) -> dict[str, float]:
    """First and second order by nested tapes against the hand-derived f' and f''; first order
    also against central finite differences (float64)."""
    first_exact, second_exact = cubic_sine_derivatives(x_values, fault)
    x = tf.Variable(x_values, dtype=dtype)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            y = tf.reduce_sum(cubic_sine(x))  # the sum's gradient is the elementwise derivative
        first = inner.gradient(y, x)
    second = outer.gradient(first, x)
    finite = (cubic_sine(x_values + step) - cubic_sine(x_values - step)) / (2 * step)
    return {
        "tape_vs_analytic_max_abs": max_abs(first, first_exact),
        "tape_vs_finite_differences_max_abs": max_abs(first, finite),
        "second_order_vs_analytic_max_abs": max_abs(second, second_exact),
    }


def measure_persistence(x_values, *, dtype, fault: str) -> dict[str, float]:
    """A non-persistent tape frees its record after one gradient call (the second is refused
    with TensorFlow's message); a persistent one answers several."""
    x = tf.Variable(x_values, dtype=dtype)
    with tf.GradientTape(persistent=fault == "persistent-tape-once") as once:  # the control's mistake
        square, cube = x**2, x**3
    once.gradient(square, x)
    try:
        once.gradient(cube, x)
        refused = 0.0
    except RuntimeError as error:
        refused = float(NON_PERSISTENT_REFUSAL in str(error))
    with tf.GradientTape(persistent=True) as kept:
        square, cube = x**2, x**3
    metrics = {
        "non_persistent_second_call_failed": refused,
        "persistent_square_error": max_abs(kept.gradient(square, x), 2 * x_values),
        "persistent_cube_error": max_abs(kept.gradient(cube, x), 3 * x_values**2),
    }
    del kept  # a persistent tape holds its resources until it is released
    return metrics


def measure_watch(x_values, *, dtype, fault: str) -> dict[str, float]:
    """Constants are not watched: no gradient (None) until tape.watch."""
    first_exact, _ = cubic_sine_derivatives(x_values, fault)
    if fault == "constant-as-variable":  # the control's mistake: a Variable is watched by itself
        constant = tf.Variable(x_values, dtype=dtype)
    else:
        constant = tf.constant(x_values, dtype)
    with tf.GradientTape() as unwatched:
        y = tf.reduce_sum(cubic_sine(constant))
    with tf.GradientTape() as watched:
        watched.watch(constant)
        y_watched = tf.reduce_sum(cubic_sine(constant))
    return {
        "unwatched_constant_gradient_is_none": float(unwatched.gradient(y, constant) is None),
        "watched_constant_vs_analytic_max_abs": max_abs(watched.gradient(y_watched, constant), first_exact),
    }


def measure_parity(ctx, rng, *, samples: int, features: int, hidden: int, weight_scale: float,
                   fault: str) -> dict[str, float]:
    """The same network, weights and data: loss, gradient and full Hessian in TensorFlow (nested
    tapes) against PyTorch autograd (create_graph=True), float64."""
    size = features * hidden + hidden
    weights = rng.normal(scale=1.0, size=size) * weight_scale
    inputs = rng.normal(size=(samples, features))
    targets = np.where(rng.random(samples) < 0.5, -1.0, 1.0)
    tf_loss, tf_gradient, tf_hessian = mlp_loss_derivatives(weights, inputs, targets, hidden, fault)
    metrics = {"hessian_asymmetry_max_abs": max_abs(tf_hessian, tf_hessian.T),
               "gradient_norm": float(np.linalg.norm(tf_gradient))}
    try:
        from dllab.concepts.autograd import mlp_loss_derivatives as torch_derivatives
    except ImportError:
        for name in ("parity_loss_abs_diff", "parity_gradient_max_abs", "parity_hessian_max_abs"):
            ctx.skip_metric(name, "PyTorch is not installed: pip install 'dllab[torch]' for the parity check")
        return metrics
    import torch

    torch.set_num_threads(ctx.threads)  # the runner fixed TF's thread count; fix torch's the same way
    torch_loss, torch_gradient, torch_hessian = torch_derivatives(weights, inputs, targets, hidden)
    metrics["parity_loss_abs_diff"] = abs(tf_loss - torch_loss)
    metrics["parity_gradient_max_abs"] = max_abs(tf_gradient, torch_gradient)
    metrics["parity_hessian_max_abs"] = max_abs(tf_hessian, torch_hessian)
    return metrics


def run(ctx, *, points: int, samples: int, features: int, hidden: int, step: float, weight_scale: float,
        fault: str) -> dict[str, float]:
    """Scenario entry: tape mechanics, then TF-vs-torch parity when torch is installed."""
    rng = ctx.rng()
    x_values = rng.uniform(-2.0, 2.0, size=points)
    dtype = tf.float32 if fault == "float32" else tf.float64  # the control's mistake: float32
    metrics = measure_derivatives(x_values, step=step, dtype=dtype, fault=fault)
    metrics.update(measure_persistence(x_values, dtype=dtype, fault=fault))
    metrics.update(measure_watch(x_values, dtype=dtype, fault=fault))
    metrics.update(measure_parity(ctx, rng, samples=samples, features=features, hidden=hidden,
                                  weight_scale=weight_scale, fault=fault))
    return metrics
