"""TensorFlow 1's Variable, placeholder, Session and fetches (seed questions 6, 10, 27), run in TF 2.

In TensorFlow 1 a program first *built* a graph (placeholders for inputs, Variables for state,
operations), then executed parts of it with `Session.run(fetches, feed_dict)`. TensorFlow 2 runs
eagerly by default: `tf.placeholder` and `tf.Session` no longer exist at the top level, and live
on only in `tf.compat.v1` (graph capture in TF 2 is `tf.function`).

Measured here, all in float64: a `tf.compat.v1` graph (a placeholder, a Variable, a tanh layer,
a loss, its gradient, a gradient-descent training op) run in a Session with `feed_dict` and
several fetches equals the same computation in eager TF 2; a few training steps through the
Session follow eager gradient descent step for step; running without feeding the placeholder
fails, and so does a `tf.compat.v1.placeholder` in eager mode.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def build_graph(features: int, outputs: int, initial_weights: np.ndarray, learning_rate: float):
    """The TF1 way: declare inputs and state, then the operations; nothing runs yet."""
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float64, shape=(None, features), name="inputs")
        targets = tf.compat.v1.placeholder(tf.float64, shape=(None, outputs), name="targets")
        weights = tf.compat.v1.Variable(initial_weights, name="weights")
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


def run(ctx, *, samples: int, features: int, outputs: int, learning_rate: float, steps: int) -> dict[str, float]:
    """Scenario entry: Session.run with feed_dict and several fetches against eager TF 2."""
    if min(samples, features, outputs, steps) < 1:
        raise ValueError("samples, features, outputs and steps must be positive")
    rng = ctx.rng()
    inputs = rng.normal(size=(samples, features))
    targets = rng.uniform(-0.5, 0.5, size=(samples, outputs))
    initial = rng.normal(scale=0.5, size=(features, outputs))
    graph, node = build_graph(features, outputs, initial, learning_rate)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=ctx.threads,
                                      inter_op_parallelism_threads=ctx.threads)
    feed = {node["inputs"]: inputs, node["targets"]: targets}
    eager_weights = tf.Variable(initial)
    max_abs = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    # Not `with Session(...)`: that would make the graph the default one, and the eager
    # reference computed in the same loop would then be built into the graph instead of run.
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        session.run(node["initialize"])  # Variables hold nothing until their initializer runs
        # One call, several fetches: each is computed once from the same feed.
        predictions, loss, gradient = session.run([node["predictions"], node["loss"], node["gradient"]], feed)
        eager_predictions, eager_loss, eager_gradient = eager_step(eager_weights, inputs, targets)
        fetch_errors = [max_abs(predictions, eager_predictions), abs(loss - float(eager_loss)),
                        max_abs(gradient, eager_gradient)]
        first_loss, trajectory_error = loss, 0.0
        for step in range(steps):
            _, loss = session.run([node["train"], node["loss"]], feed)  # loss fetched before the update
            _, eager_loss, eager_gradient = eager_step(eager_weights, inputs, targets)
            eager_weights.assign_sub(learning_rate * eager_gradient)
            trajectory_error = max(trajectory_error, max_abs(session.run(node["weights"]), eager_weights))
            ctx.log_scalar("losses/session_mse", loss, step)
        final_loss = session.run(node["loss"], feed)
        try:
            session.run(node["loss"], {node["inputs"]: inputs})  # targets not fed
            unfed_failed = 0.0
        except tf.errors.InvalidArgumentError:
            unfed_failed = 1.0
    finally:
        session.close()
    try:
        tf.compat.v1.placeholder(tf.float64, shape=(None, features))  # outside a graph: eager mode
        eager_placeholder_failed = 0.0
    except RuntimeError:
        eager_placeholder_failed = 1.0
    return {
        "fetch_predictions_vs_eager_max_abs": fetch_errors[0],
        "fetch_loss_vs_eager_abs": fetch_errors[1],
        "fetch_gradient_vs_eager_max_abs": fetch_errors[2],
        "training_trajectory_vs_eager_max_abs": trajectory_error,
        "session_loss_ratio": float(final_loss) / float(first_loss),
        "unfed_placeholder_failed": unfed_failed,
        "eager_placeholder_failed": eager_placeholder_failed,
        "tf2_top_level_has_session_or_placeholder": float(hasattr(tf, "Session") or hasattr(tf, "placeholder")),
        "eager_by_default": float(tf.executing_eagerly()),
    }
