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
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dllab.timing import time_calls


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


def signed_scale_numpy(inputs: np.ndarray) -> np.ndarray:
    return inputs * 2.0 if inputs.sum() > 0 else -inputs


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


def run(ctx, *, layers: int, width: int, batch: int, repeats: int, shapes: list[int],
        compile_backend: str = "") -> dict[str, float]:
    """`compile_backend` is torch.compile's (the torch variant); TensorFlow has no such choice."""
    if layers < 1 or len(set(shapes)) < 3:
        raise ValueError(f"need layers >= 1 and at least 3 distinct shapes, got {layers} and {shapes}")
    rng = ctx.rng()
    inputs = tf.constant(rng.normal(size=(batch, width)).astype(np.float32))
    weights = [tf.constant((rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)) for _ in range(layers)]
    biases = [tf.constant(rng.normal(size=width).astype(np.float32) * 0.1) for _ in range(layers)]

    readable = {}

    def probe(x):
        body_runs.append(1)
        hidden = x * 2.0
        try:
            hidden.numpy()  # the value, computed already when running eagerly
            readable[tf.executing_eagerly()] = True
        except (AttributeError, NotImplementedError):  # a symbolic tensor has no value yet
            readable[tf.executing_eagerly()] = False
        return hidden + 1.0

    body_runs: list[int] = []
    for _ in range(3):
        probe(inputs)
    eager_runs = len(body_runs)
    graph_probe, body_runs[:] = tf.function(probe), []
    for _ in range(3):
        graph_probe(inputs)
    graph_runs = len(body_runs)

    def network(x):  # the weights are captured: the graph holds them as constants
        return deep_network(x, weights, biases)

    graph_network = tf.function(network)
    eager_result = network(inputs).numpy()
    graph_result = graph_network(inputs).numpy()
    eager_time = time_calls(network, (inputs,), repeats)
    graph_time = time_calls(graph_network, (inputs,), repeats)

    graph_scale = tf.function(signed_scale)
    control_error, branches = 0.0, set()
    for sign in (1.0, -1.0):
        values = sign * np.abs(rng.normal(size=(4, width))).astype(np.float32)
        output = graph_scale(tf.constant(values)).numpy()
        control_error = max(control_error, float(np.abs(output - signed_scale_numpy(values)).max()))
        branches.add("double" if np.array_equal(output, 2 * values) else
                     "negate" if np.array_equal(output, -values) else "neither")
    graph_ops = {op.type for op in graph_scale.get_concrete_function(tf.constant(values)).graph.get_operations()}

    ctx.skip_metric("fx_rejects_data_dependent_if", "torch.fx is PyTorch's; AutoGraph converts the if (see control_flow_in_one_graph)")
    return {
        "eager_by_default": float(tf.executing_eagerly()),
        "intermediate_value_readable_eager": float(readable[True]),
        "intermediate_value_readable_graph": float(readable[False]),
        "python_body_runs_eager": eager_runs,
        "python_body_runs_graph": graph_runs,
        "graph_vs_eager_max_abs_diff": float(np.abs(graph_result - eager_result).max()),
        "eager_ms_per_call": 1000 * eager_time,
        "graph_ms_per_call": 1000 * graph_time,
        "graph_speedup": eager_time / graph_time,
        **tracing_counts(shapes, width),
        "control_flow_max_abs_diff": control_error,
        "control_flow_branches_taken": len(branches - {"neither"}),
        "control_flow_traces": graph_scale.experimental_get_tracing_count(),
        "control_flow_in_one_graph": float(bool(graph_ops & {"If", "StatelessIf"})),
    }
