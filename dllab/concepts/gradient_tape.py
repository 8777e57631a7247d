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


def cubic_sine_derivatives(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = 3 * x**2 * np.sin(x) + x**3 * np.cos(x)
    second = 6 * x * np.sin(x) + 6 * x**2 * np.cos(x) - x**3 * np.sin(x)
    return first, second


def mlp_loss(weights, inputs, targets, hidden: int):
    """The same network as `dllab.concepts.autograd.mlp_loss`, written with TensorFlow ops."""
    features = inputs.shape[1]
    first = tf.reshape(weights[: features * hidden], (features, hidden))
    second = weights[features * hidden:]
    logits = tf.linalg.matvec(tf.tanh(inputs @ first), second)
    return tf.reduce_mean(tf.nn.softplus(-targets * logits)) + 0.005 * tf.reduce_sum(weights**2)


def mlp_loss_derivatives(weights: np.ndarray, inputs: np.ndarray, targets: np.ndarray,
                         hidden: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, gradient and Hessian by two nested tapes (the outer one differentiates the gradient)."""
    w = tf.Variable(weights, dtype=tf.float64)
    x, y = tf.constant(inputs, tf.float64), tf.constant(targets, tf.float64)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = mlp_loss(w, x, y, hidden)
        gradient = inner.gradient(loss, w)
    hessian = outer.jacobian(gradient, w)
    return float(loss), gradient.numpy(), hessian.numpy()


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def run(ctx, *, points: int, samples: int, features: int, hidden: int, step: float) -> dict[str, float]:
    """Scenario entry: tape mechanics, then TF-vs-torch parity when torch is installed."""
    if min(points, samples, features, hidden) < 1:
        raise ValueError("points, samples, features and hidden must be positive")
    rng = ctx.rng()
    x_values = rng.uniform(-2.0, 2.0, size=points)
    first_exact, second_exact = cubic_sine_derivatives(x_values)
    metrics: dict[str, float] = {}

    # First and second order by nested tapes; first order also by central differences.
    x = tf.Variable(x_values, dtype=tf.float64)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            y = tf.reduce_sum(cubic_sine(x))  # the sum's gradient is the elementwise derivative
        first = inner.gradient(y, x)
    second = outer.gradient(first, x)
    finite = (cubic_sine(x_values + step) - cubic_sine(x_values - step)) / (2 * step)
    metrics["tape_vs_analytic_max_abs"] = max_abs(first, first_exact)
    metrics["tape_vs_finite_differences_max_abs"] = max_abs(first, finite)
    metrics["second_order_vs_analytic_max_abs"] = max_abs(second, second_exact)

    # A non-persistent tape frees its record after one gradient call; a persistent one keeps it.
    with tf.GradientTape() as once:
        square, cube = x**2, x**3
    once.gradient(square, x)
    try:
        once.gradient(cube, x)
        metrics["non_persistent_second_call_failed"] = 0.0
    except RuntimeError:
        metrics["non_persistent_second_call_failed"] = 1.0
    with tf.GradientTape(persistent=True) as kept:
        square, cube = x**2, x**3
    metrics["persistent_square_error"] = max_abs(kept.gradient(square, x), 2 * x_values)
    metrics["persistent_cube_error"] = max_abs(kept.gradient(cube, x), 3 * x_values**2)
    del kept  # a persistent tape holds its resources until it is released

    # Constants are not watched: no gradient until tape.watch.
    constant = tf.constant(x_values, tf.float64)
    with tf.GradientTape() as unwatched:
        y = tf.reduce_sum(cubic_sine(constant))
    metrics["unwatched_constant_gradient_is_none"] = float(unwatched.gradient(y, constant) is None)
    with tf.GradientTape() as watched:
        watched.watch(constant)
        y = tf.reduce_sum(cubic_sine(constant))
    metrics["watched_constant_vs_analytic_max_abs"] = max_abs(watched.gradient(y, constant), first_exact)

    # Cross-framework parity on the same network, weights and data.
    size = features * hidden + hidden
    weights = rng.normal(scale=0.5, size=size)
    inputs = rng.normal(size=(samples, features))
    targets = np.where(rng.random(samples) < 0.5, -1.0, 1.0)
    tf_loss, tf_gradient, tf_hessian = mlp_loss_derivatives(weights, inputs, targets, hidden)
    metrics["hessian_asymmetry_max_abs"] = max_abs(tf_hessian, tf_hessian.T)
    metrics["gradient_norm"] = float(np.linalg.norm(tf_gradient))
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
