"""Devices in PyTorch and TensorFlow (seed question 25), checked by measurement.

Every figure is read back from the tensors themselves (`tensor.device`, the storage a tensor
points at, the error an impossible placement raises), so each check fails when the placement
rule it tests is broken, with or without a GPU:

- PyTorch creates tensors and parameters on the CPU unless told (`device=`, `.to()`), and
  `tensor.to(device)` returns a *new* tensor there (the original stays put) while
  `module.to(device)` moves the module in place. Without a GPU the move goes to the `meta`
  device: tensors with a shape and a dtype but no storage, which propagate shapes through a model
  without computing anything. `.to()` returns the same tensor, sharing its storage, when it is
  already where it is asked to go, and an independent copy otherwise.
- TensorFlow places an op on GPU:0 when a GPU exists, else on CPU:0, unless `tf.device(...)`
  says where. The CPU is split into two logical devices (CPU:0, CPU:1) so that an explicit
  placement can be read back from each op's device. With soft placement (the default) an op
  asked for an absent device runs on one that exists; with it off, that placement is refused.
- Where a CUDA GPU exists: the same forward and backward pass on it agrees with the CPU
  (float32, TF32 off), and mixing devices behaves as documented (PyTorch raises, TensorFlow
  copies). Without a GPU those two are skipped with the reason.

Logical devices can only be configured before TensorFlow starts its runtime, so the TensorFlow
variant measures in a fresh `sys.executable` subprocess (this module run as a program).
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

NO_ACCELERATOR = "no CUDA GPU on this machine: the CPU/GPU comparison runs only where one exists"
TORCH_ONLY = "PyTorch only: TensorFlow tensors expose no storage, and TF has no meta device"
TENSORFLOW_ONLY = "TensorFlow only: PyTorch has no soft placement (a tensor goes exactly where device= says)"
TORCH_METRICS = ("same_place_to_shares_storage", "other_dtype_to_copies", "meta_forward_without_data")
TENSORFLOW_METRICS = ("soft_placement_fallback", "hard_placement_refused")


def problem(seed: int, batch: int = 32, features: int = 16, hidden: int = 32):
    """Inputs, targets and the weights of a two-layer network, from numpy (shared by both variants)."""
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.normal(size=(batch, features)).astype(np.float32),
        "targets": rng.normal(size=(batch, 1)).astype(np.float32),
        "w1": (rng.normal(size=(features, hidden)) / np.sqrt(features)).astype(np.float32),
        "w2": (rng.normal(size=(hidden, 1)) / np.sqrt(hidden)).astype(np.float32),
    }


def relative_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) for a, b in zip(first, second))


def skip_accelerator_metrics(ctx) -> None:
    for name in ("device_vs_cpu_relative_diff", "mixed_devices_as_documented"):
        ctx.skip_metric(name, NO_ACCELERATOR)


# ---------------------------------------------------------------- PyTorch

def torch_fresh_placement(fault: str) -> dict[str, float]:
    """Where a tensor and a module's parameters are created when nothing says where."""
    import torch

    if fault == "default-device-changed":  # the mistake: a global default device left set
        torch.set_default_device("meta")
    try:
        fresh_tensor, fresh_model = torch.zeros(3), torch.nn.Linear(4, 2)
    finally:
        torch.set_default_device(None)
    return {
        "fresh_tensor_placement_as_documented": float(fresh_tensor.device.type == "cpu"),
        "fresh_model_placement_as_documented": float(
            all(p.device.type == "cpu" for p in fresh_model.parameters())),
    }


def torch_moves(target, fault: str) -> dict[str, float]:
    """`tensor.to(target)` returns a moved tensor; `module.to(target)` moves the module itself."""
    import torch

    data, model = torch.zeros(3), torch.nn.Linear(4, 2)
    if fault == "move-result-discarded":  # the mistake: tensor.to() is not in place
        data.to(target)
    else:
        data = data.to(target)
    if fault == "parameters-copied":  # the mistake: moved copies, the module keeps its own
        [parameter.to(target) for parameter in model.parameters()]
    else:
        model.to(target)
    return {
        "moved_data_on_device": float(data.device.type == target.type),
        "moved_model_on_device": float(all(p.device.type == target.type for p in model.parameters())),
    }


def torch_copy_semantics(fault: str) -> dict[str, float]:
    """Same place: `.to()` returns the tensor itself (same storage). Another dtype: a copy whose
    writes do not reach the original."""
    import torch

    original = torch.arange(6, dtype=torch.float32)
    same = original.to("cpu", copy=fault == "always-copy")
    shares = same is original and same.data_ptr() == original.data_ptr()
    if fault == "view-not-copy":  # the mistake: reinterpreting the bits shares the storage
        converted = original.view(torch.int32)
    else:
        converted = original.to(torch.float64)
    before = original.clone()
    converted.add_(1)
    independent = converted.data_ptr() != original.data_ptr() and torch.equal(original, before)
    return {"same_place_to_shares_storage": float(shares), "other_dtype_to_copies": float(independent)}


def torch_meta_forward(fault: str) -> dict[str, float]:
    """A model built on the meta device has no storage, yet a forward pass gives the output shape
    of the same model on the CPU; reading a value is refused ("no data")."""
    import torch

    where = "cpu" if fault == "meta-on-cpu" else "meta"  # the mistake: a real (CPU) model
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).to(where)
    output = model(torch.zeros(5, 16, device=where))
    reference = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))(
        torch.zeros(5, 16))
    no_storage = all(p.untyped_storage().data_ptr() == 0 for p in model.parameters())
    try:
        output.cpu()
        refused = False
    except NotImplementedError as error:
        refused = "Cannot copy out of meta tensor" in str(error)
    return {"meta_forward_without_data": float(
        no_storage and refused and output.is_meta and output.shape == reference.shape)}


def torch_accelerator(data: dict, accelerator, fault: str) -> dict[str, float]:
    """The same pass on the GPU and on the CPU; a GPU model fed CPU data must raise."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def forward_backward(where) -> list[np.ndarray]:
        dtype = torch.bfloat16 if fault == "gpu-bfloat16" and where.type == "cuda" else torch.float32
        tensors = {k: torch.tensor(v, device=where, dtype=dtype, requires_grad=k.startswith("w"))
                   for k, v in data.items()}
        hidden = torch.tanh(tensors["inputs"] @ tensors["w1"])
        loss = ((hidden @ tensors["w2"] - tensors["targets"]) ** 2).mean()
        loss.backward()
        return [t.detach().float().cpu().numpy() for t in (loss, tensors["w1"].grad, tensors["w2"].grad)]

    difference = relative_difference(forward_backward(accelerator), forward_backward(torch.device("cpu")))
    model = torch.nn.Linear(4, 2).to(accelerator)
    inputs = torch.zeros(1, 4, device=accelerator if fault == "mix-on-one-device" else "cpu")
    try:
        model(inputs)
        mixed = 0.0
    except RuntimeError as error:
        mixed = float("same device" in str(error))  # "Expected all tensors to be on the same device"
    return {"device_vs_cpu_relative_diff": difference, "mixed_devices_as_documented": mixed}


def run_torch(ctx, *, fault: str) -> dict[str, float]:
    import torch

    accelerator = torch.device("cuda") if torch.cuda.is_available() else None
    target = torch.device("cuda") if ctx.device == "cuda" else torch.device("meta")
    metrics = {"devices_found": 1 + torch.cuda.device_count(), "accelerators_found": torch.cuda.device_count()}
    metrics.update(torch_fresh_placement(fault))
    metrics.update(torch_moves(target, fault))
    metrics.update(torch_copy_semantics(fault))
    metrics.update(torch_meta_forward(fault))
    for name in TENSORFLOW_METRICS:
        ctx.skip_metric(name, TENSORFLOW_ONLY)
    if accelerator is None:
        skip_accelerator_metrics(ctx)
        return metrics
    metrics.update(torch_accelerator(problem(ctx.seed), accelerator, fault))
    return metrics


# ---------------------------------------------------------------- TensorFlow (in a subprocess)

def tf_placement(tf, devices: list[str], gpus: list, fault: str) -> dict[str, float]:
    """Default placement of an op and a variable; explicit placement on every device, read back."""
    expected_default = "GPU:0" if gpus else "CPU:0"
    if fault == "default-device-changed":  # the mistake: created inside a leftover tf.device scope
        with tf.device(devices[-1]):
            fresh_tensor, fresh_variable = tf.zeros(3) + 1.0, tf.Variable(tf.zeros(2))
    else:
        fresh_tensor, fresh_variable = tf.zeros(3) + 1.0, tf.Variable(tf.zeros(2))
    moved_ok, variables_ok = [], []
    for device in devices:
        existing = tf.zeros(3) + 1.0
        if fault == "move-result-discarded":  # the mistake: a tensor made outside the scope stays put
            with tf.device(device):
                moved = existing
        else:
            with tf.device(device):
                moved = tf.identity(existing)
        if fault == "parameters-copied":  # the mistake: the variable was made before the scope
            variable = tf.Variable(tf.zeros((4, 2)))
        else:
            with tf.device(device):
                variable = tf.Variable(tf.zeros((4, 2)))
        moved_ok.append(moved.device.endswith(device.lstrip("/")))
        variables_ok.append(variable.device.endswith(device.lstrip("/")))
    return {
        "fresh_tensor_placement_as_documented": float(fresh_tensor.device.endswith(expected_default)),
        "fresh_model_placement_as_documented": float(fresh_variable.device.endswith(expected_default)),
        "moved_data_on_device": float(all(moved_ok)),
        "moved_model_on_device": float(all(variables_ok)),
    }


def tf_soft_placement(tf, absent: str, fault: str) -> dict[str, float]:
    """An op asked for an absent device: soft placement runs it on a device that exists; with soft
    placement off, TensorFlow refuses ("Could not satisfy device specification")."""
    existing = [d.name for d in tf.config.list_logical_devices()]
    tf.config.set_soft_device_placement(fault != "soft-placement-inverted")
    try:
        with tf.device(absent):
            fallback = tf.zeros(3) + 1.0
        fell_back = any(fallback.device.endswith(name.replace("/device:", "device:")) for name in existing)
    except tf.errors.InvalidArgumentError:
        fell_back = False
    tf.config.set_soft_device_placement(fault == "soft-placement-inverted")
    try:
        with tf.device(absent):
            tf.zeros(3) + 1.0
        refused = False
    except tf.errors.InvalidArgumentError as error:
        refused = "Could not satisfy device specification" in str(error)
    finally:
        tf.config.set_soft_device_placement(True)
    return {"soft_placement_fallback": float(fell_back), "hard_placement_refused": float(refused)}


def tf_accelerator(tf, data: dict, fault: str) -> dict[str, float]:
    """The same pass on GPU:0 and CPU:0; a CPU tensor times a GPU variable is copied, not refused."""
    tf.config.experimental.enable_tensor_float_32_execution(False)  # compare full float32 on GPUs

    def forward_backward(where: str) -> list[np.ndarray]:
        dtype = tf.bfloat16 if fault == "gpu-bfloat16" and "GPU" in where else tf.float32
        with tf.device(where):
            tensors = {k: tf.constant(v, dtype=dtype) for k, v in data.items()}
            weights = [tf.Variable(tensors["w1"]), tf.Variable(tensors["w2"])]
            with tf.GradientTape() as tape:
                hidden = tf.tanh(tensors["inputs"] @ weights[0])
                loss = tf.reduce_mean((hidden @ weights[1] - tensors["targets"]) ** 2)
            grads = tape.gradient(loss, weights)
        return [np.asarray(tf.cast(t, tf.float32).numpy()) for t in (loss, grads[0], grads[1])]

    difference = relative_difference(forward_backward("/GPU:0"), forward_backward("/CPU:0"))
    with tf.device("/GPU:0"):
        on_gpu = tf.Variable(tf.ones((4, 2)))
    with tf.device("/GPU:0" if fault == "mix-on-one-device" else "/CPU:0"):
        other = tf.ones((1, 4))
    product = other @ on_gpu  # TensorFlow copies the input over instead of raising
    different = "GPU" in on_gpu.device and "CPU" in other.device
    return {"device_vs_cpu_relative_diff": difference,
            "mixed_devices_as_documented": float(different and np.allclose(product.numpy(), 4.0))}


def tf_measure(*, seed: int, device: str, threads: int, fault: str) -> dict:
    """In a fresh process: two logical CPUs, then every TensorFlow measurement."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.random.set_seed(seed)
    gpus = tf.config.list_logical_devices("GPU")
    devices = ["/CPU:0", "/CPU:1"] + (["/GPU:0"] if device == "cuda" else [])
    metrics = {"devices_found": len(tf.config.list_logical_devices()), "accelerators_found": len(gpus)}
    metrics.update(tf_placement(tf, devices, gpus, fault))
    metrics.update(tf_soft_placement(tf, f"/GPU:{len(gpus)}", fault))
    if gpus:
        metrics.update(tf_accelerator(tf, problem(seed), fault))
    return metrics


def run_tensorflow(ctx, *, fault: str) -> dict[str, float]:
    """Scenario entry (TensorFlow): measure in a fresh subprocess, read its JSON result."""
    result_file = ctx.artifact("tensorflow/result.json")
    arguments = [f"--out={result_file}", f"--seed={ctx.seed}", f"--device={ctx.device}",
                 f"--threads={ctx.threads}", f"--fault={fault}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(ctx.threads)}
    with open(ctx.artifact("tensorflow/log.txt"), "w") as log:
        done = subprocess.run([sys.executable, "-m", "dllab.concepts.devices_demo", *arguments],
                              env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=False)
    if done.returncode != 0 or not result_file.exists():
        tail = ctx.artifact("tensorflow/log.txt").read_text()[-3000:]
        raise RuntimeError(f"the TensorFlow device subprocess failed (exit {done.returncode}):\n{tail}")
    metrics = json.loads(result_file.read_text())
    for name in TORCH_METRICS:
        ctx.skip_metric(name, TORCH_ONLY)
    if not metrics["accelerators_found"]:
        skip_accelerator_metrics(ctx)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TensorFlow device measurements (run by concepts/devices).")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fault", default="none")
    args = parser.parse_args(argv)
    result = tf_measure(seed=args.seed, device=args.device, threads=args.threads, fault=args.fault)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
