"""The same model trained in PyTorch, TensorFlow and Keras, timed side by side (seed question 2).

One multilayer perceptron on the bundled digits (64 -> hidden -> hidden -> 10, ReLU), the same
initial weights (from numpy), full-batch SGD, written idiomatically in each framework: an eager
torch loop, a `tf.function` train step, and Keras's `train_on_batch` on each installed backend.
Each implementation runs in its own `sys.executable` process (`framework_performance_worker`),
so its memory is its own:

- first they all start together (import, build, a few untimed warm-up steps that include
  tracing and compilation), then each in turn runs the timed steps alone;
- each reports its loss at every step, checked against a float64 numpy computation of the same
  training, so the timings compare equal work;
- and its step time and memory: the peak resident memory of the whole process (the framework's
  runtime included) and the growth of the peak during the timed steps (the training itself).

Timings and memory are volatile (shared CPU); they are reported as ratios to PyTorch, and the
seed's claims are marked confirmed (1) or not (0) by those figures of this run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np

from dllab.fileio import write_json_atomic

# label -> (modules it needs, extra environment)
IMPLEMENTATIONS = {
    "torch": (("torch",), {}),
    "tensorflow": (("tensorflow",), {}),
    "keras_tensorflow": (("keras", "tensorflow"), {"KERAS_BACKEND": "tensorflow"}),
    "keras_torch": (("keras", "torch"), {"KERAS_BACKEND": "torch"}),
    "keras_jax": (("keras", "jax"), {"KERAS_BACKEND": "jax"}),
}


def available(keras_backends: str = "all", implementations: str = "installed") -> list[str]:
    """The implementations installed here; `keras_backends="current"` keeps only the Keras backend
    named by KERAS_BACKEND (default tensorflow), "all" every installed one; `implementations`
    "torch", "tensorflow" or "keras" keeps only those (labels starting so)."""
    if keras_backends not in ("all", "current"):
        raise ValueError(f"keras_backends must be 'all' or 'current', got {keras_backends!r}")
    current = "keras_" + os.environ.get("KERAS_BACKEND", "tensorflow")
    return [label for label, (modules, _) in IMPLEMENTATIONS.items()
            if all(importlib.util.find_spec(m) is not None for m in modules)
            and (keras_backends == "all" or not label.startswith("keras_") or label == current)
            and (implementations == "installed" or label == implementations
                 or label.startswith(f"{implementations}_"))]


def make_problem(seed: int, hidden: int) -> dict[str, np.ndarray]:
    """The digits' training images (float32) and He-initialized weights, (in, out) layout."""
    from dllab.data.digits import load_digits

    train = load_digits(seed).train
    rng = np.random.default_rng([seed, 2])
    sizes = [64, hidden, hidden, 10]
    problem = {"inputs": train.flat().astype(np.float32), "labels": train.labels.astype(np.int64)}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        problem[f"w{index}"] = (rng.normal(size=(fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32)
        problem[f"b{index}"] = np.zeros(fan_out, np.float32)
    return problem


def numpy_losses(problem: dict[str, np.ndarray], steps: int, learning_rate: float) -> np.ndarray:
    """The reference: the same full-batch SGD in float64, by hand (forward, backward, update)."""
    weights = [problem[f"{kind}{i}"].astype(np.float64) for i in range(3) for kind in ("w", "b")]
    inputs, labels = problem["inputs"].astype(np.float64), problem["labels"]
    count, losses = len(labels), []
    for _ in range(steps):
        activations = [inputs]
        for layer in range(3):
            pre = activations[-1] @ weights[2 * layer] + weights[2 * layer + 1]
            activations.append(np.maximum(pre, 0) if layer < 2 else pre)
        logits = activations[-1] - activations[-1].max(axis=1, keepdims=True)
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        losses.append(-log_probabilities[np.arange(count), labels].mean())
        delta = np.exp(log_probabilities)
        delta[np.arange(count), labels] -= 1
        delta /= count
        for layer in (2, 1, 0):
            grad_w, grad_b = activations[layer].T @ delta, delta.sum(axis=0)
            if layer:
                delta = (delta @ weights[2 * layer].T) * (activations[layer] > 0)
            weights[2 * layer] -= learning_rate * grad_w
            weights[2 * layer + 1] -= learning_rate * grad_b
    return np.array(losses)


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


def measure_all(out_dir: Path, *, labels: list[str], build_problem, threads: int, warmup: int, steps: int,
                learning_rate: float, timeout: float = 300,
                fault: str = "none") -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Start every implementation at once (they import their framework while `build_problem()`
    runs here and its result is handed to them as problem.npz), then time each alone.
    Returns the problem and {label: result, or {"error": log tail}}."""
    processes, results = {}, {}
    problem_file = out_dir / "problem.npz"
    try:
        for label in labels:
            env = {**os.environ, **IMPLEMENTATIONS[label][1], "DLLAB_THREADS": str(threads),
                   "OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
            with open(out_dir / f"{label}.log", "w") as log:
                processes[label] = subprocess.Popen(
                    [sys.executable, "-m", "dllab.concepts.framework_performance_worker", f"--worker={label}",
                     f"--problem={problem_file}", f"--warmup={warmup}", f"--steps={steps}",
                     f"--learning-rate={learning_rate}", f"--fault={fault}"],
                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        problem = build_problem()
        np.savez(out_dir / "problem.tmp.npz", **problem)
        os.replace(out_dir / "problem.tmp.npz", problem_file)  # the workers wait for the whole file
        ready = {label: _read_line(process, timeout) == "ready" for label, process in processes.items()}
        for label, process in processes.items():  # one at a time: the timed steps run alone
            if not ready[label]:
                results[label] = {"error": (out_dir / f"{label}.log").read_text()[-1500:]}
                continue
            process.stdin.write("go\n")
            process.stdin.flush()
            line = _read_line(process, timeout)
            results[label] = json.loads(line) if line.startswith("{") else {
                "error": (out_dir / f"{label}.log").read_text()[-1500:]}
            process.wait(timeout)
    finally:  # also on Ctrl-C or a timeout: no worker outlives the run
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    write_json_atomic(out_dir / "results.json", results)
    return problem, results


def loss_gaps(good: dict[str, dict], reference: np.ndarray) -> dict[str, float]:
    """Each implementation's largest loss difference from the numpy reference, relative to the
    first loss (infinite when it reported another number of steps)."""
    return {label: float(np.abs(np.array(r["losses"]) - reference).max() / reference[0])
            if len(r["losses"]) == len(reference) else float("inf") for label, r in good.items()}


def run(ctx, *, hidden: int, warmup: int, steps: int, learning_rate: float, keras_backends: str,
        implementations: str = "installed", fault: str = "none") -> dict[str, float]:
    labels = available(keras_backends, implementations)
    if not labels:
        from dllab.errors import SkipScenario

        raise SkipScenario(f"no implementation installed for implementations={implementations!r}: "
                           "pip install 'dllab[torch]' or 'dllab[tensorflow]'")
    problem, results = measure_all(ctx.artifact("workers/results.json").parent, labels=labels,
                                   build_problem=lambda: make_problem(ctx.seed, hidden), threads=ctx.threads,
                                   warmup=warmup, steps=steps, learning_rate=learning_rate, fault=fault)
    return summarize(ctx, results, numpy_losses(problem, warmup + steps, learning_rate))


def summarize(ctx, results: dict[str, dict], reference: np.ndarray) -> dict[str, float]:
    """Loss agreement (fingerprinted) and timing/memory ratios to torch (volatile)."""
    good = {label: r for label, r in results.items() if "error" not in r}
    gaps = loss_gaps(good, reference)
    metrics = {
        "implementations_run": len(good),
        "implementations_failed": len(results) - len(good),
        "max_loss_relative_gap_vs_numpy": max(gaps.values(), default=float("nan")),
        "reference_loss_reduction": float(1 - reference[-1] / reference[0]),
        # each implementation's own losses: its training lowered the loss
        "min_loss_reduction": min((1 - r["losses"][-1] / r["losses"][0] for r in good.values()),
                                  default=float("nan")),
    }
    for label, r in good.items():
        metrics[f"{label}_step_ms"] = r["step_ms"]
        metrics[f"{label}_peak_rss_mb"] = r["peak_rss_mb"]
        metrics[f"{label}_training_peak_growth_mb"] = r["training_peak_growth_mb"]
    if "torch" in good:
        for label in good:
            if label != "torch":
                metrics[f"{label}_time_ratio_to_torch"] = good[label]["step_ms"] / good["torch"]["step_ms"]
                metrics[f"{label}_memory_ratio_to_torch"] = good[label]["peak_rss_mb"] / good["torch"]["peak_rss_mb"]
    if "torch" in good and "tensorflow" in good:
        torch_result, tf_result = good["torch"], good["tensorflow"]
        metrics["claim_torch_uses_less_memory"] = float(torch_result["peak_rss_mb"] < tf_result["peak_rss_mb"])
        metrics["claim_torch_training_uses_less_memory"] = float(
            torch_result["training_peak_growth_mb"] < tf_result["training_peak_growth_mb"])
        lighter_is_faster = (torch_result["peak_rss_mb"] < tf_result["peak_rss_mb"]) == (
            torch_result["step_ms"] < tf_result["step_ms"])
        metrics["claim_less_memory_means_faster"] = float(lighter_is_faster)
    else:
        for name in ("claim_torch_uses_less_memory", "claim_torch_training_uses_less_memory",
                     "claim_less_memory_means_faster"):
            ctx.skip_metric(name, "needs both torch and tensorflow installed")
    return metrics
