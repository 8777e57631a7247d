"""Run folders: the owner record, the lock, and the checks that refuse a folder untouched.

A run folder holds `result.json` from the moment its run starts: status "running" and who owns
the folder (scenario, framework, device, seed, profile, parameters, control, dllab version),
replaced atomically when the run ends. A run killed outright (SIGKILL, the OOM killer) leaves
that record and its last checkpoint, so it can be resumed. While a run is live it holds an
exclusive, non-blocking `flock` on `.dllab.lock` inside the folder, so a second run on the same
folder stops at once. Every check here reads only: a refused folder is left exactly as it was.
"""

from __future__ import annotations

import json
import os
import reprlib
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dllab import __version__
from dllab.errors import UsageError
from dllab.fileio import dumps, write_bytes_atomic

RECORD = "result.json"
LOCK = ".dllab.lock"
MAX_RECORD_BYTES = 16 * 2**20  # a result.json is a few kB; a larger one is not dllab's
OWNER_FIELDS = ("framework", "keras_backend", "device", "seed", "profile", "control")
_RECORD_TYPES = {"scenario": (str,), "status": (str,), "framework": (str,), "device": (str,),
                 "seed": (int,), "profile": (str,), "params": (dict,), "versions": (dict,),
                 "control": (str, type(None)), "keras_backend": (str, type(None))}
_OPTIONAL = ("control", "keras_backend")
_HINT = "resume with the options it ran with, or start a new run in another folder"
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel = 60, 60, 3


def owner(scenario: str, framework: str, keras_backend: str | None, device: str, seed: int,
          profile: str, params: dict[str, Any], control: str | None) -> dict[str, Any]:
    """The fields that say whose a run folder is, as they appear in result.json."""
    return {"scenario": scenario, "framework": framework, "keras_backend": keras_backend,
            "device": device, "seed": seed, "profile": profile, "control": control,
            "params": json.loads(dumps(params)), "dllab": __version__}


def read_record(folder: Path, option: str) -> dict[str, Any]:
    """The run record in `folder`, checked for shape and types (a one-line UsageError if not)."""
    where, path = f"{option} {folder}", folder / RECORD
    try:
        info = path.stat()
    except OSError:
        raise UsageError(f"{where}: no readable result.json there (not a dllab run folder)") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
        raise UsageError(f"{where}: result.json is not a regular file of at most "
                         f"{MAX_RECORD_BYTES // 2**20} MiB (not a dllab run folder)")
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        kind = "nested too deeply" if isinstance(error, RecursionError) else "not valid JSON"
        raise UsageError(f"{where}: result.json is {kind} (not a dllab run folder)") from None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: result.json holds a JSON {type(record).__name__}, not an object "
                         "(not a dllab run folder)")
    for name, kinds in _RECORD_TYPES.items():
        value = record.get(name)
        if name in _OPTIONAL and name not in record:
            continue
        if name not in record:
            raise UsageError(f"{where}: result.json has no field {name!r} (not a dllab run folder)")
        if not isinstance(value, kinds) or isinstance(value, bool):
            expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise UsageError(f"{where}: result.json field {name!r} is {_short.repr(value)}, "
                             f"expected {expected} (not a dllab run folder)")
    if not isinstance(record["versions"].get("dllab"), str):
        raise UsageError(f"{where}: result.json has no dllab version in 'versions' (not a dllab run folder)")
    return record


def check_owner(record: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Refuse a folder whose run differs from this one in any owner field, naming both values."""
    if record["scenario"] != expected["scenario"]:
        raise UsageError(f"{where}: that folder holds a run of {record['scenario']!r}, "
                         f"not {expected['scenario']!r}")
    pairs = [(field, record.get(field), expected[field]) for field in OWNER_FIELDS]
    pairs.append(("dllab version", record["versions"]["dllab"], expected["dllab"]))
    for key in sorted(set(record["params"]) | set(expected["params"])):
        pairs.append((f"parameter {key}", record["params"].get(key, "(absent)"),
                      expected["params"].get(key, "(absent)")))
    for field, old, new in pairs:
        if old != new or (type(old) is bool) != (type(new) is bool):
            raise UsageError(f"{where}: that run has {field} {_short.repr(old)}, this run {field} "
                             f"{_short.repr(new)}; {_HINT}")


def check_resumable(folder: Path, expected: dict[str, Any]) -> None:
    """A folder `--resume` may continue: this run's record, and a complete checkpoint."""
    from dllab import checkpoint

    where = f"--resume {folder}"
    if not folder.is_dir():
        raise UsageError(f"{where}: no such folder (not a dllab run folder)")
    check_owner(read_record(folder, "--resume"), expected, where)
    if checkpoint.find(folder / "checkpoint") is None:
        raise UsageError(f"{where}: no checkpoint there (the run stopped before its first one, or "
                         f"{expected['scenario']} does not checkpoint with these parameters); "
                         "start a new run instead")


def check_free(folder: Path) -> None:
    """A folder `--out` may use: absent, or a folder that holds no run."""
    from dllab import checkpoint

    where = f"--out {folder}"
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise UsageError(f"{where}: exists and is not a folder; choose another --out")
    if (folder / RECORD).exists() or (folder / RECORD).is_symlink():
        holder = live_holder(folder)
        if holder is not None:
            raise UsageError(f"{where}: that folder is in use by another dllab run (pid {holder}); "
                             "wait for it to end, or choose another --out")
        try:
            record = read_record(folder, "--out")
        except UsageError as error:
            raise UsageError(f"{error}; choose another --out") from None
        raise UsageError(f"{where}: that folder holds a run of {record['scenario']} (status "
                         f"{record['status']}); continue it with `python -m dllab run "
                         f"{record['scenario']} --resume {folder}` and its options, or choose another --out")
    if checkpoint.find(folder / "checkpoint") is not None:
        raise UsageError(f"{where}: that folder holds a checkpoint of another run; choose another --out")


def _pid(descriptor: int) -> str:
    """The pid a lock file names (what its holder wrote), or "?"."""
    words = os.pread(descriptor, 32, 0).decode(errors="replace").split()
    return words[0] if words and words[0].isdigit() else "?"


def live_holder(folder: Path) -> str | None:
    """The pid of the live run holding the folder's lock, if one does (probed without a change)."""
    import fcntl

    try:
        descriptor = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid(descriptor)
        return None
    finally:
        os.close(descriptor)  # also drops the probe's own shared lock


def make_folders(folder: Path) -> Path | None:
    """Create `folder` and missing parents; return the topmost one created (None: it existed)."""
    top = None
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        top = candidate
    if top is None:
        return None
    try:
        folder.mkdir(parents=True)
    except OSError as error:
        raise UsageError(f"--out {folder}: cannot create it ({error.strerror or error})") from None
    return top


def lock(folder: Path, option: str) -> tuple[int, bool]:
    """An exclusive lock on the folder (file descriptor, whether the lock file is new); another
    live run holding it is a UsageError at once, never a wait."""
    import fcntl

    path, where = folder / LOCK, f"{option} {folder}"
    flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            descriptor, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            descriptor, created = os.open(path, flags), False
    except OSError as error:
        raise UsageError(f"{where}: cannot lock that folder ({LOCK}: {error.strerror or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UsageError(f"{where}: {LOCK} there is not a regular file; choose another folder")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid(descriptor)
            raise UsageError(f"{where}: that folder is in use by another dllab run (pid {holder}); "
                             "wait for it to end, or choose another folder") from None
    except BaseException:
        os.close(descriptor)
        raise
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor, created


@dataclass
class RunFolder:
    """A folder this run holds the lock of, with what is needed to put it back as it was."""

    path: Path
    descriptor: int
    created: Path | None  # the topmost folder this run created, if any
    existing: frozenset[str]  # names in the folder before this run wrote anything
    previous_record: bytes | None  # the record a resumed run replaces

    def undo(self) -> None:
        """Put the folder back as it was (the run found bad input of its own, or cannot run here)."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            return
        for name in set(os.listdir(self.path)) - self.existing:
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if self.previous_record is not None:
            write_bytes_atomic(self.path / RECORD, self.previous_record)

    def release(self) -> None:
        os.close(self.descriptor)


def claim(folder: Path, expected: dict[str, Any], *, resume: bool, created: Path | None = None) -> RunFolder:
    """Check, create if needed, and lock a run folder; every refusal leaves it as it was. The
    checks run again under the lock, since another run may have taken the folder meanwhile."""
    check = (lambda: check_resumable(folder, expected)) if resume else (lambda: check_free(folder))
    if created is None:
        check()
        if not resume:
            created = make_folders(folder)
    try:
        descriptor, lock_created = lock(folder, "--resume" if resume else "--out")
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    try:
        check()
    except BaseException:
        if lock_created:
            (folder / LOCK).unlink(missing_ok=True)
        os.close(descriptor)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    existing = frozenset(os.listdir(folder)) - ({LOCK} if lock_created else set())
    previous = (folder / RECORD).read_bytes() if resume else None
    return RunFolder(folder, descriptor, created, existing, previous)
