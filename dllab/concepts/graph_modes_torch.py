"""Eager execution and graph capture in PyTorch (seed questions 4, 34), checked by measurement.

PyTorch runs eagerly: each op executes when Python reaches it. It also captures graphs, three
ways, each measured here with the same names as `graph_modes_tf`:

- `torch.fx.symbolic_trace` runs the function once on proxies and records a `GraphModule`: the
  intermediate values are symbolic while tracing, the Python body runs once, and the module then
  runs without it; it cannot follow data-dependent control flow (it raises);
- `torch.compile` (TorchDynamo) captures graphs from Python bytecode and hands them to a backend
  (inductor generates C++); it compiles again for new input shapes: one graph per shape with
  `dynamic=False`, two with the default (the second shape turns on dynamic shapes), one with
  `dynamic=True`. A counting backend counts the compilations; with `fullgraph=True` reading an
  intermediate value as Python numbers fails (`torch._dynamo.exc.Unsupported`);
- `torch.jit.script` (TorchScript) compiles Python source, keeping an `if` on a tensor value as
  `prim::If` in one graph; `torch.compile` instead breaks the graph at such an `if`, lets Python
  decide, and goes on capturing (both give the eager answer on both branches).

Every captured graph gives the eager result; the speed ratios against eager are volatile.
`fault` injects one mistake for a negative control (see the scenario file); "none" is the
correct program.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from dllab.timing import time_calls

FAULTS = ("none", "deferred-default", "graph-breaks-allowed", "capture-disabled", "call-the-untraced-function",
          "stale-captured-weights", "branch-fixed-at-trace")


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


def concrete_values(tensor) -> np.ndarray | None:
    """The tensor's numbers if it holds any (a computed CPU/GPU tensor), else None (a proxy or a
    meta tensor: shapes and ops only, values not computed)."""
    if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
        return None
    return tensor.detach().cpu().numpy()


class CountingBackend:
    """A torch.compile backend that counts the graphs handed to it, then lets `backend` compile them."""

    def __init__(self, backend: str):
        self.backend = torch._dynamo.lookup_backend(backend)
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return self.backend(graph_module, example_inputs)


def measure_default_mode(inputs: np.ndarray, fault: str) -> dict[str, float]:
    """Questions 4 and 30: with no wrapper, each op has computed its value when Python goes on.
    Measured: a top-level op's value equals numpy; a function reads its intermediate value as
    Python numbers; each of three calls runs the body and returns the right numbers."""
    device = "meta" if fault == "deferred-default" else "cpu"  # meta: shapes only, nothing computed
    read_ok, body_runs = [], []

    def probe(x):
        body_runs.append(1)
        hidden = x * 2.0
        try:
            read_ok.append(np.allclose(hidden.tolist(), 2.0 * concrete_values(x)))
        except (RuntimeError, TypeError):  # "Tensor.item() cannot be called on meta tensors"
            read_ok.append(False)
        return hidden + 1.0

    top_level = concrete_values(torch.ones(2, device=device) * 3)
    correct_calls = 0
    for call in range(3):
        values = inputs + call
        before = len(body_runs)
        result = concrete_values(probe(torch.from_numpy(values).to(device)))
        correct_calls += len(body_runs) > before and result is not None and np.allclose(result, 2 * values + 1)
    return {
        "eager_by_default": float(top_level is not None and top_level.tolist() == [3.0, 3.0]),
        "intermediate_value_readable_eager": float(all(read_ok) and bool(read_ok)),
        "python_body_runs_eager": correct_calls,
    }


def measure_graph_reading(inputs: torch.Tensor, backend: str, fault: str) -> dict[str, float]:
    """Inside a captured graph an intermediate value is symbolic: `torch.fx` hands the body a
    Proxy (`tolist()` gives another Proxy, no numbers), and `torch.compile(fullgraph=True)`
    refuses to read it (Unsupported). The body runs once, while fx traces, not on the 3 calls."""
    readable, body_runs = [], []

    def probe(x):
        body_runs.append(1)
        hidden = x * 2.0
        values = hidden.tolist()
        readable.append(isinstance(values, list) and np.allclose(values, 2.0 * inputs.numpy()))
        return hidden + 1.0

    traced = torch.fx.symbolic_trace(probe)  # runs the body once, on a proxy
    call = probe if fault == "call-the-untraced-function" else traced
    for _ in range(3):
        call(inputs)
    graph_runs = len(body_runs)
    torch.compiler.reset()
    # fullgraph=False lets TorchDynamo fall back to Python at the read (a graph break).
    compiled = torch.compile(probe, fullgraph=fault != "graph-breaks-allowed", backend=backend)
    readable.clear()
    try:
        compiled(inputs)
        compile_read = bool(readable) and all(readable)
    except torch._dynamo.exc.Unsupported as error:  # "Tensor.tolist() with non-integer tensor"
        if "tolist" not in str(error):
            raise
        compile_read = False
    fx_read = False  # what the traced body saw, re-measured on one more trace
    readable.clear()
    torch.fx.symbolic_trace(probe)
    fx_read = bool(readable) and all(readable)
    return {"intermediate_value_readable_graph": float(compile_read or fx_read),
            "python_body_runs_graph": graph_runs}


def measure_graph_equals_eager(inputs, weights, biases, backend: str, repeats: int,
                               fault: str) -> dict[str, float]:
    """Question 34: torch.compile, TorchScript and torch.fx give the eager result; speed ratios
    eager/graph (volatile). fx and compile capture the weights as constants of the graph."""
    def network(x):  # the weights are captured, as in graph_modes_tf
        return deep_network(x, weights, biases)

    torch.compiler.reset()
    compiled_network = torch.compile(network, backend=backend)
    scripted = torch.jit.script(deep_network)  # TorchScript takes the weights as arguments

    def scripted_network(x):
        return scripted(x, weights, biases)

    fx_network = torch.fx.symbolic_trace(network)
    with torch.no_grad():
        compiled_network(inputs)  # the capture happens on the first call
        if fault == "stale-captured-weights":  # new weights after capture: the graphs keep the old
            weights[:] = [weight * 1.5 for weight in weights]
        eager_result = network(inputs)
        difference = max(float((graph(inputs) - eager_result).abs().max())
                         for graph in (compiled_network, scripted_network, fx_network))
        eager_time = time_calls(network, (inputs,), repeats)
        graph_time = time_calls(compiled_network, (inputs,), repeats)
        script_time = time_calls(scripted_network, (inputs,), repeats)
    return {"graph_vs_eager_max_abs_diff": difference, "eager_ms_per_call": 1000 * eager_time,
            "graph_ms_per_call": 1000 * graph_time, "graph_speedup": eager_time / graph_time,
            "script_speedup": eager_time / script_time}


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


def measure_control_flow(rng, width: int, backend: str, fault: str) -> dict[str, float]:
    """An `if` on a tensor's value: TorchScript keeps it as prim::If in one graph, torch.compile
    breaks the graph there, torch.fx raises; both modes that run give the eager answer on both
    signs. (`torch.jit.trace` would record only the branch its example took.)"""
    example = torch.ones(4, width)
    if fault == "branch-fixed-at-trace":  # tracing records the branch the example input took
        scripted = torch.jit.trace(signed_scale_python, example)
    else:
        scripted = signed_scale
    torch.compiler.reset()
    compiled_scale = torch.compile(signed_scale_python, backend=backend)  # a graph break at the if
    control_error, branches = 0.0, set()
    for sign in (1.0, -1.0):
        values = sign * np.abs(rng.normal(size=(4, width))).astype(np.float32)
        output = scripted(torch.from_numpy(values)).numpy()
        compiled_output = compiled_scale(torch.from_numpy(values)).numpy()
        control_error = max(control_error, float(np.abs(output - signed_scale_numpy(values)).max()),
                            float(np.abs(compiled_output - signed_scale_numpy(values)).max()))
        branches.add("double" if np.array_equal(output, 2 * values) else
                     "negate" if np.array_equal(output, -values) else "neither")
    graph_breaks = torch._dynamo.explain(signed_scale_python)(example).graph_break_count
    concrete = {"inputs": example} if fault == "branch-fixed-at-trace" else None
    try:
        torch.fx.symbolic_trace(signed_scale_python, concrete_args=concrete)
        fx_rejects = 0.0
    except torch.fx.proxy.TraceError as error:  # "symbolically traced variables cannot be used
        if "control flow" not in str(error):  # as inputs to control flow"
            raise
        fx_rejects = 1.0
    return {
        "control_flow_max_abs_diff": control_error,
        "control_flow_branches_taken": len(branches - {"neither"}),
        "control_flow_in_one_graph": float("prim::If" in str(scripted.graph)),
        "compile_graph_breaks_at_if": graph_breaks,
        "fx_rejects_data_dependent_if": fx_rejects,
    }


def run(ctx, *, layers: int, width: int, batch: int, repeats: int, shapes: list[int],
        compile_backend: str, fault: str = "none") -> dict[str, float]:
    if len(set(shapes)) < 3:
        raise ValueError(f"need at least 3 distinct shapes, got {shapes}")
    if fault not in FAULTS:
        raise ValueError(f"fault {fault!r} does not apply to PyTorch (one of {', '.join(FAULTS)})")
    if compile_backend not in torch.compiler.list_backends(exclude_tags=()):
        raise ValueError(f"unknown torch.compile backend {compile_backend!r}: "
                         f"one of {', '.join(torch.compiler.list_backends(exclude_tags=()))}")
    rng = ctx.rng()
    inputs = torch.from_numpy(rng.normal(size=(batch, width)).astype(np.float32))
    weights = [torch.from_numpy((rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32))
               for _ in range(layers)]
    biases = [torch.from_numpy(rng.normal(size=width).astype(np.float32) * 0.1) for _ in range(layers)]
    # The switch TORCHDYNAMO_DISABLE=1 sets: torch.compile then runs the function eagerly.
    disabled = torch._dynamo.config.patch(disable=True) if fault == "capture-disabled" \
        else contextlib.nullcontext()
    metrics = {
        **measure_default_mode(inputs.numpy(), fault),
        **measure_graph_reading(inputs, compile_backend, fault),
        **measure_graph_equals_eager(inputs, weights, biases, compile_backend, repeats, fault),
    }
    with disabled:
        metrics.update(compile_counts(shapes, width, compile_backend))
    return {**metrics, **measure_control_flow(rng, width, compile_backend, fault)}
