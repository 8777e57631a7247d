"""tf.distribute.MirroredStrategy on two logical CPU devices (seed question 31), checked against one.

MirroredStrategy is synchronous data parallelism inside one process: every device holds a copy
of each variable (a MirroredVariable), each replica computes gradients on its share of the
batch, the gradients are summed across replicas (all-reduce), and every copy gets the same update.
Measured here with the same names as `distributed_torch`, in float64:

- the gradients after the all-reduce, and the variable copies after several steps, are identical
  on both replicas;
- they equal one device's gradients and weights trained on the whole batch;
- each replica holds all the parameters and half the samples.

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


def measure(*, world_size: int, threads: int, seed: int, batch: int, features: int, hidden: int, steps: int,
            learning_rate: float) -> dict:
    """In a fresh process: split the CPU into logical devices, train mirrored and on one device."""
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
        mirrored = [tf.Variable(problem[n], aggregation=tf.VariableAggregation.MEAN) for n in names]
    share = batch // world_size
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(problem["inputs"][context.replica_id_in_sync_group * share:][:share]))
    targets = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(problem["targets"][context.replica_id_in_sync_group * share:][:share]))

    @tf.function
    def mirrored_step(inputs, targets):
        def replica_step(inputs, targets):
            loss, gradients = loss_and_gradients(mirrored, inputs, targets)
            gradients = tf.distribute.get_replica_context().all_reduce("sum", gradients)
            for variable, gradient in zip(mirrored, gradients):
                variable.assign_sub(learning_rate * gradient)
            return loss, gradients, tf.shape(inputs)[0]
        return strategy.run(replica_step, args=(inputs, targets))

    single = [tf.Variable(problem[n]) for n in names]
    full_inputs, full_targets = tf.constant(problem["inputs"]), tf.constant(problem["targets"])
    replicas, reference = {}, {}
    for step in range(steps):
        loss, gradients, samples = mirrored_step(inputs, targets)
        single_loss, single_gradients = loss_and_gradients(single, full_inputs, full_targets)
        for variable, gradient in zip(single, single_gradients):
            variable.assign_sub(learning_rate * gradient)
        if step == 0:
            replicas["first_gradients"] = [np.concatenate([g.numpy().ravel() for g in per_replica])
                                           for per_replica in zip(*[strategy.experimental_local_results(g)
                                                                    for g in gradients])]
            replicas["losses"] = [float(x) for x in strategy.experimental_local_results(loss)]
            replicas["samples"] = [int(x) for x in strategy.experimental_local_results(samples)]
            reference["first_gradients"] = np.concatenate([g.numpy().ravel() for g in single_gradients])
            reference["loss"] = float(single_loss)
    copies = [strategy.experimental_local_results(v) for v in mirrored]  # one copy per device
    replicas["final_parameters"] = [np.concatenate([c[r].numpy().ravel() for c in copies]) for r in range(world_size)]
    replicas["parameters"] = [sum(int(np.prod(c[r].shape)) for c in copies) for r in range(world_size)]
    replicas["devices"] = sorted({c[r].device for c in copies for r in range(world_size)})
    reference["final_parameters"] = np.concatenate([v.numpy().ravel() for v in single])
    as_lists = lambda d: {k: [np.asarray(x).tolist() for x in v] if isinstance(v, list) else np.asarray(v).tolist()
                          for k, v in d.items()}
    return {"replicas": as_lists(replicas), "reference": as_lists(reference)}


def run(ctx, *, world_size: int, batch: int, features: int, hidden: int, steps: int,
        learning_rate: float, timeout_s: float) -> dict[str, float]:
    if world_size < 2:
        raise ValueError(f"world_size must be at least 2 to compare replicas, got {world_size}")
    result_file = ctx.artifact("mirrored/result.json")
    arguments = dict(world_size=world_size, threads=ctx.threads, seed=ctx.seed, batch=batch, features=features,
                     hidden=hidden, steps=steps, learning_rate=learning_rate)
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

    return {
        "world_size": len(replicas["samples"]),
        "devices_used": len(replicas["devices"]),
        "grad_max_abs_diff_between_ranks": spread("first_gradients"),
        "params_max_abs_diff_between_ranks": spread("final_parameters"),
        "grad_vs_single_process_max_abs_diff": versus_single("first_gradients"),
        "params_vs_single_process_max_abs_diff": versus_single("final_parameters"),
        "loss_vs_single_process_abs_diff": abs(sum(replicas["losses"]) - reference["loss"]),
        "params_per_rank_fraction": min(replicas["parameters"]) / len(reference["final_parameters"]),
        "samples_per_rank_fraction": max(replicas["samples"]) / batch,
        "teardown_crashes": float(process.returncode != 0),  # the result arrived: a crash at exit is harmless
        "launch_attempts": 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MirroredStrategy vs one device (run by concepts/distributed).")
    parser.add_argument("--out", type=Path, required=True)
    for name, kind in (("world-size", int), ("threads", int), ("seed", int), ("batch", int), ("features", int),
                       ("hidden", int), ("steps", int), ("learning-rate", float)):
        parser.add_argument(f"--{name}", type=kind, required=True)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    result = measure(**args)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(json.dumps(result))
    os.replace(temporary, out)


if __name__ == "__main__":
    main()
