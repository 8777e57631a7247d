"""PyTorch autograd (seed questions 7 and 28), checked by measurement in float64.

Autograd records each operation of the forward pass in a graph (`tensor.grad_fn`) and, on
`backward()`, applies the chain rule through it. This module checks it against independent
references computed in the same run:

- the gradient of a small loss against its hand-derived formula and against central finite
  differences;
- a custom `torch.autograd.Function` (forward and backward written by hand) against
  `torch.autograd.gradcheck` and against autograd of the same formula;
- `torch.no_grad()` records nothing; a second `backward()` through a freed graph fails unless the
  first one used `retain_graph=True`;
- gradient accumulation over micro-batches equals the gradient of the whole batch.

`mlp_loss_derivatives` is shared with `concepts/gradient-tape`, which compares TensorFlow's tape
with it on the same function and weights.
"""

from __future__ import annotations

import numpy as np
import torch


def tanh_loss(weights: torch.Tensor, inputs: torch.Tensor, l2: float) -> torch.Tensor:
    """f(w) = mean(tanh(A w)^2) + l2/2 |w|^2, whose gradient is easy to derive by hand."""
    return torch.tanh(inputs @ weights).pow(2).mean() + 0.5 * l2 * weights.pow(2).sum()


def tanh_loss_gradient(weights: torch.Tensor, inputs: torch.Tensor, l2: float) -> torch.Tensor:
    """The hand-derived gradient: A^T (2 tanh(Aw) (1 - tanh(Aw)^2)) / n + l2 w."""
    hidden = torch.tanh(inputs @ weights)
    return inputs.T @ (2 * hidden * (1 - hidden**2)) / inputs.shape[0] + l2 * weights


def central_differences(function, weights: torch.Tensor, step: float) -> torch.Tensor:
    """(f(w + h e_i) - f(w - h e_i)) / 2h for every coordinate i: error O(h^2), no autograd."""
    gradient = torch.zeros_like(weights)
    with torch.no_grad():
        for index in range(weights.numel()):
            offset = torch.zeros_like(weights)
            offset.view(-1)[index] = step
            gradient.view(-1)[index] = (function(weights + offset) - function(weights - offset)) / (2 * step)
    return gradient


class SmoothReLU(torch.autograd.Function):
    """softplus(x) = log(1 + e^x) with a hand-written backward: d/dx = sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)


def mlp_loss(weights: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, hidden: int) -> torch.Tensor:
    """A two-layer tanh network with a logistic loss, weights flattened into one vector
    ([W1 (d*hidden), w2 (hidden)]): the function `concepts/gradient-tape` also writes in TF."""
    features = inputs.shape[1]
    first = weights[: features * hidden].reshape(features, hidden)
    second = weights[features * hidden:]
    logits = torch.tanh(inputs @ first) @ second
    return torch.nn.functional.softplus(-targets * logits).mean() + 0.005 * weights.pow(2).sum()


def mlp_loss_derivatives(weights: np.ndarray, inputs: np.ndarray, targets: np.ndarray,
                         hidden: int) -> tuple[float, np.ndarray, np.ndarray]:
    """The loss, its gradient (first order) and its Hessian (second order, by differentiating
    the gradient again with `create_graph=True`), all in float64."""
    w = torch.tensor(weights, dtype=torch.float64, requires_grad=True)
    x = torch.tensor(inputs, dtype=torch.float64)
    y = torch.tensor(targets, dtype=torch.float64)
    loss = mlp_loss(w, x, y, hidden)
    (gradient,) = torch.autograd.grad(loss, w, create_graph=True)
    hessian = torch.stack([torch.autograd.grad(gradient[i], w, retain_graph=True)[0] for i in range(w.numel())])
    return float(loss.detach()), gradient.detach().numpy(), hessian.numpy()


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


FAULTS = ("none", "detached-intermediate", "backward-ignores-upstream", "no-grad-missing",
          "retain-graph-first", "grad-zeroed-between", "unscaled-micro-batches")


class SmoothReLUIgnoringUpstream(SmoothReLU):
    """The mistake: a backward that returns the local derivative, not grad_output times it."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return torch.sigmoid(x)


def measure_gradient(weights, inputs, l2: float, step: float, fault: str) -> dict[str, float]:
    """Autograd's gradient against the hand-derived formula and central finite differences;
    `gradient_norm` (of autograd's gradient) shows the comparison is not between zeros."""
    def loss_function(w):
        hidden = torch.tanh(inputs @ w)
        if fault == "detached-intermediate":  # cut out of the graph: autograd sees only the l2 term
            hidden = hidden.detach()
        return hidden.pow(2).mean() + 0.5 * l2 * w.pow(2).sum()

    (autograd_gradient,) = torch.autograd.grad(loss_function(weights), weights)
    analytic = tanh_loss_gradient(weights.detach(), inputs, l2)
    numeric = central_differences(loss_function, weights.detach(), step)
    return {"autograd_vs_analytic_max_abs": max_abs(autograd_gradient, analytic),
            "autograd_vs_finite_differences_max_abs": max_abs(autograd_gradient, numeric),
            "gradient_norm": float(autograd_gradient.norm())}


def measure_custom_function(point, upstream, fault: str) -> dict[str, float]:
    """A custom autograd.Function under gradcheck (its own finite differences) and against
    autograd of the same formula, log(1 + e^x), with a non-uniform upstream gradient."""
    function = SmoothReLUIgnoringUpstream if fault == "backward-ignores-upstream" else SmoothReLU
    passed = torch.autograd.gradcheck(function.apply, (point,), eps=1e-6, atol=1e-7,
                                      raise_exception=False)
    (custom_gradient,) = torch.autograd.grad((function.apply(point) * upstream).sum(), point)
    (builtin_gradient,) = torch.autograd.grad((torch.log1p(torch.exp(point)) * upstream).sum(), point)
    return {"custom_function_gradcheck_passed": float(passed),
            "custom_function_vs_autograd_max_abs": max_abs(custom_gradient, builtin_gradient)}


def measure_no_grad(weights, inputs, l2: float, fault: str) -> dict[str, float]:
    """torch.no_grad() records no graph: the output has no grad_fn, autograd saves no tensor
    for a backward pass (counted by saved_tensors_hooks), and backward() through it fails."""
    saved = []

    def pack(tensor):
        saved.append(tensor.shape)
        return tensor

    mode = torch.enable_grad() if fault == "no-grad-missing" else torch.no_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), mode:
        untracked = tanh_loss(weights, inputs, l2)
    try:
        untracked.backward()
        backward_failed = 0.0
    except RuntimeError as error:  # "element 0 of tensors does not require grad and does not have a grad_fn"
        if "does not require grad" not in str(error):
            raise
        backward_failed = 1.0
    weights.grad = None
    return {"no_grad_output_has_grad_fn": float(untracked.grad_fn is not None),
            "no_grad_backward_failed": backward_failed,
            "no_grad_saved_tensors": len(saved)}


def measure_retain_graph(weights, inputs, l2: float, fault: str) -> dict[str, float]:
    """The graph's saved tensors are freed by backward(): a second one fails unless the first
    kept them (retain_graph=True); then the gradients accumulate to exactly twice the first."""
    weights.grad = None
    loss = tanh_loss(weights, inputs, l2)
    loss.backward(retain_graph=fault == "retain-graph-first")
    try:
        loss.backward()
        second_failed = 0.0
    except RuntimeError as error:  # "Trying to backward through the graph a second time"
        if "second time" not in str(error):
            raise
        second_failed = 1.0
    weights.grad = None
    loss = tanh_loss(weights, inputs, l2)
    loss.backward(retain_graph=True)
    first_gradient = weights.grad.clone()
    if fault == "grad-zeroed-between":  # as optimizer.zero_grad() would: nothing accumulates
        weights.grad = None
    loss.backward()  # gradients accumulate into .grad: twice the first one
    error = max_abs(weights.grad, 2 * first_gradient)
    weights.grad = None
    return {"second_backward_without_retain_failed": second_failed,
            "retain_graph_accumulation_error": error}


def measure_accumulation(weights, inputs, targets, micro_batches: int, fault: str) -> dict[str, float]:
    """Gradients accumulated over micro-batches, each loss divided by their number, equal the
    gradient of the whole batch's mean loss."""
    weights.grad = None
    divisor = 1 if fault == "unscaled-micro-batches" else micro_batches
    for chunk, chunk_targets in zip(inputs.chunk(micro_batches), targets.chunk(micro_batches)):
        (((chunk @ weights - chunk_targets) ** 2).mean() / divisor).backward()
    accumulated = weights.grad.clone()
    weights.grad = None
    (full_batch,) = torch.autograd.grad(((inputs @ weights - targets) ** 2).mean(), weights)
    return {"accumulated_vs_full_batch_max_abs": max_abs(accumulated, full_batch)}


def run(ctx, *, samples: int, features: int, l2: float, step: float, micro_batches: int,
        weight_scale: float = 0.5, fault: str = "none") -> dict[str, float]:
    """Scenario entry: every autograd figure against its independent reference."""
    if samples % micro_batches:
        raise ValueError(f"samples ({samples}) must be divisible by micro_batches ({micro_batches})")
    rng = ctx.rng()
    inputs = torch.tensor(rng.normal(size=(samples, features)), dtype=torch.float64)
    targets = torch.tensor(rng.normal(size=samples), dtype=torch.float64)
    weights = torch.tensor(rng.normal(scale=1.0, size=features) * weight_scale, dtype=torch.float64,
                           requires_grad=True)
    point = torch.tensor(rng.normal(scale=2.0, size=samples), dtype=torch.float64, requires_grad=True)
    return {
        **measure_gradient(weights, inputs, l2, step, fault),
        **measure_custom_function(point, targets, fault),
        **measure_no_grad(weights, inputs, l2, fault),
        **measure_retain_graph(weights, inputs, l2, fault),
        **measure_accumulation(weights, inputs, targets, micro_batches, fault),
    }
