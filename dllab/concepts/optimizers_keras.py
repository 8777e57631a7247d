"""Optimizers and learning-rate schedules in Keras (seed questions 28, 37, 43), by measurement.

A Keras optimizer receives the gradients as an argument (`apply_gradients([(grad, var)])`); it
never computes them. Here the gradient of a float64 least-squares loss is computed in numpy (the
exact formula X^T (Xw - y) / n), so the same code runs on every Keras backend. Measured:

- `keras.optimizers.SGD(momentum=...)` and `keras.optimizers.Adam` follow the trajectories of
  their update rules written out in numpy, and a custom `keras.optimizers.Optimizer` subclass
  (momentum SGD in `update_step`) follows the built-in SGD;
- a hand-written `LearningRateSchedule` (linear warm-up, then cosine decay) equals its closed
  form and the built-in `CosineDecay(warmup_target=...)`, and an optimizer given it applies the
  schedule's rate at each step; `ExponentialDecay(staircase=True)` (step decay) and
  `CosineDecay` equal their closed forms.

Keras keeps the learning rate in a float32 variable and, on TensorFlow, casts Python float
hyperparameters through float32: the hyperparameters are powers of two, exact in float32.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


class MomentumSGD(keras.optimizers.Optimizer):
    """A custom optimizer: velocity = momentum * velocity - lr * grad; variable += velocity."""

    def __init__(self, learning_rate: float, momentum: float, name: str = "momentum_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum

    def build(self, variables):
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(v, name="velocity") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        velocity = self.velocities[self._get_variable_index(variable)]
        learning_rate = ops.cast(learning_rate, variable.dtype)
        self.assign(velocity, velocity * ops.cast(self.momentum, variable.dtype) - learning_rate * gradient)
        self.assign_add(variable, velocity)


def momentum_sgd_numpy(gradient_of, start, steps, learning_rates, momentum):
    weights, velocity, path = start.copy(), np.zeros_like(start), []
    for step in range(steps):
        velocity = momentum * velocity - learning_rates[step] * gradient_of(weights)
        weights = weights + velocity
        path.append(weights)
    return np.array(path)


def adam_numpy(gradient_of, start, steps, learning_rate, beta_1, beta_2, epsilon):
    """Keras's Adam: the bias correction folded into the step size, epsilon added to sqrt(v)."""
    weights, m, v, path = start.copy(), np.zeros_like(start), np.zeros_like(start), []
    for t in range(1, steps + 1):
        gradient = gradient_of(weights)
        m = m + (gradient - m) * (1 - beta_1)
        v = v + (gradient**2 - v) * (1 - beta_2)
        alpha = learning_rate * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        weights = weights - m * alpha / (np.sqrt(v) + epsilon)
        path.append(weights)
    return np.array(path)


def warmup_cosine(step, base_lr: float, warmup: int, total: int):
    """Linear warm-up from 0 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base_lr * step / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """A hand-written schedule, written with keras.ops so it runs inside compiled train steps."""

    def __init__(self, base_lr: float, warmup: int, total: int):
        self.base_lr, self.warmup, self.total = base_lr, warmup, total

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.base_lr * step / self.warmup
        progress = (step - self.warmup) / (self.total - self.warmup)
        decay = self.base_lr * 0.5 * (1 + ops.cos(math.pi * ops.minimum(progress, 1.0)))
        return ops.where(step < self.warmup, warm, decay)

    def get_config(self):
        return {"base_lr": self.base_lr, "warmup": self.warmup, "total": self.total}


def keras_trajectory(optimizer, gradient_of, start, steps) -> np.ndarray:
    variable = keras.Variable(start, dtype="float64")
    path = []
    for _ in range(steps):
        gradient = gradient_of(ops.convert_to_numpy(variable))
        optimizer.apply_gradients([(ops.convert_to_tensor(gradient, dtype="float64"), variable)])
        path.append(ops.convert_to_numpy(variable))
    return np.array(path)


def run(ctx, *, steps: int, learning_rate: float, momentum: float, adam_learning_rate: float,
        epochs: int, warmup: int, gamma: float, step_size: int) -> dict[str, float]:
    """Scenario entry: optimizer trajectories and schedules against their references."""
    if warmup < 1 or step_size < 1 or epochs <= warmup:
        raise ValueError("warmup and step_size must be >= 1 and epochs > warmup")
    for name, value in (("learning_rate", learning_rate), ("momentum", momentum),
                        ("adam_learning_rate", adam_learning_rate), ("gamma", gamma)):
        if float(np.float32(value)) != value:
            raise ValueError(f"{name}={value} is not exact in float32; Keras would round it (use e.g. 2**-k)")
    rng = ctx.rng()
    inputs, targets = rng.normal(size=(64, 5)), rng.normal(size=64)
    gradient_of = lambda w: inputs.T @ (inputs @ w - targets) / len(targets)
    start = rng.normal(size=5)
    constant = [learning_rate] * steps

    sgd = keras_trajectory(keras.optimizers.SGD(learning_rate, momentum=momentum), gradient_of, start, steps)
    sgd_reference = momentum_sgd_numpy(gradient_of, start, steps, constant, momentum)
    custom = keras_trajectory(MomentumSGD(learning_rate, momentum), gradient_of, start, steps)
    beta_1, beta_2, epsilon = 0.875, 1 - 2.0**-10, 2.0**-20
    adam = keras_trajectory(keras.optimizers.Adam(adam_learning_rate, beta_1, beta_2, epsilon),
                            gradient_of, start, steps)
    adam_reference = adam_numpy(gradient_of, start, steps, adam_learning_rate, beta_1, beta_2, epsilon)

    # Hand-set gradient: plain SGD applies exactly -lr * grad.
    variable = keras.Variable(start, dtype="float64")
    gradient = rng.normal(size=5)
    keras.optimizers.SGD(learning_rate).apply_gradients([(ops.convert_to_tensor(gradient), variable)])
    manual_error = float(np.max(np.abs(ops.convert_to_numpy(variable) - (start - learning_rate * gradient))))
    ctx.skip_metric("step_without_gradient_change", "a Keras optimizer takes the gradients as an argument "
                    "(apply_gradients); there is no stored .grad that could be missing")

    # Schedules against closed forms and built-ins, in units of float32's machine epsilon.
    values = lambda schedule: np.array([float(ops.convert_to_numpy(schedule(t))) for t in range(epochs)])
    custom_schedule = WarmupCosine(learning_rate, warmup, epochs)
    builtin = keras.optimizers.schedules.CosineDecay(0.0, epochs - warmup, warmup_target=learning_rate,
                                                     warmup_steps=warmup)
    staircase = keras.optimizers.schedules.ExponentialDecay(learning_rate, step_size, gamma, staircase=True)
    cosine = keras.optimizers.schedules.CosineDecay(learning_rate, epochs)
    epsilon32 = float(np.finfo(np.float32).eps)
    in_epsilons = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) / learning_rate / epsilon32
    custom_values = values(custom_schedule)
    for step, rate in enumerate(custom_values):
        ctx.log_scalar("charts/learning_rate_warmup_cosine", rate, step)
    closed = [warmup_cosine(t, learning_rate, warmup, epochs) for t in range(epochs)]
    step_closed = [learning_rate * gamma ** (t // step_size) for t in range(epochs)]
    cosine_closed = [learning_rate * 0.5 * (1 + math.cos(math.pi * t / epochs)) for t in range(epochs)]

    # The optimizer applies the schedule's rate at each step (iterations 0, 1, ...).
    scheduled_sgd = keras.optimizers.SGD(custom_schedule, momentum=momentum)
    scheduled = keras_trajectory(scheduled_sgd, gradient_of, start, epochs)
    scheduled_reference = momentum_sgd_numpy(gradient_of, start, epochs, custom_values, momentum)
    max_abs = lambda a, b: float(np.max(np.abs(a - b)))
    return {
        "sgd_momentum_trajectory_max_abs": max_abs(sgd, sgd_reference),
        "sgd_momentum_weights_moved": float(np.max(np.abs(sgd[-1] - start))),
        "custom_optimizer_vs_builtin_max_abs": max_abs(custom, sgd),
        "adam_trajectory_max_abs": max_abs(adam, adam_reference),
        "adam_weights_moved": float(np.max(np.abs(adam[-1] - start))),
        "hand_set_gradient_update_error": manual_error,
        "custom_schedule_vs_builtin_epsilons": in_epsilons(custom_values, values(builtin)),
        "custom_schedule_vs_closed_form_epsilons": in_epsilons(custom_values, closed),
        "custom_schedule_lr_range": float(custom_values.max() - custom_values.min()) / learning_rate,
        "step_decay_vs_closed_form_epsilons": in_epsilons(values(staircase), step_closed),
        "cosine_vs_closed_form_epsilons": in_epsilons(values(cosine), cosine_closed),
        "scheduled_trajectory_max_abs": max_abs(scheduled, scheduled_reference),
    }
