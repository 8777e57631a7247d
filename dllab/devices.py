"""Which frameworks are installed and which devices each has, asked without importing any
framework until a run needs it (so `dllab list` stays framework-free)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from dllab.errors import UsageError

# The pip extra that brings each importable module: `pip install 'dllab[EXTRA]'`.
EXTRA_FOR_MODULE = {
    "torch": "torch",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "gymnasium": "rl",
    "stable_baselines3": "rl",
}


def keras_backend() -> str:
    """The backend Keras 3 uses. Once Keras is imported, Keras itself is asked; before, its own
    rule is followed without importing it: `KERAS_BACKEND`, else the "backend" of
    `$KERAS_HOME/keras.json` (default `~/.keras/keras.json`), else TensorFlow."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as handle:
            backend = json.load(handle).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend if isinstance(backend, str) and backend else "tensorflow"


def modules_for(framework: str) -> list[str]:
    """The importable modules a framework needs here (Keras needs its backend too)."""
    if framework == "numpy":
        return ["numpy"]
    if framework == "keras":
        return ["keras", keras_backend()]
    return [framework]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_reason(framework: str, requires: tuple[str, ...] = ()) -> str | None:
    """None if the framework (and the scenario's other needs) can be imported, else what to install."""
    for module in [*modules_for(framework), *requires]:
        if not installed(module):
            extra = EXTRA_FOR_MODULE.get(module, module)
            what = f"{framework} needs {module}" if module != framework else f"{framework} is not installed"
            if framework == "keras" and module == keras_backend():
                what = f"Keras backend {module!r} (KERAS_BACKEND) is not installed"
            return f"{what}: pip install 'dllab[{extra}]'"
    return None


def cuda_present(framework: str) -> bool:
    """Whether this framework sees a CUDA GPU (imports the framework; a cheap check first)."""
    if not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia")):
        return False
    backend = keras_backend() if framework == "keras" else framework
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def resolve_device(framework: str, requested: str, supported: tuple[str, ...]) -> str:
    """Check a requested device ("cpu" or "cuda") against the scenario and this machine."""
    if requested not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {requested!r}: use cpu or cuda")
    if requested not in supported:
        raise UsageError(f"this scenario runs on {', '.join(supported)}, not {requested}")
    if requested == "cuda" and not cuda_present(framework):
        raise UsageError(f"device 'cuda' is not present for {framework} on this machine: use --device cpu")
    return requested


def default_device() -> str:
    """`DLLAB_DEVICE` (set by the tox device factor), else cpu."""
    return os.environ.get("DLLAB_DEVICE", "cpu")
