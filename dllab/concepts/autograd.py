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


def run(ctx, *, samples: int, features: int, l2: float, step: float, micro_batches: int) -> dict[str, float]:
    """Scenario entry: every autograd figure against its independent reference."""
    if samples % micro_batches:
        raise ValueError(f"samples ({samples}) must be divisible by micro_batches ({micro_batches})")
    rng = ctx.rng()
    inputs = torch.tensor(rng.normal(size=(samples, features)), dtype=torch.float64)
    targets = torch.tensor(rng.normal(size=samples), dtype=torch.float64)
    weights = torch.tensor(rng.normal(scale=0.5, size=features), dtype=torch.float64, requires_grad=True)

    # 1. Autograd against the hand-derived gradient and against finite differences.
    loss = tanh_loss(weights, inputs, l2)
    loss.backward()
    autograd_gradient = weights.grad.clone()
    analytic = tanh_loss_gradient(weights.detach(), inputs, l2)
    numeric = central_differences(lambda w: tanh_loss(w, inputs, l2), weights.detach(), step)

    # 2. A custom Function: gradcheck (its own finite differences) and autograd of the same formula.
    point = torch.tensor(rng.normal(scale=2.0, size=samples), dtype=torch.float64, requires_grad=True)
    gradcheck_passed = torch.autograd.gradcheck(SmoothReLU.apply, (point,), eps=1e-6, atol=1e-7,
                                                raise_exception=False)
    (custom_gradient,) = torch.autograd.grad((SmoothReLU.apply(point) * targets).sum(), point)
    (builtin_gradient,) = torch.autograd.grad((torch.log1p(torch.exp(point)) * targets).sum(), point)

    # 3. no_grad records no graph: the output has no grad_fn and backward() through it fails.
    with torch.no_grad():
        untracked = tanh_loss(weights, inputs, l2)
    try:
        untracked.backward()
        no_grad_backward_failed = 0.0
    except RuntimeError:
        no_grad_backward_failed = 1.0

    # 4. The graph's saved tensors are freed after backward(): a second one fails unless retained.
    weights.grad = None
    loss = tanh_loss(weights, inputs, l2)
    loss.backward()
    try:
        loss.backward()
        second_backward_failed = 0.0
    except RuntimeError:  # "Trying to backward through the graph a second time"
        second_backward_failed = 1.0
    weights.grad = None
    loss = tanh_loss(weights, inputs, l2)
    loss.backward(retain_graph=True)
    first_gradient = weights.grad.clone()
    loss.backward()  # gradients accumulate into .grad: twice the first one
    retained_error = max_abs(weights.grad, 2 * first_gradient)

    # 5. Accumulating micro-batch gradients (each loss scaled by 1/k) equals the full-batch gradient.
    weights.grad = None
    for chunk, chunk_targets in zip(inputs.chunk(micro_batches), targets.chunk(micro_batches)):
        chunk_loss = ((chunk @ weights - chunk_targets) ** 2).mean() / micro_batches
        chunk_loss.backward()
    accumulated = weights.grad.clone()
    (full_batch,) = torch.autograd.grad(((inputs @ weights - targets) ** 2).mean(), weights)

    return {
        "autograd_vs_analytic_max_abs": max_abs(autograd_gradient, analytic),
        "autograd_vs_finite_differences_max_abs": max_abs(autograd_gradient, numeric),
        "gradient_norm": float(analytic.norm()),
        "custom_function_gradcheck_passed": float(gradcheck_passed),
        "custom_function_vs_autograd_max_abs": max_abs(custom_gradient, builtin_gradient),
        "no_grad_output_has_grad_fn": float(untracked.grad_fn is not None),
        "no_grad_backward_failed": no_grad_backward_failed,
        "no_grad_value_difference": abs(float(untracked) - float(tanh_loss(weights, inputs, l2).detach())),
        "second_backward_without_retain_failed": second_backward_failed,
        "retain_graph_accumulation_error": retained_error,
        "accumulated_vs_full_batch_max_abs": max_abs(accumulated, full_batch),
    }

