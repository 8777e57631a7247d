"""tf.distribute.MirroredStrategy on two logical CPU devices (seed question 31), checked against one.

MirroredStrategy is synchronous data parallelism inside one process: every device holds a copy
of each variable (a MirroredVariable), each replica computes gradients on its share of the
batch, the gradients are summed across replicas (all-reduce), and every copy gets the same update.
Measured here with the same names as `distributed_torch`, in float64:

- the gradients after the all-reduce, and the variable copies after several steps, are identical
  on both replicas (each copy is updated with its own replica's gradient, so only the all-reduce
  keeps them equal);
- they equal one device's gradients and weights trained on the whole batch;
- each replica's copies hold all the initial parameter values, and its input tensor half the
  batch's rows (read back from each replica's own values).

Logical devices can only be configured before TensorFlow initializes its runtime, so the
measurement runs in a fresh `sys.executable` subprocess (this module run as a program) that
writes its result to a JSON file; the parent only reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dllab.fileio import write_json_atomic


def make_problem(seed: int, batch: int, features: int, hidden: int) -> dict[str, np.ndarray]:
    """Inputs, targets and initial weights (float64), as (features, hidden) matrices."""
    rng = np.random.default_rng([seed, 31])
    return {
        "inputs": rng.normal(size=(batch, features)),
        "targets": rng.normal(size=(batch, 1)),
        "w1": rng.normal(size=(features, hidden)) / np.sqrt(features),
        "b1": np.zeros(hidden),
        "w2": rng.normal(size=(hidden, 1)) / np.sqrt(hidden),
        "b2": np.zeros(1),
    }


def split_inputs(strategy, problem: dict, world_size: int, fault: str):
    """Each replica's rows of the batch, placed on its device (or a control's mistake)."""
    batch = len(problem["inputs"])
    share = batch // world_size

    def rows(context):
        replica = context.replica_id_in_sync_group
        if fault == "whole-batch":  # the mistake: every replica trains on the whole batch
            return slice(0, batch)
        if fault == "same-shard":  # the mistake: the slice ignores the replica
            replica = 0
        return slice(replica * share, (replica + 1) * share)

    return [strategy.experimental_distribute_values_from_function(
        lambda context, key=key: tf_constant(problem[key][rows(context)])) for key in ("inputs", "targets")]


def tf_constant(value):
    import tensorflow as tf

    return tf.constant(value)


def local_values(strategy, values) -> list[np.ndarray]:
    """One flat array per replica, from each replica's own copy of `values` (variables or tensors)."""
    per_value = [strategy.experimental_local_results(v) for v in values]
    return [np.concatenate([np.asarray(copies[r]).ravel() for copies in per_value])
            for r in range(strategy.num_replicas_in_sync)]


def measure(*, world_size: int, threads: int, seed: int, batch: int, features: int, hidden: int, steps: int,
            learning_rate: float, fault: str = "none") -> dict:
    """In a fresh process: split the CPU into logical devices, train mirrored and on one device.

    Each replica computes gradients on its rows; the all-reduce sums them; then every copy of each
    variable is updated with the gradient *its own replica* holds (`extended.update` with
    per-replica values). The copies stay identical, and equal one device on the whole batch, only
    because the all-reduce made the gradients equal."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * world_size)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if batch % world_size:
        raise ValueError(f"the batch of {batch} does not split evenly over {world_size} replicas")
    problem = make_problem(seed, batch, features, hidden)
    names = ("w1", "b1", "w2", "b2")

    def loss_and_gradients(variables, inputs, targets):
        with tf.GradientTape() as tape:
            predictions = tf.tanh(inputs @ variables[0] + variables[1]) @ variables[2] + variables[3]
            loss = tf.reduce_sum((predictions - targets) ** 2) / batch  # a share of the global mean
        return loss, tape.gradient(loss, variables)

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(world_size)])
    with strategy.scope():
        mirrored = [tf.Variable(problem[n]) for n in names]
    if fault == "replicas-start-different":  # the mistake: each replica initialises its own copy
        for variable in mirrored:
            noise = strategy.experimental_distribute_values_from_function(
                lambda context, v=variable: tf.random.stateless_normal(
                    v.shape, seed=[seed, context.replica_id_in_sync_group], dtype=v.dtype)
                * tf.cast(context.replica_id_in_sync_group, v.dtype))
            strategy.extended.update(variable, lambda copy, n: copy.assign_add(n), args=(noise,))
    initial = local_values(strategy, mirrored)
    inputs, targets = split_inputs(strategy, problem, world_size, fault)

    @tf.function
    def mirrored_step(inputs, targets):
        def replica_step(inputs, targets):
            loss, gradients = loss_and_gradients(mirrored, inputs, targets)
            if fault != "no-all-reduce":  # the mistake of control no-all-reduce: this line left out
                gradients = tf.distribute.get_replica_context().all_reduce("sum", gradients)
            return loss, gradients
        loss, gradients = strategy.run(replica_step, args=(inputs, targets))
        for variable, gradient in zip(mirrored, gradients):  # each copy with its replica's gradient
            strategy.extended.update(variable, lambda copy, g: copy.assign_sub(learning_rate * g), args=(gradient,))
        return loss, gradients

    single = [tf.Variable(problem[n]) for n in names]
    full_inputs, full_targets = tf.constant(problem["inputs"]), tf.constant(problem["targets"])
    replicas, reference = {}, {}
    for step in range(steps):
        loss, gradients = mirrored_step(inputs, targets)
        single_loss, single_gradients = loss_and_gradients(single, full_inputs, full_targets)
        for variable, gradient in zip(single, single_gradients):
            variable.assign_sub(learning_rate * gradient)
        if step == 0:
            replicas["first_gradients"] = local_values(strategy, gradients)
            replicas["losses"] = [float(x) for x in strategy.experimental_local_results(loss)]
            reference["first_gradients"] = np.concatenate([g.numpy().ravel() for g in single_gradients])
            reference["loss"] = float(single_loss)
    replicas["final_parameters"] = local_values(strategy, mirrored)
    replicas["initial_parameters"] = initial
    replicas["received_inputs"] = [np.asarray(x).tolist() for x in strategy.experimental_local_results(inputs)]
    replicas["devices"] = sorted({c.device for v in mirrored for c in strategy.experimental_local_results(v)})
    reference["final_parameters"] = np.concatenate([v.numpy().ravel() for v in single])
    reference["initial_parameters"] = np.concatenate([problem[n].ravel() for n in names])
    as_lists = lambda d: {k: [np.asarray(x).tolist() for x in v] if isinstance(v, list) else np.asarray(v).tolist()
                          for k, v in d.items()}
    return {"replicas": as_lists(replicas), "reference": as_lists(reference)}


def run(ctx, *, world_size: int, batch: int, features: int, hidden: int, steps: int,
        learning_rate: float, timeout_s: float, fault: str) -> dict[str, float]:
    result_file = ctx.artifact("mirrored/result.json")
    arguments = dict(world_size=world_size, threads=ctx.threads, seed=ctx.seed, batch=batch, features=features,
                     hidden=hidden, steps=steps, learning_rate=learning_rate, fault=fault)
    env = {**os.environ, "OMP_NUM_THREADS": str(ctx.threads), "DLLAB_THREADS": str(ctx.threads),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(ctx.artifact("mirrored/log.txt"), "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dllab.concepts.distributed_tf", f"--out={result_file}",
             *[f"--{k.replace('_', '-')}={v}" for k, v in arguments.items()]],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=timeout_s)
        finally:  # also on Ctrl-C or a timeout: the subprocess does not outlive the scenario
            if process.poll() is None:
                process.kill()
                process.wait()
    if not result_file.exists():
        tail = ctx.artifact("mirrored/log.txt").read_text()[-3000:]
        raise RuntimeError(f"the MirroredStrategy subprocess gave no result (exit {process.returncode}):\n{tail}")
    measured = json.loads(result_file.read_text())
    replicas, reference = measured["replicas"], measured["reference"]

    def spread(key: str) -> float:
        values = np.array(replicas[key])
        return float(np.abs(values - values[0]).max())

    def versus_single(key: str) -> float:
        return float(np.abs(np.array(replicas[key]) - np.array(reference[key])[None]).max())

    rows = {tuple(row): index for index, row in enumerate(make_problem(ctx.seed, batch, features, hidden)["inputs"].tolist())}
    received = [{rows[tuple(row)] for row in inputs if tuple(row) in rows} for inputs in replicas["received_inputs"]]
    held = np.array(replicas["initial_parameters"]) == np.array(reference["initial_parameters"])[None]
    return {
        "world_size": len(replicas["losses"]),
        "devices_used": len(replicas["devices"]),
        "grad_max_abs_diff_between_ranks": spread("first_gradients"),
        "params_max_abs_diff_between_ranks": spread("final_parameters"),
        "grad_vs_single_process_max_abs_diff": versus_single("first_gradients"),
        "params_vs_single_process_max_abs_diff": versus_single("final_parameters"),
        "loss_vs_single_process_abs_diff": abs(sum(replicas["losses"]) - reference["loss"]),
        "params_per_rank_fraction": float(held.mean(axis=1).min()),
        "samples_per_rank_fraction": max(map(len, received)) / batch,
        "batch_coverage": len(set().union(*received)) / batch,
        "teardown_crashes": float(process.returncode != 0),  # the result arrived: a crash at exit is harmless
        "launch_attempts": 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MirroredStrategy vs one device (run by concepts/distributed).")
    parser.add_argument("--out", type=Path, required=True)
    for name, kind in (("world-size", int), ("threads", int), ("seed", int), ("batch", int), ("features", int),
                       ("hidden", int), ("steps", int), ("learning-rate", float)):
        parser.add_argument(f"--{name}", type=kind, required=True)
    parser.add_argument("--fault", default="none")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    result = measure(**args)
    write_json_atomic(out, result)


if __name__ == "__main__":
    main()
