"""Devices in PyTorch and TensorFlow (seed question 25), checked by measurement.

Measured in each framework: which devices it sees; where a freshly created tensor and a freshly
built model live; that moving data and parameters to the run's device puts them there; and,
where an accelerator exists, that the same forward and backward pass on it agrees with the CPU
(float32, relative tolerance) and what happens when data and model are on different devices.
Without an accelerator those comparisons are skipped with the reason.

The placement rules differ, and that is the point: PyTorch puts nothing on a GPU unless told
(`tensor.to("cuda")`, `model.cuda()`, `device=`); a mismatch of devices is an error. TensorFlow
places an op on the first GPU when one exists, and copies inputs between devices implicitly.
"""

from __future__ import annotations

import numpy as np

NO_ACCELERATOR = "no CUDA GPU on this machine: the CPU/GPU comparison runs only where one exists"


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


def run_torch(ctx) -> dict[str, float]:
    import torch

    accelerator = torch.device("cuda") if torch.cuda.is_available() else None
    device = torch.device(ctx.device)
    fresh_tensor = torch.zeros(3)
    fresh_model = torch.nn.Linear(4, 2)
    data = problem(ctx.seed)

    def forward_backward(where: torch.device) -> list[np.ndarray]:
        tensors = {k: torch.tensor(v, device=where, requires_grad=k.startswith("w")) for k, v in data.items()}
        hidden = torch.tanh(tensors["inputs"] @ tensors["w1"])
        loss = ((hidden @ tensors["w2"] - tensors["targets"]) ** 2).mean()
        loss.backward()
        return [t.detach().cpu().numpy() for t in (loss, tensors["w1"].grad, tensors["w2"].grad)]

    metrics = {
        "devices_found": 1 + torch.cuda.device_count(),
        "accelerators_found": torch.cuda.device_count(),
        # PyTorch's rule: everything starts on the CPU, GPU or not.
        "fresh_tensor_placement_as_documented": float(fresh_tensor.device.type == "cpu"),
        "fresh_model_placement_as_documented": float(all(p.device.type == "cpu" for p in fresh_model.parameters())),
        "moved_data_on_device": float(fresh_tensor.to(device).device.type == device.type),
        "moved_model_on_device": float(all(p.device.type == device.type for p in fresh_model.to(device).parameters())),
    }
    if accelerator is None:
        skip_accelerator_metrics(ctx)
        return metrics
    metrics["device_vs_cpu_relative_diff"] = relative_difference(forward_backward(accelerator),
                                                                 forward_backward(torch.device("cpu")))
    model = torch.nn.Linear(4, 2).to(accelerator)
    try:
        model(torch.zeros(1, 4))  # data left on the CPU
        metrics["mixed_devices_as_documented"] = 0.0
    except RuntimeError:  # "Expected all tensors to be on the same device"
        metrics["mixed_devices_as_documented"] = 1.0
    return metrics


def run_tensorflow(ctx) -> dict[str, float]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    tf.config.experimental.enable_tensor_float_32_execution(False)  # compare full float32 on GPUs
    target = "/GPU:0" if ctx.device == "cuda" else "/CPU:0"
    fresh_tensor = tf.zeros(3) + 1.0  # an op's output: placed by TensorFlow's rule
    with tf.device(target):
        moved = tf.identity(fresh_tensor)
        variable = tf.Variable(tf.zeros((4, 2)))
    data = problem(ctx.seed)

    def forward_backward(where: str) -> list[np.ndarray]:
        with tf.device(where):
            tensors = {k: tf.constant(v) for k, v in data.items()}
            weights = [tf.Variable(tensors["w1"]), tf.Variable(tensors["w2"])]
            with tf.GradientTape() as tape:
                hidden = tf.tanh(tensors["inputs"] @ weights[0])
                loss = tf.reduce_mean((hidden @ weights[1] - tensors["targets"]) ** 2)
            grads = tape.gradient(loss, weights)
        return [loss.numpy(), grads[0].numpy(), grads[1].numpy()]

    expected_default = "GPU:0" if gpus else "CPU:0"
    metrics = {
        "devices_found": len(tf.config.list_logical_devices()),
        "accelerators_found": len(gpus),
        # TensorFlow's rule: an op runs on the first GPU when there is one, else on the CPU.
        "fresh_tensor_placement_as_documented": float(fresh_tensor.device.endswith(expected_default)),
        "fresh_model_placement_as_documented": float(tf.Variable(tf.zeros(2)).device.endswith(expected_default)),
        "moved_data_on_device": float(moved.device.endswith(target.lstrip("/"))),
        "moved_model_on_device": float(variable.device.endswith(target.lstrip("/"))),
    }
    if not gpus:
        skip_accelerator_metrics(ctx)
        return metrics
    metrics["device_vs_cpu_relative_diff"] = relative_difference(forward_backward("/GPU:0"), forward_backward("/CPU:0"))
    with tf.device("/GPU:0"):
        on_gpu = tf.Variable(tf.ones((4, 2)))
    with tf.device("/CPU:0"):
        on_cpu = tf.ones((1, 4))
    product = on_cpu @ on_gpu  # TensorFlow copies the input over instead of raising
    metrics["mixed_devices_as_documented"] = float(np.allclose(product.numpy(), 4.0))
    return metrics
