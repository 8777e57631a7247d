"""What TensorFlow, PyTorch and Keras are, told by measurement (seed questions 1 and 3).

Each installed framework trains the same small MLP from the same weights in its own process,
using `framework_performance`'s workers: through Keras on every backend where Keras is installed
(so each run of Keras also reports its backend: TensorFlow, PyTorch, JAX), directly otherwise.
Each reports its version, its devices, whether it executes eagerly by default, its losses and its
step time and memory. From these this run builds a comparison table
(`comparison.md` in the run folder) and checks:

- Keras 3 is a multi-backend library: it runs here on every installed backend (TensorFlow,
  PyTorch, JAX), and every backend's losses follow the same float64 numpy reference;
- Theano is not a Keras backend any more: `KERAS_BACKEND=theano` is refused by Keras itself;
- TensorFlow 2 and PyTorch both execute eagerly by default.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import numpy as np

from dllab.concepts import framework_performance as performance

GAP_BOUND = 1e-5  # a backend "works" when its losses follow numpy this closely (the scenario's bound)
GRAPH_CAPTURE = {"torch": "torch.compile, torch.fx, TorchScript", "tensorflow": "tf.function",
                 "keras_tensorflow": "tf.function (+ XLA with jit_compile)",
                 "keras_torch": "torch.compile with jit_compile=True", "keras_jax": "jax.jit"}


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def keras_rejects(backend: str, threads: int) -> bool | None:
    """Whether Keras refuses KERAS_BACKEND=`backend` with its own message (None when Keras is
    not installed)."""
    if importlib.util.find_spec("keras") is None:
        return None
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", "import keras"], env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode != 0 and "Unable to import backend" in done.stderr


def comparison_table(results: dict[str, dict], gaps: dict[str, float]) -> str:
    rows = ["| implementation | version | devices | eager by default | graph capture | loss gap vs numpy "
            "| step ms (this run) | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        if "error" in r:
            rows.append(f"| {label} | failed to run | | | | | | |")
            continue
        eager = "yes" if r["executes_eagerly"] else "no"
        rows.append(f"| {label} | {r['version']} | {', '.join(r['devices'])} | {eager} | {GRAPH_CAPTURE[label]} "
                    f"| {gaps[label]:.1e} | {r['step_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(rows) + "\n"


def overview_labels(backends: str = "installed") -> list[str]:
    """One process per installed framework (or only `backends`): Keras on it when Keras is
    installed, else the framework itself."""
    installed = performance.available("all")
    labels = []
    for backend in ("tensorflow", "torch", "jax") if backends == "installed" else (backends,):
        if f"keras_{backend}" in installed:
            labels.append(f"keras_{backend}")
        elif backend in installed:
            labels.append(backend)
    return labels


def run(ctx, *, hidden: int, warmup: int, steps: int, learning_rate: float, backends: str = "installed",
        fault: str = "none") -> dict[str, float]:
    labels = overview_labels(backends)
    if not labels:
        from dllab.errors import SkipScenario

        raise SkipScenario(f"no deep-learning framework installed for backends={backends!r}: "
                           "pip install 'dllab[all]'")
    worker_fault = "none" if fault == "ask-for-an-installed-backend" else fault  # the workers' own
    problem, results = performance.measure_all(
        ctx.artifact("workers/results.json").parent, labels=labels, threads=ctx.threads, warmup=warmup,
        steps=steps, learning_rate=learning_rate, build_problem=lambda: performance.make_problem(ctx.seed, hidden),
        fault=worker_fault)
    reference = performance.numpy_losses(problem, warmup + steps, learning_rate)
    good = {label: r for label, r in results.items() if "error" not in r}
    gaps = performance.loss_gaps(good, reference)
    ctx.artifact("comparison.md").write_text(comparison_table(results, gaps))

    keras_labels = [label for label in results if label.startswith("keras_")]
    keras_working = [label for label in keras_labels if label in good and gaps[label] < GAP_BOUND]
    eager = [r["executes_eagerly"] for r in good.values()]
    metrics = {
        "frameworks_installed": sum(installed_version(d) is not None for d in ("torch", "tensorflow", "keras")),
        "implementations_failed": len(results) - len(good),
        "max_loss_relative_gap_vs_numpy": max(gaps.values(), default=float("nan")),
        "theano_installed": float(importlib.util.find_spec("theano") is not None),
    }
    if keras_labels:
        metrics["keras_backends_installed"] = len(keras_labels)
        metrics["keras_backends_working"] = len(keras_working)
        metrics["keras_backends_not_working"] = len(keras_labels) - len(keras_working)
        # The mistake: the refusal test asks for a backend Keras has.
        asked = "tensorflow" if fault == "ask-for-an-installed-backend" else "theano"
        metrics["keras_rejects_theano_backend"] = float(keras_rejects(asked, ctx.threads))
    else:
        for name in ("keras_backends_working", "keras_backends_not_working", "keras_rejects_theano_backend"):
            ctx.skip_metric(name, "Keras is not installed: pip install 'dllab[keras]'")
    if eager:
        metrics["eager_by_default_fraction"] = sum(eager) / len(eager)
    for label, r in good.items():
        metrics[f"{label}_step_ms"] = r["step_ms"]
        metrics[f"{label}_peak_rss_mb"] = r["peak_rss_mb"]
    return metrics
