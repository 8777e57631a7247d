"""Eager execution and graphs in TensorFlow 2 (seed questions 4, 30, 45), checked by measurement.

TensorFlow 2 runs eagerly by default: each op executes when Python reaches it and its value can
be read at once. `tf.function` traces the Python function once per input signature into a graph
and then runs the graph without Python. Measured here, with the same names as
`graph_modes_torch`:

- eager is the default, and an intermediate value is readable at once in eager code but is only a
  symbolic tensor inside a traced function (nothing is "delayed" in eager mode);
- the Python body runs on every eager call but only once per trace in a `tf.function`;
- the graph gives the eager result, and its speed ratio against eager on a small deep network
  (volatile: the CPU is shared);
- retracing: one trace per new input shape, two with `reduce_retracing=True` (it generalizes the
  shape after the second), one with an `input_signature` whose batch dimension is None;
- data-dependent control flow: a Python `if` on a tensor becomes a `tf.cond` (AutoGraph) inside
  one graph, which takes both branches correctly.

`fault` injects one mistake for a negative control (see the scenario file); "none" is the
correct program.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from dllab.timing import time_calls

FAULTS = ("none", "deferred-default", "functions-run-eagerly", "stale-captured-weights",
          "branch-fixed-at-trace")


def deep_network(inputs, weights, biases):
    """tanh(x W + b), layer after layer: many small ops, where Python's overhead shows."""
    hidden = inputs
    for weight, bias in zip(weights, biases):
        hidden = tf.tanh(hidden @ weight + bias)
    return tf.reduce_sum(hidden * hidden, axis=1)


def signed_scale(inputs):
    """Data-dependent control flow: the branch depends on the values, not the shapes."""
    if tf.reduce_sum(inputs) > 0:
        return inputs * 2.0
    return -inputs


def signed_scale_by_shape(inputs):
    """The mistake: a condition on the static shape is a Python bool while tracing, so the
    graph holds one branch only."""
    if inputs.shape[0] > 0:
        return inputs * 2.0
    return -inputs


def signed_scale_numpy(inputs: np.ndarray) -> np.ndarray:
    return inputs * 2.0 if inputs.sum() > 0 else -inputs


def concrete_values(tensor) -> np.ndarray | None:
    """The tensor's numbers if it has any (an eager tensor), else None (a symbolic graph tensor)."""
    try:
        return tensor.numpy()
    except (AttributeError, NotImplementedError):  # a graph tensor has no value yet
        return None


def measure_default_mode(inputs: np.ndarray, fault: str) -> dict[str, float]:
    """Questions 4 and 30: with no wrapper, each op has computed its value when Python goes on.
    Measured: a top-level op's value equals numpy; a function reads its intermediate value;
    each of three calls runs the body and returns the right numbers."""
    # The mistake: TF 1's default, every op added to a graph that runs later in a Session.
    mode = tf.Graph().as_default() if fault == "deferred-default" else contextlib.nullcontext()
    read_ok, body_runs = [], []

    def probe(x):
        body_runs.append(1)
        hidden = x * 2.0
        values = concrete_values(hidden)
        read_ok.append(values is not None and np.allclose(values, 2.0 * np.asarray(x)))
        return hidden + 1.0

    with mode:
        top_level = concrete_values(tf.ones(2) * 3)
        correct_calls = 0
        for call in range(3):
            values = (inputs + call).astype(np.float32)
            before = len(body_runs)
            result = concrete_values(probe(tf.convert_to_tensor(values)))
            correct_calls += len(body_runs) > before and result is not None \
                and np.allclose(result, 2 * values + 1)
        eager = tf.executing_eagerly()
    return {
        "eager_by_default": float(eager and top_level is not None and top_level.tolist() == [3.0, 3.0]),
        "intermediate_value_readable_eager": float(bool(read_ok) and all(read_ok)),
        "python_body_runs_eager": correct_calls,
    }


def measure_graph_reading(inputs: tf.Tensor) -> dict[str, float]:
    """Inside tf.function an intermediate is a symbolic tensor (no `.numpy()`), and the Python
    body runs once, while tracing, not on each of three calls."""
    readable, body_runs = [], []

    def probe(x):
        body_runs.append(1)
        hidden = x * 2.0
        values = concrete_values(hidden)
        readable.append(values is not None and np.allclose(values, 2.0 * inputs.numpy()))
        return hidden + 1.0

    graph_probe = tf.function(probe)
    for _ in range(3):
        graph_probe(inputs)
    return {"intermediate_value_readable_graph": float(bool(readable) and all(readable)),
            "python_body_runs_graph": len(body_runs)}


def measure_graph_equals_eager(inputs, weights, biases, repeats: int, fault: str) -> dict[str, float]:
    """The graph gives the eager result (the weights are captured as graph constants); speed
    ratio eager/graph (volatile)."""
    def network(x):
        return deep_network(x, weights, biases)

    graph_network = tf.function(network)
    graph_network(inputs)  # traced here
    if fault == "stale-captured-weights":  # new weights after tracing: the graph keeps the old
        weights[:] = [weight * 1.5 for weight in weights]
    eager_result = network(inputs).numpy()
    graph_result = graph_network(inputs).numpy()
    eager_time = time_calls(network, (inputs,), repeats)
    graph_time = time_calls(graph_network, (inputs,), repeats)
    return {"graph_vs_eager_max_abs_diff": float(np.abs(graph_result - eager_result).max()),
            "eager_ms_per_call": 1000 * eager_time, "graph_ms_per_call": 1000 * graph_time,
            "graph_speedup": eager_time / graph_time}


def tracing_counts(shapes: list[int], features: int) -> dict[str, float]:
    """How many traces each way of declaring shapes needs for the batch sizes in `shapes`."""
    def square_sum(inputs):
        return tf.reduce_sum(inputs * inputs)

    ways = {
        "traces_per_new_shape": tf.function(square_sum),
        "traces_automatic": tf.function(square_sum, reduce_retracing=True),
        "traces_with_shape_relaxed": tf.function(
            square_sum, input_signature=[tf.TensorSpec((None, features), tf.float32)]),
    }
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # retracing is what is measured here: no warning about it
    try:
        for function in ways.values():
            for batch in shapes:
                function(tf.ones((batch, features)))
    finally:
        logger.setLevel(level)
    return {name: function.experimental_get_tracing_count() for name, function in ways.items()}


def measure_control_flow(rng, width: int, fault: str) -> dict[str, float]:
    """A Python `if` on a tensor value becomes one tf.cond (an If op) in one graph, which gives
    the numpy answer on both signs."""
    body = signed_scale_by_shape if fault == "branch-fixed-at-trace" else signed_scale
    graph_scale = tf.function(body)
    control_error, branches = 0.0, set()
    for sign in (1.0, -1.0):
        values = sign * np.abs(rng.normal(size=(4, width))).astype(np.float32)
        output = graph_scale(tf.constant(values)).numpy()
        control_error = max(control_error, float(np.abs(output - signed_scale_numpy(values)).max()))
        branches.add("double" if np.array_equal(output, 2 * values) else
                     "negate" if np.array_equal(output, -values) else "neither")
    concrete = graph_scale.get_concrete_function(tf.constant(values))
    graph_ops = {op.type for op in concrete.graph.get_operations()}
    return {
        "control_flow_max_abs_diff": control_error,
        "control_flow_branches_taken": len(branches - {"neither"}),
        "control_flow_traces": graph_scale.experimental_get_tracing_count(),
        "control_flow_in_one_graph": float(bool(graph_ops & {"If", "StatelessIf"})),
    }


def run(ctx, *, layers: int, width: int, batch: int, repeats: int, shapes: list[int],
        compile_backend: str = "", fault: str = "none") -> dict[str, float]:
    """`compile_backend` is torch.compile's (the torch variant); TensorFlow has no such choice."""
    if len(set(shapes)) < 3:
        raise ValueError(f"need at least 3 distinct shapes, got {shapes}")
    if fault not in FAULTS:
        raise ValueError(f"fault {fault!r} does not apply to TensorFlow (one of {', '.join(FAULTS)})")
    rng = ctx.rng()
    inputs = tf.constant(rng.normal(size=(batch, width)).astype(np.float32))
    weights = [tf.constant((rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32))
               for _ in range(layers)]
    biases = [tf.constant(rng.normal(size=width).astype(np.float32) * 0.1) for _ in range(layers)]
    ctx.skip_metric("fx_rejects_data_dependent_if",
                    "torch.fx is PyTorch's; AutoGraph converts the if (see control_flow_in_one_graph)")
    # The debugging switch left on: every tf.function then runs its Python body eagerly.
    eagerly = fault == "functions-run-eagerly"
    tf.config.run_functions_eagerly(eagerly)
    try:
        return {
            **measure_default_mode(inputs.numpy(), fault),
            **measure_graph_reading(inputs),
            **measure_graph_equals_eager(inputs, weights, biases, repeats, fault),
            **tracing_counts(shapes, width),
            **measure_control_flow(rng, width, fault),
        }
    finally:
        tf.config.run_functions_eagerly(False)
