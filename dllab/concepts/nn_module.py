"""`nn.Module`, `nn.ModuleList`, custom layers and models in PyTorch (seed questions 11, 14, 40).

PyTorch has no `Layer` or `LayerList` class: every layer and every model is an `nn.Module`, and a
list of sub-modules is an `nn.ModuleList`. Assigning a module (or `nn.Parameter`) as an attribute
*registers* it, so `parameters()`, `state_dict()`, `.to()` / `.double()` and the optimizer see it.
A plain Python list hides its layers from all of these: they still compute and still receive
gradients in `backward()`, but the optimizer never updates them and a checkpoint never saves them.

Measured here on two otherwise identical models (same initial weights), one holding its hidden
layers in a Python list and one in an `nn.ModuleList`; then a custom layer (RMS normalization
written by hand) against `torch.nn.RMSNorm`, and a custom model built from it that trains.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class StackWithPythonList(nn.Module):
    """The mistake: hidden layers kept in a Python list are not registered. (`detach_hidden`
    is another mistake, for a negative control: the hidden outputs cut out of the graph.)"""

    def __init__(self, sizes: list[int], detach_hidden: bool = False):
        super().__init__()
        self.hidden = [nn.Linear(a, b) for a, b in zip(sizes[:-2], sizes[1:-1])]
        self.output = nn.Linear(sizes[-2], sizes[-1])
        self.detach_hidden = detach_hidden

    def forward(self, x):
        for layer in self.hidden:
            x = torch.tanh(layer(x))
        return self.output(x.detach() if self.detach_hidden else x)


class StackWithModuleList(StackWithPythonList):
    """The fix: the same layers in an nn.ModuleList are registered sub-modules."""

    def __init__(self, sizes: list[int], detach_hidden: bool = False):
        super().__init__(sizes, detach_hidden)
        self.hidden = nn.ModuleList(self.hidden)


class RMSNormalization(nn.Module):
    """A custom layer: y = x / sqrt(mean(x^2) + eps) * gain, with a learned per-feature gain.
    `dim` is the axis averaged over: the features (-1); 0 is the mistake of averaging over the batch."""

    def __init__(self, features: int, eps: float = 1e-6, dim: int = -1):
        super().__init__()
        self.eps, self.dim = eps, dim
        self.gain = nn.Parameter(torch.ones(features))  # an nn.Parameter attribute is registered

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=self.dim, keepdim=True) + self.eps) * self.gain


class ResidualRegressor(nn.Module):
    """A custom model: residual blocks of Linear -> RMSNormalization -> tanh in an nn.ModuleList."""

    def __init__(self, features: int, width: int, blocks: int, squeeze: bool = True):
        super().__init__()
        self.squeeze = squeeze  # False: the mistake of an (n, 1) output against (n,) targets
        self.embed = nn.Linear(features, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), RMSNormalization(width), nn.Tanh()) for _ in range(blocks))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = x + block(x)
        output = self.head(x)
        return output.squeeze(-1) if self.squeeze else output


def parameter_count(modules) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


FAULTS = ("none", "python-list-registered", "module-list-unregistered", "weights-not-copied",
          "hidden-outputs-detached", "rms-over-batch", "output-not-squeezed")


def build_pair(sizes: list[int], fault: str):
    """The Python-list model and the ModuleList model, the second a copy of the first's weights."""
    detach = fault == "hidden-outputs-detached"
    with_list = (StackWithModuleList if fault == "python-list-registered" else StackWithPythonList)(sizes, detach)
    with_module_list = (StackWithPythonList if fault == "module-list-unregistered" else StackWithModuleList)(sizes, detach)
    if fault != "weights-not-copied":
        for source, target in zip([*with_list.hidden, with_list.output],
                                  [*with_module_list.hidden, with_module_list.output]):
            target.load_state_dict(source.state_dict())
    return with_list, with_module_list


def measure_registration(with_list, with_module_list, sizes: list[int], inputs) -> dict[str, float]:
    """parameters() and state_dict() of each model against a count made layer by layer: the
    Python list's layers are missing, exactly; the two models start from the same function."""
    true_count = parameter_count([*with_list.hidden, with_list.output])  # counted layer by layer
    hidden_count = parameter_count(with_list.hidden)
    layer_tensors = 2 * (len(sizes) - 1)  # a weight and a bias per Linear layer
    with torch.no_grad():
        initial_difference = float((with_list(inputs) - with_module_list(inputs)).abs().max())
    return {
        "true_parameter_count": true_count,
        "module_list_count_error": abs(parameter_count([with_module_list]) - true_count),
        "python_list_unregistered": true_count - parameter_count([with_list]),
        "python_list_unregistered_minus_hidden": true_count - parameter_count([with_list]) - hidden_count,
        "module_list_state_dict_missing": layer_tensors - len(with_module_list.state_dict()),
        "python_list_state_dict_missing_minus_hidden":
            layer_tensors - len(with_list.state_dict()) - 2 * len(with_list.hidden),
        "initial_output_max_abs_diff": initial_difference,
    }


def measure_optimizer_step(with_list, with_module_list, inputs, targets, learning_rate: float) -> dict[str, float]:
    """After backward() the list-held layers have gradients, yet one SGD step over parameters()
    leaves them unchanged; .double() leaves them float32."""
    changes, gradient_norms = {}, {}
    for name, model in (("python_list", with_list), ("module_list", with_module_list)):
        before = [layer.weight.detach().clone() for layer in model.hidden]
        optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        gradient_norms[name] = sum(float(layer.weight.grad.norm()) if layer.weight.grad is not None else 0.0
                                   for layer in model.hidden)
        optimizer.step()
        changes[name] = max(float((b - layer.weight.detach()).abs().max()) for b, layer in zip(before, model.hidden))
    with_list.double()  # .to()/.double() reach registered modules only
    left_float32 = sum(layer.weight.dtype == torch.float32 for layer in with_list.hidden) / len(with_list.hidden)
    return {"python_list_hidden_gradient_norm": gradient_norms["python_list"],
            "python_list_hidden_weight_change": changes["python_list"],
            "module_list_hidden_weight_change": changes["module_list"],
            "python_list_hidden_left_float32_fraction": left_float32}


def measure_custom_layer(features: int, samples: int, fault: str) -> dict[str, float]:
    """The custom RMS normalization against PyTorch's own nn.RMSNorm (float64): output and the
    gradients for the input and the gain."""
    custom = RMSNormalization(features, dim=0 if fault == "rms-over-batch" else -1).double()
    builtin = nn.RMSNorm(features, eps=1e-6).double()
    with torch.no_grad():
        custom.gain.uniform_(0.5, 1.5)
        builtin.weight.copy_(custom.gain)
    x = torch.randn(samples, features, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(samples, features, dtype=torch.float64)
    custom_out, builtin_out = custom(x), builtin(x)  # kept with their graphs for the gradients below
    custom_grads = torch.autograd.grad(custom_out, (x, custom.gain), upstream)
    builtin_grads = torch.autograd.grad(builtin_out, (x, builtin.weight), upstream)
    return {
        "custom_layer_vs_builtin_output_max_abs": float((custom_out - builtin_out).detach().abs().max()),
        "custom_layer_vs_builtin_input_grad_max_abs": float((custom_grads[0] - builtin_grads[0]).abs().max()),
        "custom_layer_vs_builtin_gain_grad_max_abs": float((custom_grads[1] - builtin_grads[1]).abs().max()),
    }


def measure_custom_model(ctx, features: int, samples: int, width: int, blocks: int, steps: int,
                         fault: str) -> dict[str, float]:
    """A custom model built from the custom layer trains: its MSE falls well below the initial."""
    regressor = ResidualRegressor(features, width, blocks, squeeze=fault != "output-not-squeezed")
    data = torch.randn(samples, features)
    labels = torch.sin(data.sum(dim=1)) + 0.5 * data[:, 0]  # a fixed nonlinear target
    optimizer = torch.optim.Adam(regressor.parameters(), lr=1e-2)

    def per_sample_mse() -> float:  # judged per sample, whatever shape the model returns
        with torch.no_grad():
            return float(((regressor(data).reshape(-1) - labels) ** 2).mean())

    initial = per_sample_mse()
    for step in range(steps):
        optimizer.zero_grad()
        with warnings.catch_warnings():  # the broadcasting warning of the control's mistake
            warnings.simplefilter("ignore", UserWarning)
            loss = nn.functional.mse_loss(regressor(data), labels)
        loss.backward()
        optimizer.step()
        ctx.log_scalar("losses/custom_model_mse", float(loss.detach()), step)
    return {"custom_model_parameters": parameter_count([regressor]),
            "custom_model_loss_ratio": per_sample_mse() / initial}


def run(ctx, *, sizes: list, samples: int, width: int, blocks: int, steps: int,
        learning_rate: float, fault: str = "none") -> dict[str, float]:
    """Scenario entry: registration measured by counts and by an optimizer step; custom layer and model."""
    if len(sizes) < 3:
        raise ValueError(f"sizes needs an input, at least one hidden and an output size, got {sizes}")
    with_list, with_module_list = build_pair(sizes, fault)
    inputs = torch.randn(samples, sizes[0])
    targets = torch.randn(samples, sizes[-1])
    return {
        **measure_registration(with_list, with_module_list, sizes, inputs),
        **measure_optimizer_step(with_list, with_module_list, inputs, targets, learning_rate),
        "torch_nn_has_layer_or_layerlist": float(hasattr(nn, "Layer") or hasattr(nn, "LayerList")),
        **measure_custom_layer(sizes[0], samples, fault),
        **measure_custom_model(ctx, sizes[0], samples, width, blocks, steps, fault),
    }
