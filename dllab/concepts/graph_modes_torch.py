"""Eager execution and graph capture in PyTorch (seed questions 4, 34), checked by measurement.

PyTorch runs eagerly: each op executes when Python reaches it. It also captures graphs, three
ways, each measured here with the same names as `graph_modes_tf`:

- `torch.fx.symbolic_trace` runs the function once on proxies and records a `GraphModule`: the
  intermediate values are symbolic while tracing, the Python body runs once, and the module then
  runs without it; it cannot follow data-dependent control flow (it raises);
- `torch.compile` (TorchDynamo) captures graphs from Python bytecode and hands them to a backend
  (inductor generates C++); it compiles again for new input shapes: one graph per shape with
  `dynamic=False`, two with the default (the second shape turns on dynamic shapes), one with
  `dynamic=True`. A counting backend counts the compilations;
- `torch.jit.script` (TorchScript) compiles Python source, keeping an `if` on a tensor value as
  `prim::If` in one graph; `torch.compile` instead breaks the graph at such an `if`, lets Python
  decide, and goes on capturing (both give the eager answer on both branches).

Every captured graph gives the eager result; the speed ratios against eager are volatile.
"""

from __future__ import annotations

import numpy as np
import torch

from dllab.timing import time_calls


def deep_network(inputs, weights: list[torch.Tensor], biases: list[torch.Tensor]):
    """tanh(x W + b), layer after layer: many small ops, where Python's overhead shows."""
    hidden = inputs
    for weight, bias in zip(weights, biases):
        hidden = torch.tanh(hidden @ weight + bias)
    return (hidden * hidden).sum(dim=1)


@torch.jit.script
def signed_scale(inputs: torch.Tensor) -> torch.Tensor:
    """Data-dependent control flow: the branch depends on the values, not the shapes."""
    if bool(inputs.sum() > 0):
        return inputs * 2.0
    return -inputs


def signed_scale_python(inputs):
    """The same `if` in plain Python: what torch.fx tries (and fails) to trace."""
    if inputs.sum() > 0:
        return inputs * 2.0
    return -inputs


def signed_scale_numpy(inputs: np.ndarray) -> np.ndarray:
    return inputs * 2.0 if inputs.sum() > 0 else -inputs


class CountingBackend:
    """A torch.compile backend that counts the graphs handed to it, then lets `backend` compile them."""

    def __init__(self, backend: str):
        self.backend = torch._dynamo.lookup_backend(backend)
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return self.backend(graph_module, example_inputs)


def compile_counts(shapes: list[int], features: int, backend: str) -> dict[str, float]:
    """How many compilations each `dynamic=` setting needs for the batch sizes in `shapes`."""
    def square_sum(inputs):
        return (inputs * inputs).sum()

    counts = {}
    for name, dynamic in (("traces_per_new_shape", False), ("traces_automatic", None),
                          ("traces_with_shape_relaxed", True)):
        torch.compiler.reset()  # forget graphs compiled for the previous setting
        counter = CountingBackend(backend)
        compiled = torch.compile(square_sum, backend=counter, dynamic=dynamic)
        for batch in shapes:
            compiled(torch.ones(batch, features))
        counts[name] = counter.graphs
    return counts


def run(ctx, *, layers: int, width: int, batch: int, repeats: int, shapes: list[int],
        compile_backend: str) -> dict[str, float]:
    if layers < 1 or len(set(shapes)) < 3:
        raise ValueError(f"need layers >= 1 and at least 3 distinct shapes, got {layers} and {shapes}")
    if compile_backend not in torch.compiler.list_backends(exclude_tags=()):
        raise ValueError(f"unknown torch.compile backend {compile_backend!r}: "
                         f"one of {', '.join(torch.compiler.list_backends(exclude_tags=()))}")
    rng = ctx.rng()
    inputs = torch.from_numpy(rng.normal(size=(batch, width)).astype(np.float32))
    weights = [torch.from_numpy((rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32))
               for _ in range(layers)]
    biases = [torch.from_numpy(rng.normal(size=width).astype(np.float32) * 0.1) for _ in range(layers)]

    # Eager: an op called at top level has computed its value when the call returns.
    eager_by_default = float(not torch.compiler.is_compiling() and (torch.ones(2) * 3).tolist() == [3.0, 3.0])
    readable, body_runs = {}, []

    def probe(x):
        body_runs.append(1)
        hidden = x * 2.0
        readable["traced" if isinstance(hidden, torch.fx.Proxy) else "eager"] = not isinstance(hidden, torch.fx.Proxy)
        return hidden + 1.0

    for _ in range(3):
        probe(inputs)
    eager_runs = len(body_runs)
    body_runs.clear()
    traced = torch.fx.symbolic_trace(probe)  # runs the body once, on a proxy
    for _ in range(3):
        traced(inputs)
    graph_runs = len(body_runs)

    def network(x):  # the weights are captured, as in graph_modes_tf
        return deep_network(x, weights, biases)

    torch.compiler.reset()
    compiled_network = torch.compile(network, backend=compile_backend)
    scripted = torch.jit.script(deep_network)  # TorchScript takes the weights as arguments

    def scripted_network(x):
        return scripted(x, weights, biases)

    fx_network = torch.fx.symbolic_trace(network)
    with torch.no_grad():
        eager_result = network(inputs)
        difference = max(float((graph(inputs) - eager_result).abs().max())
                         for graph in (compiled_network, scripted_network, fx_network))
        eager_time = time_calls(network, (inputs,), repeats)
        graph_time = time_calls(compiled_network, (inputs,), repeats)
        script_time = time_calls(scripted_network, (inputs,), repeats)

    torch.compiler.reset()
    compiled_scale = torch.compile(signed_scale_python, backend=compile_backend)  # a graph break at the if
    control_error, branches = 0.0, set()
    for sign in (1.0, -1.0):
        values = sign * np.abs(rng.normal(size=(4, width))).astype(np.float32)
        output = signed_scale(torch.from_numpy(values)).numpy()
        compiled_output = compiled_scale(torch.from_numpy(values)).numpy()
        control_error = max(control_error, float(np.abs(output - signed_scale_numpy(values)).max()),
                            float(np.abs(compiled_output - signed_scale_numpy(values)).max()))
        branches.add("double" if np.array_equal(output, 2 * values) else
                     "negate" if np.array_equal(output, -values) else "neither")
    graph_breaks = torch._dynamo.explain(signed_scale_python)(torch.ones(4, width)).graph_break_count
    try:
        torch.fx.symbolic_trace(signed_scale_python)
        fx_rejects = 0.0
    except torch.fx.proxy.TraceError:
        fx_rejects = 1.0

    return {
        "eager_by_default": eager_by_default,
        "intermediate_value_readable_eager": float(readable["eager"]),
        "intermediate_value_readable_graph": float(readable["traced"]),
        "python_body_runs_eager": eager_runs,
        "python_body_runs_graph": graph_runs,
        "graph_vs_eager_max_abs_diff": difference,
        "eager_ms_per_call": 1000 * eager_time,
        "graph_ms_per_call": 1000 * graph_time,
        "graph_speedup": eager_time / graph_time,
        "script_speedup": eager_time / script_time,
        **compile_counts(shapes, width, compile_backend),
        "control_flow_max_abs_diff": control_error,
        "control_flow_branches_taken": len(branches - {"neither"}),
        "control_flow_in_one_graph": float("prim::If" in str(signed_scale.graph)),
        "compile_graph_breaks_at_if": graph_breaks,
        "fx_rejects_data_dependent_if": fx_rejects,
    }
