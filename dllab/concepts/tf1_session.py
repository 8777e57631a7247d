"""TensorFlow 1's Variable, placeholder, Session and fetches (seed questions 6, 10, 27), run in TF 2.

In TensorFlow 1 a program first *built* a graph (placeholders for inputs, Variables for state,
operations), then executed parts of it with `Session.run(fetches, feed_dict)`. TensorFlow 2 runs
eagerly by default: `tf.placeholder` and `tf.Session` no longer exist at the top level, and live
on only in `tf.compat.v1` (graph capture in TF 2 is `tf.function`).

Measured here, all in float64: a `tf.compat.v1` graph (a placeholder, a Variable, a tanh layer,
a loss, its gradient, a gradient-descent training op) run in a Session with `feed_dict` and
several fetches equals the same computation in eager TF 2; a few training steps through the
Session follow eager gradient descent step for step; running without feeding the placeholder
fails, and so does a `tf.compat.v1.placeholder` in eager mode. `fault` injects one mistake for
a negative control (see the scenario file); "none" is the correct program.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf


FAULTS = ("none", "float32-graph", "train-op-not-fetched", "placeholder-with-default", "tf1-api")


def build_graph(features: int, outputs: int, initial_weights: np.ndarray, learning_rate: float,
                fault: str = "none"):
    """The TF1 way: declare inputs and state, then the operations; nothing runs yet."""
    dtype = tf.float32 if fault == "float32-graph" else tf.float64  # float32: TF 1's default dtype
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(dtype, shape=(None, features), name="inputs")
        if fault == "placeholder-with-default":  # a default value: the targets need no feeding
            targets = tf.compat.v1.placeholder_with_default(tf.zeros((1, outputs), dtype), (None, outputs))
        else:
            targets = tf.compat.v1.placeholder(dtype, shape=(None, outputs), name="targets")
        weights = tf.compat.v1.Variable(initial_weights.astype(dtype.as_numpy_dtype), name="weights")
        predictions = tf.tanh(tf.matmul(inputs, weights))
        loss = tf.reduce_mean(tf.square(predictions - targets))
        (gradient,) = tf.compat.v1.gradients(loss, [weights])
        train = tf.compat.v1.train.GradientDescentOptimizer(learning_rate).minimize(loss)
        initialize = tf.compat.v1.global_variables_initializer()
    nodes = dict(inputs=inputs, targets=targets, weights=weights, predictions=predictions, loss=loss,
                 gradient=gradient, train=train, initialize=initialize)
    return graph, nodes


def eager_step(weights: tf.Variable, inputs, targets):
    """The TF2 way: operations run as they are called; a tape records them for the gradient."""
    with tf.GradientTape() as tape:
        predictions = tf.tanh(inputs @ weights)
        loss = tf.reduce_mean(tf.square(predictions - targets))
    return predictions, loss, tape.gradient(loss, weights)


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def measure_fetches(session, node, feed, eager_weights, inputs, targets) -> dict[str, float]:
    """One Session.run with several fetches (each computed once from the same feed) against the
    same computation run eagerly in TF 2."""
    predictions, loss, gradient = session.run([node["predictions"], node["loss"], node["gradient"]], feed)
    eager_predictions, eager_loss, eager_gradient = eager_step(eager_weights, inputs, targets)
    return {"fetch_predictions_vs_eager_max_abs": max_abs(predictions, eager_predictions),
            "fetch_loss_vs_eager_abs": abs(float(loss) - float(eager_loss)),
            "fetch_gradient_vs_eager_max_abs": max_abs(gradient, eager_gradient)}


def measure_training(ctx, session, node, feed, eager_weights, inputs, targets, learning_rate: float,
                     steps: int, fault: str) -> dict[str, float]:
    """Training steps run through the Session follow eager gradient descent step for step, and
    lower the loss."""
    first_loss, trajectory_error = session.run(node["loss"], feed), 0.0
    fetches = [node["loss"]] if fault == "train-op-not-fetched" else [node["train"], node["loss"]]
    for step in range(steps):
        loss = session.run(fetches, feed)[-1]  # the loss is computed before the update
        _, _, eager_gradient = eager_step(eager_weights, inputs, targets)
        eager_weights.assign_sub(learning_rate * eager_gradient)
        trajectory_error = max(trajectory_error, max_abs(session.run(node["weights"]), eager_weights))
        ctx.log_scalar("losses/session_mse", loss, step)
    final_loss = session.run(node["loss"], feed)
    return {"training_trajectory_vs_eager_max_abs": trajectory_error,
            "session_loss_ratio": float(final_loss) / float(first_loss)}


def measure_unfed_placeholder(session, node, inputs) -> dict[str, float]:
    """Running a fetch whose placeholder was not fed fails (InvalidArgumentError)."""
    try:
        session.run(node["loss"], {node["inputs"]: inputs})  # targets not fed
        return {"unfed_placeholder_failed": 0.0}
    except tf.errors.InvalidArgumentError as error:  # "You must feed a value for placeholder tensor"
        if "must feed a value" not in str(error):
            raise
        return {"unfed_placeholder_failed": 1.0}


def measure_tf2_defaults(features: int, fault: str) -> dict[str, float]:
    """TF 2 runs eagerly (an op's value exists at once), its top level has no Session or
    placeholder, and a placeholder outside a graph fails. The mistake: the seed's TF 1 code
    (`import tensorflow.compat.v1 as tf`, graph mode)."""
    api = tf.compat.v1 if fault == "tf1-api" else tf
    mode = tf.Graph().as_default() if fault == "tf1-api" else contextlib.nullcontext()
    with mode:
        value = tf.constant(2.0) * 3.0
        eager = tf.executing_eagerly() and hasattr(value, "numpy") and float(value.numpy()) == 6.0
        try:
            tf.compat.v1.placeholder(tf.float64, shape=(None, features))
            placeholder_failed = 0.0
        except RuntimeError as error:  # "tf.placeholder() is not compatible with eager execution"
            if "eager execution" not in str(error):
                raise
            placeholder_failed = 1.0
    return {"eager_placeholder_failed": placeholder_failed,
            "tf2_top_level_has_session_or_placeholder": float(hasattr(api, "Session") or hasattr(api, "placeholder")),
            "eager_by_default": float(eager)}


def run(ctx, *, samples: int, features: int, outputs: int, learning_rate: float, steps: int,
        fault: str = "none") -> dict[str, float]:
    """Scenario entry: Session.run with feed_dict and several fetches against eager TF 2."""
    rng = ctx.rng()
    inputs = rng.normal(size=(samples, features))
    targets = rng.uniform(-0.5, 0.5, size=(samples, outputs))
    initial = rng.normal(scale=0.5, size=(features, outputs))
    graph, node = build_graph(features, outputs, initial, learning_rate, fault)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=ctx.threads,
                                      inter_op_parallelism_threads=ctx.threads)
    feed = {node["inputs"]: inputs, node["targets"]: targets}
    eager_weights = tf.Variable(initial)
    # Not `with Session(...)`: that would make the graph the default one, and the eager
    # reference computed in the same loop would then be built into the graph instead of run.
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        session.run(node["initialize"])  # Variables hold nothing until their initializer runs
        metrics = {
            **measure_fetches(session, node, feed, eager_weights, inputs, targets),
            **measure_training(ctx, session, node, feed, eager_weights, inputs, targets,
                               learning_rate, steps, fault),
            **measure_unfed_placeholder(session, node, inputs),
        }
    finally:
        session.close()
    return {**metrics, **measure_tf2_defaults(features, fault)}
