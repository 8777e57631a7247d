"""Checkpoints for resumable trainers: numpy arrays and JSON, written atomically, loaded safely.

A checkpoint is a folder holding `arrays.npz` (weights, optimizer slots, replay buffers, RNG
states as arrays) and `meta.json` (epoch, step, schedules, small RNG states). Both formats load
without running code (`np.load(..., allow_pickle=False)`, `json`). Frameworks convert to numpy:
torch `{k: v.detach().cpu().numpy()}`, Keras `model.get_weights()` / `optimizer.variables`.

`save` writes into a temporary sibling folder and renames it into place, so an interrupt during
the write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np

from dllab.errors import UsageError


def save(directory: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write one checkpoint folder atomically (the old one stays until the new one is complete)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "arrays.npz", "wb") as handle:
        np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})
        handle.flush()
        os.fsync(handle.fileno())
    with open(tmp / "meta.json", "w") as handle:
        json.dump(meta, handle)
        handle.flush()
        os.fsync(handle.fileno())
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint folder; a missing or malformed one is a one-line UsageError."""
    directory = Path(directory)
    if not (directory / "arrays.npz").is_file() or not (directory / "meta.json").is_file():
        raise UsageError(f"{directory}: not a dllab checkpoint (needs arrays.npz and meta.json)")
    try:
        with np.load(directory / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads((directory / "meta.json").read_text())
    except (ValueError, OSError) as error:
        raise UsageError(f"{directory}: unreadable checkpoint: {error}") from None
    return arrays, meta


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
