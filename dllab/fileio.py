"""Files dllab writes: atomically, through exclusively created temp files, as strict JSON.

Every file is first written to a temp file created with `tempfile.mkstemp` in the target's own
folder (O_CREAT | O_EXCL, a random name: it cannot be a planted symlink or another writer's
file), flushed, fsynced, then renamed over the target, so a reader never sees half a file and
two writers never mix. JSON is strict (RFC 8259): a NaN or infinite float is written as `null`,
so browsers' `JSON.parse` and other strict parsers read everything dllab writes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON `null`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return strict_json(value.item())
    return value


def dumps(value: Any, **kwargs) -> str:
    """Strict JSON text (non-finite floats as null; anything else unknown as its str)."""
    kwargs.setdefault("sort_keys", True)
    return json.dumps(strict_json(value), allow_nan=False, default=str, **kwargs)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through an exclusively created temp file and a rename."""
    path = Path(path)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp's 0600, widened to what open() gives
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Strict JSON, indented, written atomically."""
    write_text_atomic(path, dumps(data, indent=2) + "\n")
