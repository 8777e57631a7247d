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

    def __init__(self, learning_rate: float, momentum: float, name: str = "momentum_sgd",
                 fault: str = "none", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum, self.fault = momentum, fault

    def build(self, variables):
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(v, name="velocity") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        velocity = self.velocities[self._get_variable_index(variable)]
        learning_rate = ops.cast(learning_rate, variable.dtype)
        if self.fault == "momentum-state-not-kept":  # the control's mistake: velocity forgotten
            self.assign(velocity, ops.zeros_like(velocity))
        self.assign(velocity, velocity * ops.cast(self.momentum, variable.dtype) - learning_rate * gradient)
        self.assign_add(variable, velocity)


def momentum_sgd_numpy(gradient_of, start, steps, learning_rates, momentum, fault: str = "none"):
    weights, velocity, path = start.copy(), np.zeros_like(start), []
    for step in range(steps):
        if fault == "momentum-state-not-kept":  # the control's mistake: velocity forgotten
            velocity = np.zeros_like(start)
        velocity = momentum * velocity - learning_rates[step] * gradient_of(weights)
        weights = weights + velocity
        path.append(weights)
    return np.array(path)


def adam_numpy(gradient_of, start, steps, learning_rate, beta_1, beta_2, epsilon, fault: str = "none"):
    """Keras's Adam: the bias correction folded into the step size, epsilon added to sqrt(v)."""
    weights, m, v, path = start.copy(), np.zeros_like(start), np.zeros_like(start), []
    for t in range(1, steps + 1):
        gradient = gradient_of(weights)
        m = m + (gradient - m) * (1 - beta_1)
        v = v + (gradient**2 - v) * (1 - beta_2)
        alpha = learning_rate * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        if fault == "adam-without-bias-correction":
            alpha = learning_rate
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

    def __init__(self, base_lr: float, warmup: int, total: int, fault: str = "none"):
        self.base_lr, self.warmup, self.total, self.fault = base_lr, warmup, total, fault

    def __call__(self, step):
        step = ops.cast(step, "float32") + float(self.fault == "schedule-off-by-one")  # the control's mistake
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


def least_squares(rng):
    """A float64 least-squares problem: the exact gradient X^T (Xw - y) / n, and a start point."""
    inputs, targets = rng.normal(size=(64, 5)), rng.normal(size=64)
    return (lambda w: inputs.T @ (inputs @ w - targets) / len(targets)), rng.normal(size=5)


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def measure_trajectories(gradient_of, start, *, steps: int, learning_rate: float, momentum: float,
                         adam_learning_rate: float, fault: str) -> dict[str, float]:
    """Built-in SGD-momentum and Adam against their rules in numpy; a custom Optimizer subclass
    against the built-in SGD (Q43)."""
    sgd = keras_trajectory(keras.optimizers.SGD(learning_rate, momentum=momentum), gradient_of, start, steps)
    sgd_reference = momentum_sgd_numpy(gradient_of, start, steps, [learning_rate] * steps, momentum, fault)
    custom = keras_trajectory(MomentumSGD(learning_rate, momentum, fault=fault), gradient_of, start, steps)
    beta_1, beta_2, epsilon = 0.875, 1 - 2.0**-10, 2.0**-20
    adam = keras_trajectory(keras.optimizers.Adam(adam_learning_rate, beta_1, beta_2, epsilon),
                            gradient_of, start, steps)
    adam_reference = adam_numpy(gradient_of, start, steps, adam_learning_rate, beta_1, beta_2, epsilon, fault)
    return {
        "sgd_momentum_trajectory_max_abs": max_abs(sgd, sgd_reference),
        "sgd_momentum_weights_moved": float(np.max(np.abs(sgd[-1] - start))),
        "custom_optimizer_vs_builtin_max_abs": max_abs(custom, sgd),
        "adam_trajectory_max_abs": max_abs(adam, adam_reference),
        "adam_weights_moved": float(np.max(np.abs(adam[-1] - start))),
    }


def measure_hand_set_gradient(ctx, rng, start, *, learning_rate: float, fault: str) -> dict[str, float]:
    """Plain SGD applies a gradient set by hand as exactly -lr * grad (Q37)."""
    variable = keras.Variable(start, dtype="float64")
    gradient = rng.normal(size=5)
    optimizer = keras.optimizers.SGD(learning_rate, weight_decay=0.5 if fault == "weight-decay" else None)
    optimizer.apply_gradients([(ops.convert_to_tensor(gradient), variable)])
    ctx.skip_metric("step_without_gradient_change", "a Keras optimizer takes the gradients as an argument "
                    "(apply_gradients); there is no stored .grad that could be missing")
    return {"hand_set_gradient_update_error": max_abs(ops.convert_to_numpy(variable),
                                                       start - learning_rate * gradient)}


def schedule_values(schedule, epochs: int, fault: str) -> np.ndarray:
    """A schedule's rate at steps 0, 1, ... (a control's mistake: the step counter never advances)."""
    steps = [0] * epochs if fault == "scheduler-never-stepped" else range(epochs)
    return np.array([float(ops.convert_to_numpy(schedule(t))) for t in steps])


def measure_schedules(ctx, *, learning_rate: float, epochs: int, warmup: int, gamma: float,
                      step_size: int, fault: str) -> tuple[dict[str, float], np.ndarray]:
    """The hand-written schedule against its closed form and CosineDecay(warmup_target);
    ExponentialDecay(staircase) and CosineDecay against theirs, in float32 epsilons."""
    custom_schedule = WarmupCosine(learning_rate, warmup, epochs, fault)
    builtin = keras.optimizers.schedules.CosineDecay(0.0, epochs - warmup, warmup_target=learning_rate,
                                                     warmup_steps=warmup)
    staircase = keras.optimizers.schedules.ExponentialDecay(learning_rate, step_size, gamma, staircase=True)
    cosine = keras.optimizers.schedules.CosineDecay(learning_rate, epochs)
    epsilon32 = float(np.finfo(np.float32).eps)
    in_epsilons = lambda a, b: max_abs(a, b) / learning_rate / epsilon32
    custom_values = schedule_values(custom_schedule, epochs, fault)
    for step, rate in enumerate(custom_values):
        ctx.log_scalar("charts/learning_rate_warmup_cosine", rate, step)
    closed = [warmup_cosine(t, learning_rate, warmup, epochs) for t in range(epochs)]
    step_closed = [learning_rate * gamma ** (t // step_size) for t in range(epochs)]
    cosine_closed = [learning_rate * 0.5 * (1 + math.cos(math.pi * t / epochs)) for t in range(epochs)]
    return {
        "custom_schedule_vs_builtin_epsilons": in_epsilons(custom_values, schedule_values(builtin, epochs, fault)),
        "custom_schedule_vs_closed_form_epsilons": in_epsilons(custom_values, closed),
        "custom_schedule_lr_range": float(custom_values.max() - custom_values.min()) / learning_rate,
        "step_decay_vs_closed_form_epsilons": in_epsilons(schedule_values(staircase, epochs, fault), step_closed),
        "cosine_vs_closed_form_epsilons": in_epsilons(schedule_values(cosine, epochs, fault), cosine_closed),
    }, custom_values


def measure_scheduled_trajectory(gradient_of, start, rates, *, learning_rate: float, momentum: float,
                                 epochs: int, warmup: int) -> dict[str, float]:
    """An optimizer given the schedule applies the schedule's rate at each step (iterations 0, 1, ...);
    the reference is the numpy momentum rule driven by the correct schedule's rates."""
    scheduled_sgd = keras.optimizers.SGD(WarmupCosine(learning_rate, warmup, epochs), momentum=momentum)
    scheduled = keras_trajectory(scheduled_sgd, gradient_of, start, epochs)
    return {"scheduled_trajectory_max_abs": max_abs(
        scheduled, momentum_sgd_numpy(gradient_of, start, epochs, rates, momentum))}


def run(ctx, *, steps: int, learning_rate: float, momentum: float, adam_learning_rate: float,
        epochs: int, warmup: int, gamma: float, step_size: int, fault: str) -> dict[str, float]:
    """Scenario entry: optimizer trajectories and schedules against their references."""
    if epochs <= warmup:
        raise ValueError(f"epochs ({epochs}) must be more than warmup ({warmup})")
    for name, value in (("learning_rate", learning_rate), ("momentum", momentum),
                        ("adam_learning_rate", adam_learning_rate), ("gamma", gamma)):
        if float(np.float32(value)) != value:
            raise ValueError(f"{name}={value} is not exact in float32; Keras would round it (use e.g. 2**-k)")
    rng = ctx.rng()
    gradient_of, start = least_squares(rng)
    metrics = measure_trajectories(gradient_of, start, steps=steps, learning_rate=learning_rate,
                                   momentum=momentum, adam_learning_rate=adam_learning_rate, fault=fault)
    metrics.update(measure_hand_set_gradient(ctx, rng, start, learning_rate=learning_rate, fault=fault))
    schedules, rates = measure_schedules(ctx, learning_rate=learning_rate, epochs=epochs, warmup=warmup,
                                         gamma=gamma, step_size=step_size, fault=fault)
    metrics.update(schedules)
    metrics.update(measure_scheduled_trajectory(gradient_of, start, rates, learning_rate=learning_rate,
                                                momentum=momentum, epochs=epochs, warmup=warmup))
    return metrics
