"""One implementation of `concepts/framework-performance`, in its own process.

Run as `python -m dllab.concepts.framework_performance_worker --worker=LABEL ...` by
`framework_performance.measure_all`: it builds the MLP from the shared initial weights in one
framework, runs a few untimed warm-up steps (tracing, compilation), prints "ready", waits for
"go" on stdin, times the training steps alone, and prints its result as one JSON line: the loss
at every step, the step time, the process's peak resident memory and the peak's growth during
the timed steps.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

LABELS = ("torch", "tensorflow", "keras_tensorflow", "keras_torch", "keras_jax")
# Deliberate mistakes for the negative controls of the scenarios that start this worker.
FAULTS = ("none", "capture-by-default", "logits-as-probabilities", "weights-in-torch-layout",
          "zero-grad-before-step")


def reads_value_during_call(capture, constant, read) -> bool:
    """Whether a Python function, called the framework's default way (or wrapped in `capture`,
    the mistake of a graph-capturing default), can read an intermediate op's value while it
    runs: eager execution means the op has computed [3, 3] when Python reaches the next line."""
    seen = []

    def probe(x):
        hidden = x * 3.0
        values = read(hidden)
        seen.append(values is not None and [float(v) for v in values] == [3.0, 3.0])
        return hidden

    (capture or (lambda function: function))(probe)(constant)
    return bool(seen) and all(seen)


def setup_torch(threads: int, fault: str = "none") -> dict:
    """Fix torch's threads; its version, devices, and whether an op's value exists as it returns."""
    import torch
    import torch.fx

    torch.set_num_threads(threads)
    capture = torch.fx.symbolic_trace if fault == "capture-by-default" else None
    read = lambda t: None if isinstance(t, torch.fx.Proxy) else t.tolist()  # noqa: E731
    return {"version": torch.__version__, "devices": ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())],
            "executes_eagerly": reads_value_during_call(capture, torch.ones(2), read)}


def setup_tensorflow(threads: int, fault: str = "none") -> dict:
    """Fix TensorFlow's threads and determinism; its version, devices, and eager default."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.experimental.enable_op_determinism()
    capture = tf.function if fault == "capture-by-default" else None
    read = lambda t: t.numpy().tolist() if hasattr(t, "numpy") else None  # noqa: E731
    return {"version": tf.__version__, "devices": [d.name for d in tf.config.list_logical_devices()],
            "executes_eagerly": reads_value_during_call(capture, tf.ones(2), read)}


def setup_jax(threads: int, fault: str = "none") -> dict:
    import jax

    capture = jax.jit if fault == "capture-by-default" else None
    read = lambda t: None if isinstance(t, jax.core.Tracer) else t.tolist()  # noqa: E731
    return {"version": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "executes_eagerly": reads_value_during_call(capture, jax.numpy.ones(2), read)}


def torch_step(problem: dict[str, np.ndarray], learning_rate: float, threads: int, fault: str = "none"):
    import torch

    info = setup_torch(threads, fault)
    layers = [torch.nn.Linear(*problem[f"w{i}"].shape) for i in range(3)]
    with torch.no_grad():
        for index, layer in enumerate(layers):
            layer.weight.copy_(torch.from_numpy(problem[f"w{index}"].T))
            layer.bias.copy_(torch.from_numpy(problem[f"b{index}"]))
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    inputs, labels = torch.from_numpy(problem["inputs"]), torch.from_numpy(problem["labels"])

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        if fault == "zero-grad-before-step":  # zero_grad in the wrong place: steps of size 0
            optimizer.zero_grad()
        optimizer.step()
        return loss.item()

    return step, info


def tensorflow_step(problem: dict[str, np.ndarray], learning_rate: float, threads: int, fault: str = "none"):
    import tensorflow as tf

    info = setup_tensorflow(threads, fault)
    variables = [tf.Variable(problem[f"{kind}{i}"]) for i in range(3) for kind in ("w", "b")]
    inputs, labels = tf.constant(problem["inputs"]), tf.constant(problem["labels"])

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            hidden = inputs
            for layer in range(3):
                hidden = hidden @ variables[2 * layer] + variables[2 * layer + 1]
                hidden = tf.nn.relu(hidden) if layer < 2 else hidden
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, hidden))
        for variable, gradient in zip(variables, tape.gradient(loss, variables)):
            variable.assign_sub(learning_rate * gradient)
        return loss

    return (lambda: float(train_step())), info


def keras_step(problem: dict[str, np.ndarray], learning_rate: float, threads: int, fault: str = "none"):
    import keras

    backend = keras.backend.backend()
    info = {"torch": setup_torch, "tensorflow": setup_tensorflow, "jax": setup_jax}[backend](threads, fault)
    info["version"] = f"{keras.__version__} on {backend} {info['version']}"
    hidden = problem["w0"].shape[1]
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hidden, activation="relu"),
                              keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(10)])
    weights = [problem[f"{kind}{i}"] for i in range(3) for kind in ("w", "b")]
    if fault == "weights-in-torch-layout":  # torch's (out, in) kernels: Keras wants (in, out)
        weights = [w.T for w in weights]
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate),  # logits, unless the mistake:
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=fault != "logits-as-probabilities"))

    def step() -> float:
        loss = model.train_on_batch(problem["inputs"], problem["labels"])
        return float(loss[0] if isinstance(loss, (list, tuple)) else loss)

    return step, info


def _memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or the last reset) of this process, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(label: str, problem_file: Path, warmup: int, steps: int, learning_rate: float,
           fault: str = "none") -> None:
    """Import, load the problem, build, warm up, say "ready", wait for "go", time `steps` steps,
    print the result as JSON."""
    importlib.import_module({"torch": "torch", "tensorflow": "tensorflow"}.get(label, "keras"))  # the slow part
    deadline = time.monotonic() + 300
    while not problem_file.exists():  # written by the parent meanwhile
        if time.monotonic() > deadline:
            raise TimeoutError(f"{problem_file} did not appear")
        time.sleep(0.02)
    problem = dict(np.load(problem_file))
    threads = int(os.environ.get("DLLAB_THREADS", "1"))
    builder = torch_step if label == "torch" else tensorflow_step if label == "tensorflow" else keras_step
    step, info = builder(problem, learning_rate, threads, fault)
    losses = [step() for _ in range(warmup)]  # includes tracing and compilation
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    peak_before = _memory_mb("VmHWM")
    try:  # Linux: writing 5 to clear_refs resets the peak, so the next peak is the training's own
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        can_reset = True
    except OSError:
        can_reset = False
    resident_before = _memory_mb("VmRSS")
    start = time.perf_counter()
    losses += [step() for _ in range(steps)]
    elapsed = time.perf_counter() - start
    peak_during = _memory_mb("VmHWM")
    print(json.dumps({**info, "label": label, "losses": losses, "step_ms": 1000 * elapsed / steps,
                      "peak_rss_mb": max(peak_before, peak_during),
                      "training_peak_growth_mb": peak_during - resident_before if can_reset else float("nan")}),
          flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=LABELS, required=True)
    parser.add_argument("--problem", type=Path, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--learning-rate", type=float, required=True)
    parser.add_argument("--fault", choices=FAULTS, default="none")
    args = parser.parse_args(argv)
    worker(args.worker, args.problem, args.warmup, args.steps, args.learning_rate, args.fault)


if __name__ == "__main__":
    main()
