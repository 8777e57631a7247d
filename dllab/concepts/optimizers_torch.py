"""Optimizers and learning-rate schedules in PyTorch (seed questions 28, 37, 43), by measurement.

An optimizer does not compute gradients: `loss.backward()` (autograd) fills `parameter.grad`, and
`optimizer.step()` only reads it to update the parameters. Measured in float64:

- hand-written SGD with momentum and Adam (subclasses of `torch.optim.Optimizer`, the update
  rule written out) follow the same trajectory as `torch.optim.SGD` / `torch.optim.Adam` from the
  same initial weights on the same data;
- `step()` with no gradients changes nothing; with a gradient set by hand it applies exactly
  `-lr * grad`;
- a hand-written scheduler (an `LRScheduler` subclass: linear warm-up, then cosine decay) gives
  its closed form and the same learning rates as `LambdaLR` with the same factor; `StepLR` and
  `CosineAnnealingLR` give their closed forms.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MomentumSGD(torch.optim.Optimizer):
    """velocity = momentum * velocity + grad; parameter -= lr * velocity (PyTorch's convention)."""

    def __init__(self, params, lr: float, momentum: float, fault: str = "none"):
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.fault = fault

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if "velocity" not in state or self.fault == "momentum-state-not-kept":
                    state["velocity"] = parameter.grad.clone()
                else:
                    state["velocity"] = group["momentum"] * state["velocity"] + parameter.grad
                parameter -= group["lr"] * state["velocity"]


class HandAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba): bias-corrected first and second moments, eps added to sqrt(v_hat)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, fault: str = "none"):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.fault = fault

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state.update(t=0, m=torch.zeros_like(parameter), v=torch.zeros_like(parameter))
                state["t"] += 1
                state["m"] = beta1 * state["m"] + (1 - beta1) * parameter.grad
                state["v"] = beta2 * state["v"] + (1 - beta2) * parameter.grad**2
                m_hat = state["m"] / (1 - beta1 ** state["t"])
                v_hat = state["v"] / (1 - beta2 ** state["t"])
                if self.fault == "adam-without-bias-correction":
                    m_hat, v_hat = state["m"], state["v"]
                parameter -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])


def warmup_cosine(epoch: int, base_lr: float, warmup: int, epochs: int) -> float:
    """Linear warm-up from 0 over `warmup` epochs, then cosine decay to 0 at `epochs`
    (the same closed form as Keras's CosineDecay with warmup_target)."""
    if epoch < warmup:
        return base_lr * epoch / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """A hand-written scheduler: get_lr() computes the warm-up + cosine rate of the current epoch
    itself (written out here, not through `warmup_cosine`, so the comparisons are independent)."""

    def __init__(self, optimizer, warmup: int, epochs: int, fault: str = "none"):
        self.warmup, self.epochs, self.fault = warmup, epochs, fault
        super().__init__(optimizer)

    def get_lr(self):
        epoch = self.last_epoch + (self.fault == "schedule-off-by-one")  # the control's mistake
        if epoch < self.warmup:
            return [base_lr * epoch / self.warmup for base_lr in self.base_lrs]
        progress = (epoch - self.warmup) / (self.epochs - self.warmup)
        return [base_lr * (1 + math.cos(math.pi * progress)) / 2 for base_lr in self.base_lrs]


def warmup_cosine_closed_form(base_lr: float, warmup: int, epochs: int):
    """The schedule's closed form for every epoch at once, in numpy (a third, independent
    writing of the formula)."""
    import numpy as np

    epoch = np.arange(epochs, dtype=np.float64)
    cosine = base_lr * (1 + np.cos(np.pi * (epoch - warmup) / (epochs - warmup))) / 2
    return np.where(epoch < warmup, base_lr * epoch / warmup, cosine)


def small_network() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def trajectory_difference(make_builtin, make_hand, inputs, targets, steps: int,
                          make_schedulers=None) -> tuple[float, float]:
    """Train two copies from the same weights; return the largest parameter difference over all
    steps and how far the built-in optimizer moved the weights (so the difference means something).
    `make_schedulers(builtin, hand)` optionally returns a scheduler for each, stepped every step."""
    builtin_model = small_network()
    hand_model = small_network()
    hand_model.load_state_dict(builtin_model.state_dict())
    start = torch.cat([p.detach().flatten() for p in builtin_model.parameters()])
    builtin, hand = make_builtin(builtin_model.parameters()), make_hand(hand_model.parameters())
    schedulers = make_schedulers(builtin, hand) if make_schedulers else ()
    worst = 0.0
    for _ in range(steps):
        for model, optimizer in ((builtin_model, builtin), (hand_model, hand)):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs).squeeze(-1), targets).backward()
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        for a, b in zip(builtin_model.parameters(), hand_model.parameters()):
            worst = max(worst, float((a - b).detach().abs().max()))
    end = torch.cat([p.detach().flatten() for p in builtin_model.parameters()])
    return worst, float((end - start).abs().max())


def learning_rates(scheduler_factory, base_lr: float, epochs: int, fault: str = "none") -> list[float]:
    """The learning rate an optimizer holds at each epoch under a scheduler."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = scheduler_factory(optimizer)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if fault != "scheduler-never-stepped":  # the control's mistake: scheduler.step() forgotten
            scheduler.step()
    return rates


def measure_trajectories(inputs, targets, *, steps: int, learning_rate: float, momentum: float,
                         adam_learning_rate: float, fault: str) -> dict[str, float]:
    """Hand-written SGD-momentum and Adam against torch.optim's from the same weights (Q43)."""
    sgd_diff, sgd_moved = trajectory_difference(
        lambda p: torch.optim.SGD(p, lr=learning_rate, momentum=momentum),
        lambda p: MomentumSGD(p, lr=learning_rate, momentum=momentum, fault=fault), inputs, targets, steps)
    adam_diff, adam_moved = trajectory_difference(
        lambda p: torch.optim.Adam(p, lr=adam_learning_rate),
        lambda p: HandAdam(p, lr=adam_learning_rate, fault=fault), inputs, targets, steps)
    return {
        "sgd_momentum_trajectory_max_abs": sgd_diff,
        "sgd_momentum_weights_moved": sgd_moved,
        "adam_trajectory_max_abs": adam_diff,
        "adam_weights_moved": adam_moved,
        "custom_optimizer_vs_builtin_max_abs": max(sgd_diff, adam_diff),  # both are custom subclasses
    }


def measure_step_reads_gradient(rng, *, learning_rate: float, fault: str) -> dict[str, float]:
    """step() only reads .grad (Q37): nothing happens without it, a hand-set one is applied as is."""
    parameter = nn.Parameter(torch.tensor(rng.normal(size=4)))
    before = parameter.detach().clone()
    optimizer = torch.optim.SGD([parameter], lr=learning_rate,
                                weight_decay=0.5 if fault == "weight-decay" else 0.0)
    if fault == "stale-gradient":  # the control's mistake: a backward() left over from earlier
        (parameter**2).sum().backward()
    optimizer.step()
    unchanged = float((parameter.detach() - before).abs().max())
    before = parameter.detach().clone()
    parameter.grad = torch.tensor(rng.normal(size=4))
    optimizer.step()
    manual_error = float((parameter.detach() - (before - learning_rate * parameter.grad)).abs().max())
    return {"step_without_gradient_change": unchanged, "hand_set_gradient_update_error": manual_error}


def measure_schedules(ctx, *, learning_rate: float, epochs: int, warmup: int, gamma: float,
                      step_size: int, fault: str) -> dict[str, float]:
    """The hand-written scheduler against LambdaLR and the numpy closed form; StepLR and
    CosineAnnealingLR against theirs. Errors in units of float64's machine epsilon."""
    def factor(epoch: int) -> float:  # LambdaLR's multiplier, written out on its own
        if epoch < warmup:
            return epoch / warmup
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))

    lambda_rates = learning_rates(lambda o: torch.optim.lr_scheduler.LambdaLR(o, factor),
                                  learning_rate, epochs, fault)
    custom_rates = learning_rates(lambda o: WarmupCosineLR(o, warmup, epochs, fault), learning_rate, epochs, fault)
    step_rates = learning_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma),
                                learning_rate, epochs, fault)
    cosine_rates = learning_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, epochs),
                                  learning_rate, epochs, fault)
    custom_closed = warmup_cosine_closed_form(learning_rate, warmup, epochs)
    step_closed = [learning_rate * gamma ** (epoch // step_size) for epoch in range(epochs)]
    cosine_closed = [learning_rate * (1 + math.cos(math.pi * epoch / epochs)) / 2 for epoch in range(epochs)]
    for epoch, rate in enumerate(custom_rates):
        ctx.log_scalar("charts/learning_rate_warmup_cosine", rate, epoch)
    epsilon = torch.finfo(torch.float64).eps  # PyTorch schedules compute in Python floats

    def in_epsilons(rates, reference):
        return max(abs(x - y) for x, y in zip(rates, reference)) / learning_rate / epsilon
    return {
        "custom_schedule_vs_builtin_epsilons": in_epsilons(custom_rates, lambda_rates),  # LambdaLR
        "custom_schedule_vs_closed_form_epsilons": in_epsilons(custom_rates, custom_closed),
        "custom_schedule_lr_range": (max(custom_rates) - min(custom_rates)) / learning_rate,
        "step_decay_vs_closed_form_epsilons": in_epsilons(step_rates, step_closed),
        "cosine_vs_closed_form_epsilons": in_epsilons(cosine_rates, cosine_closed),
    }


def measure_scheduled_trajectory(inputs, targets, *, learning_rate: float, momentum: float, epochs: int,
                                 warmup: int, fault: str) -> dict[str, float]:
    """SGD under LambdaLR against the hand-written optimizer under the hand-written scheduler."""
    lambda_lr = torch.optim.lr_scheduler.LambdaLR
    scheduled_diff, _ = trajectory_difference(
        lambda p: torch.optim.SGD(p, lr=learning_rate, momentum=momentum),
        lambda p: MomentumSGD(p, lr=learning_rate, momentum=momentum, fault=fault), inputs, targets, epochs,
        lambda builtin, hand: (lambda_lr(builtin, lambda epoch: warmup_cosine(epoch, 1.0, warmup, epochs)),
                               WarmupCosineLR(hand, warmup, epochs, fault)))
    return {"scheduled_trajectory_max_abs": scheduled_diff}


def run(ctx, *, steps: int, learning_rate: float, momentum: float, adam_learning_rate: float,
        epochs: int, warmup: int, gamma: float, step_size: int, fault: str) -> dict[str, float]:
    """Scenario entry: optimizer trajectories and schedules against their references."""
    if epochs <= warmup:
        raise ValueError(f"epochs ({epochs}) must be more than warmup ({warmup})")
    rng = ctx.rng()
    inputs = torch.tensor(rng.normal(size=(64, 5)))
    targets = torch.tensor(rng.normal(size=64))
    return {
        **measure_trajectories(inputs, targets, steps=steps, learning_rate=learning_rate, momentum=momentum,
                               adam_learning_rate=adam_learning_rate, fault=fault),
        **measure_scheduled_trajectory(inputs, targets, learning_rate=learning_rate, momentum=momentum,
                                       epochs=epochs, warmup=warmup, fault=fault),
        **measure_step_reads_gradient(rng, learning_rate=learning_rate, fault=fault),
        **measure_schedules(ctx, learning_rate=learning_rate, epochs=epochs, warmup=warmup, gamma=gamma,
                            step_size=step_size, fault=fault),
    }
