"""Checkpoints for resumable trainers: numpy arrays and JSON, written atomically, loaded safely.

A checkpoint is a folder holding `arrays.npz` (weights, optimizer slots, replay buffers, RNG
states as arrays) and `meta.json` (epoch, step, schedules, small RNG states). Both formats load
without running code (`np.load(..., allow_pickle=False)`, `json`). Frameworks convert to numpy:
torch `{k: v.detach().cpu().numpy()}`, Keras `model.get_weights()` / `optimizer.variables`.

`save` writes into a fresh temporary folder (`tempfile.mkdtemp` beside the target: a random
name, created exclusively, so no planted link or other writer can be in it), then swaps it in
with two renames: the current copy becomes `<name>.old`, the new one takes its place, and the old
one is deleted. A kill between the two renames leaves only `<name>.old`; `load` then uses it, as
it does when the main copy is missing or unreadable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from dllab.errors import UsageError


def _fsynced(path: Path, write) -> None:
    with open(path, "xb") as handle:  # "x": created exclusively
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _previous(directory: Path) -> Path:
    return directory.with_name(directory.name + ".old")


def save(directory: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write one checkpoint folder atomically (the old one stays until the new one is complete)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        _fsynced(tmp / "arrays.npz", lambda h: np.savez(h, **{k: np.asarray(v) for k, v in arrays.items()}))
        _fsynced(tmp / "meta.json", lambda h: h.write(json.dumps(meta).encode()))
        old = _previous(directory)
        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _remove_stale_temporaries(directory: Path) -> None:
    """Temp folders left by a run killed during `save` (the run folder's lock says none is live)."""
    for stale in directory.parent.glob(f".{directory.name}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _complete(directory: Path) -> bool:
    return (directory.is_dir() and not directory.is_symlink() and (directory / "arrays.npz").is_file()
            and (directory / "meta.json").is_file())


def find(directory: Path) -> Path | None:
    """The complete copy `load` would read first: the checkpoint itself, else its `.old` copy."""
    directory = Path(directory)
    return next((path for path in (directory, _previous(directory)) if _complete(path)), None)


def _read(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(directory / "arrays.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads((directory / "meta.json").read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"meta.json holds a {type(meta).__name__}, not an object")
    return arrays, meta


def load(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint folder, or its previous complete copy (`.old`) if the folder is missing
    or unreadable; neither usable is a one-line UsageError."""
    directory = Path(directory)
    problem = "needs arrays.npz and meta.json"
    for candidate in (directory, _previous(directory)):
        if not _complete(candidate):
            continue
        try:
            return _read(candidate)
        except (ValueError, OSError, RecursionError, EOFError) as error:
            problem = f"unreadable: {type(error).__name__}: {str(error)[:200]}"
    raise UsageError(f"{directory}: not a usable dllab checkpoint ({problem})")


def rng_state() -> tuple[dict[str, np.ndarray], dict]:
    """The global RNG states of Python, numpy and (if imported) torch, as (arrays, meta)."""
    version, internal, gauss = random.getstate()
    arrays = {"rng/python": np.array(internal, dtype=np.uint64)}
    kind, keys, position, has_gauss, cached = np.random.get_state()
    arrays["rng/numpy"] = keys
    meta = {"rng": {"python": [version, gauss], "numpy": [kind, int(position), int(has_gauss), float(cached)]}}
    if "torch" in sys.modules:
        arrays["rng/torch"] = sys.modules["torch"].get_rng_state().numpy()
    return arrays, meta


def set_rng_state(arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Restore what `rng_state` saved."""
    version, gauss = meta["rng"]["python"]
    random.setstate((version, tuple(int(x) for x in arrays["rng/python"]), gauss))
    kind, position, has_gauss, cached = meta["rng"]["numpy"]
    np.random.set_state((kind, arrays["rng/numpy"], position, has_gauss, cached))
    if "rng/torch" in arrays:
        import torch

        torch.set_rng_state(torch.from_numpy(arrays["rng/torch"].copy()))


def check_owner(meta: dict, trainer: str, seed: int) -> None:
    """Refuse a checkpoint written by another trainer or seed (a one-line UsageError)."""
    if meta.get("trainer") != trainer or meta.get("seed") != seed:
        raise UsageError(f"--resume: the checkpoint is from trainer {meta.get('trainer')!r} seed "
                         f"{meta.get('seed')}, not {trainer!r} seed {seed}")


def torch_optimizer_state(optimizer, prefix: str = "optimizer") -> tuple[dict, dict]:
    """A torch optimizer's state as (arrays, meta): each parameter's slots (Adam: step, exp_avg,
    exp_avg_sq) as arrays `prefix/<parameter index>/<slot>`, its hyperparameters
    (`param_groups`) as JSON in meta. Empty slots (SGD without momentum keeps None) are left out."""
    import torch

    state, arrays = optimizer.state_dict(), {}
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            if value is not None:
                array = torch.as_tensor(value).detach().cpu().numpy()
                arrays[f"{prefix}/{index}/{slot}"] = array.copy()
    return arrays, {"param_groups": state["param_groups"]}


def load_torch_optimizer_state(optimizer, arrays: dict[str, np.ndarray], meta: dict | None = None,
                               prefix: str = "optimizer") -> None:
    """Load what `torch_optimizer_state` saved, exactly (`meta` None: keep the hyperparameters the
    optimizer was built with)."""
    import torch

    slots: dict[int, dict] = {}
    for key, value in arrays.items():
        if key.startswith(prefix + "/"):
            index, slot = key[len(prefix) + 1:].split("/", 1)
            slots.setdefault(int(index), {})[slot] = torch.from_numpy(np.array(value))  # a copy
    groups = optimizer.state_dict()["param_groups"] if meta is None else meta["param_groups"]
    optimizer.load_state_dict({"state": slots, "param_groups": groups})


def keras_optimizer_state(optimizer, prefix: str = "optimizer") -> dict[str, np.ndarray]:
    """A built Keras optimizer's variables (iterations, moments, ...) as arrays `prefix/<index>`."""
    return {f"{prefix}/{index}": np.array(v) for index, v in enumerate(optimizer.variables)}


def load_keras_optimizer_state(optimizer, arrays: dict, prefix: str = "optimizer") -> None:
    """Assign what `keras_optimizer_state` saved to an optimizer built on the same variables."""
    for index, variable in enumerate(optimizer.variables):
        variable.assign(arrays[f"{prefix}/{index}"])
