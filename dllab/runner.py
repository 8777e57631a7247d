"""Run one scenario: resolve framework, device and params, seed, call the entry, check, record.

The entry is a plain function `fn(ctx, **params) -> dict[str, float]`. The runner gives it a
`RunContext` (dllab/context.py) and turns what it returns into a `RunResult`, written
atomically to `<run folder>/result.json`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import math
import os
import platform
import reprlib
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from dllab import __version__, runfolder
from dllab.context import RunContext
from dllab.devices import default_device, keras_backend, missing_reason, resolve_device
from dllab.errors import DllabError, SkipScenario, UsageError
from dllab.fileio import strict_json, write_json_atomic, write_text_atomic
from dllab.registry import ScenarioSpec
from dllab.seeding import seed_everything

_VERSION_MODULES = ("torch", "tensorflow", "keras", "gymnasium", "stable_baselines3", "sklearn", "scipy")


@dataclass
class RunResult:
    """What result.json holds (the keys later work relies on; see DESIGN.md)."""

    scenario: str
    seed: int
    framework: str
    device: str
    profile: str
    status: str  # "ok", "failed" or "interrupted"
    metrics: dict[str, float]
    expect: dict[str, dict[str, Any]]
    versions: dict[str, str]
    wall_s: float
    fingerprint: str
    params: dict[str, Any]
    questions: list[int]
    out_dir: str
    error: str = ""
    keras_backend: str | None = None
    started: str = ""
    control: str | None = None  # the negative control this run injected, if any

    @property
    def expectations_met(self) -> bool:
        return self.status == "ok" and all(e["ok"] is not False for e in self.expect.values())

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: a NaN or infinite metric is written as null, its value named in `nonfinite`."""
        data = {k: v for k, v in self.__dict__.items()}
        data["expectations_met"] = self.expectations_met
        nonfinite = {k: str(v) for k, v in self.metrics.items() if not math.isfinite(v)}
        if nonfinite:
            data["nonfinite"] = nonfinite
        return strict_json(data)


def fingerprint(metrics: dict[str, float], volatile: Iterable[str] = ()) -> str:
    """A hash of the metrics (less timings): two runs agree bit for bit iff their fingerprints do."""
    kept = {k: v for k, v in sorted(metrics.items()) if k not in set(volatile)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


MAX_SEED = 2**32 - 1


def apply_overrides(spec: ScenarioSpec, params: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `key=value` strings, each parsed and checked by the scenario's parameter schema."""
    params = dict(params)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected key=value")
        if key not in spec.schema:
            known = ", ".join(sorted(spec.schema)) or "none"
            close = difflib.get_close_matches(key, list(spec.schema), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"--set {key}: {spec.id} has no parameter {key!r}{hint} (known: {known})")
        params[key] = spec.schema[key].parse(text.strip(), f"--set {key}")
    return params


def resolve_params(spec: ScenarioSpec, quick: bool, overrides: Iterable[str] = (),
                   control: str | None = None) -> dict[str, Any]:
    """The parameters of a run: the profile's, then the control's mistake, then `--set`; every
    value checked against the schema (a Gymnasium id must be registered) before anything runs."""
    params = spec.resolved_params(quick)
    if control is not None:
        params.update(spec.control(control).set)
    params = apply_overrides(spec, params, overrides)
    for key, param in spec.schema.items():
        param.check_for_run(params[key], f"{spec.id}: parameter {key}")
    return params


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed!r}: must be an integer in [0, {MAX_SEED}]")
    return seed


def resolve_threads(threads: Any) -> int:
    """`--threads`, else `$DLLAB_THREADS`, else 1; between 1 and the CPU count of this machine."""
    source, value = "--threads", threads
    if value is None:
        source, value = "DLLAB_THREADS", os.environ.get("DLLAB_THREADS", "1")
    cores = os.cpu_count() or 1
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not 1 <= number <= cores:
        raise UsageError(f"{source} {value!r}: must be an integer in [1, {cores}] (the CPU count here)")
    return number


def choose_framework(spec: ScenarioSpec, framework: str | None) -> str:
    """The requested framework if the scenario has it and it is installed; else the first installed."""
    if framework is not None:
        if framework not in spec.frameworks:
            raise UsageError(f"{spec.id} runs on {', '.join(spec.frameworks)}, not {framework!r}")
        reason = missing_reason(framework, spec.requires)
        if reason:
            raise UsageError(f"{spec.id}: {reason}")
        return framework
    reasons = []
    for candidate in spec.frameworks:
        reason = missing_reason(candidate, spec.requires)
        if reason is None:
            return candidate
        reasons.append(reason)
    raise UsageError(f"{spec.id}: {reasons[0]}")


def runs_root() -> Path:
    return Path(os.environ.get("DLLAB_RUNS_DIR", "runs"))


def framework_label(framework: str) -> str:
    return f"keras_{keras_backend()}" if framework == "keras" else framework


def new_run_dir(spec: ScenarioSpec, framework: str, device: str, seed: int) -> Path:
    """A fresh folder `runs/<id>/<framework>-<device>-s<seed>-<timestamp>`, never shared."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    base = runs_root() / spec.id / f"{framework_label(framework)}-{device}-s{seed}-{stamp}"
    for attempt in range(1000):
        candidate = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise UsageError(f"could not create a fresh run folder under {base.parent}")


def _remove_run_dir(folder: Path) -> None:
    """Remove a run folder the runner made, and the scenario folders above it if left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    root = runs_root().resolve()
    for parent in folder.resolve().parents:
        if parent != root and root not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def load_entry(target: str) -> Callable[..., dict]:
    module_name, _, function_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, function_name)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "dllab": __version__, "numpy": np.__version__}
    for name in _VERSION_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__version__", None):
            found[name] = str(module.__version__)
    return found


def _numbers(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise TypeError(f"the entry function must return a dict of metrics, got {type(metrics).__name__}")
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"metric {key!r} is not a number: {value!r}") from None
    return out


class _TerminateAsInterrupt:
    """While a run is in progress, SIGTERM stops it like Ctrl-C (KeyboardInterrupt)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def run_scenario(
    spec: ScenarioSpec,
    *,
    seed: int = 0,
    framework: str | None = None,
    device: str | None = None,
    quick: bool = False,
    overrides: Iterable[str] = (),
    out_dir: Path | str | None = None,
    threads: int | None = None,
    show_progress: bool | None = None,
    resume_from: Path | str | None = None,
    control: str | None = None,
) -> RunResult:
    """Run one scenario and write its result.json. Bad input raises UsageError before any file
    is written (or, found by the scenario itself, with its run folder put back as it was); a
    scenario that cannot run here raises SkipScenario and leaves nothing behind. `resume_from`
    continues that folder's run from its checkpoint, in that folder, if the folder's record
    names exactly this run (scenario, framework, device, seed, profile, parameters, control)."""
    seed = check_seed(seed)
    params = resolve_params(spec, quick, overrides, control)
    threads = resolve_threads(threads)
    framework = choose_framework(spec, framework)
    if control is not None and framework not in spec.control(control).frameworks:
        raise UsageError(f"{spec.id}: control {control!r} applies to "
                         f"{', '.join(spec.control(control).frameworks)}, not {framework!r}")
    device = resolve_device(framework, device or default_device(), spec.devices)
    expected = runfolder.owner(spec.id, framework, keras_backend() if framework == "keras" else None,
                               device, seed, "quick" if quick else "full", params, control)
    folder, default = _claim_folder(spec, expected, out_dir, resume_from)
    try:
        ctx = RunContext(spec=spec, seed=seed, framework=framework, device=device,
                         profile=expected["profile"], out_dir=folder.path, threads=threads, params=params,
                         resume_from=folder.path if resume_from is not None else None,
                         show_progress=show_progress)
        return _run_in(folder, default, ctx, control)
    finally:
        folder.release()


def _claim_folder(spec: ScenarioSpec, expected: dict[str, Any], out_dir, resume_from):
    """The locked run folder (and whether it is a default one under runs/): the resumed one, the
    `--out` one, or a fresh one. Every refusal leaves the folder as it was."""
    if resume_from is not None:
        resume = Path(resume_from)
        if out_dir is not None and os.path.realpath(out_dir) != os.path.realpath(resume):
            raise UsageError(f"--out {out_dir} with --resume {resume}: a run resumes in its own folder "
                             "(leave out --out)")
        return runfolder.claim(resume, expected, resume=True), False
    if out_dir is not None:
        return runfolder.claim(Path(out_dir), expected, resume=False), False
    fresh = new_run_dir(spec, expected["framework"], expected["device"], expected["seed"])
    return runfolder.claim(fresh, expected, resume=False, created=fresh), True


def _result(ctx: RunContext, control: str | None, status: str, metrics: dict[str, float],
            error: str = "", wall: float = 0.0, started: str = "") -> RunResult:
    spec, quick = ctx.spec, ctx.quick
    expect = {}
    bounds = spec.expectations(quick) if status != "running" else {}  # none checked while running
    for name, bound in bounds.items():
        value = metrics.get(name)
        if name in ctx.skipped_metrics and value is None:
            expect[name] = {"bound": bound.text, "value": None, "ok": None, "skipped": ctx.skipped_metrics[name]}
        else:
            expect[name] = {"bound": bound.text, "value": value, "ok": bound.check(value)}
    return RunResult(
        scenario=spec.id, seed=ctx.seed, framework=ctx.framework, device=ctx.device, profile=ctx.profile,
        status=status, metrics=metrics, expect=expect, versions=versions(), wall_s=round(wall, 3),
        fingerprint=fingerprint(metrics, spec.volatile) if status != "running" else "",
        params=ctx.params, questions=list(spec.questions), out_dir=str(ctx.out_dir), error=error,
        keras_backend=keras_backend() if ctx.framework == "keras" else None, started=started,
        control=control,
    )


def _run_in(folder: runfolder.RunFolder, default: bool, ctx: RunContext, control: str | None) -> RunResult:
    """Write the owner record (status "running"), run the entry, replace the record with the
    result. SIGKILL leaves the owner record and the last checkpoint: `--resume` continues."""
    out, spec = folder.path, ctx.spec
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        write_json_atomic(out / runfolder.RECORD, _result(ctx, control, "running", {}, started=started).to_json())
    except OSError as error:
        folder.undo()
        raise UsageError(f"{out}: cannot write result.json ({error.strerror or error})") from None
    status, error, metrics = "ok", "", {}
    start = time.perf_counter()
    try:
        with _TerminateAsInterrupt():
            function = load_entry(spec.entry[ctx.framework])
            seed_everything(ctx.seed, ctx.framework, ctx.threads)
            metrics = _numbers(function(ctx, **ctx.params))
    except (SkipScenario, DllabError):  # cannot run here, or bad input found by the scenario itself
        ctx.close()
        folder.undo()
        if default:
            _remove_run_dir(out)
        raise
    except KeyboardInterrupt:
        status, metrics = "interrupted", dict(ctx.partial_metrics)
    except (Exception, SystemExit) as exception:  # the scenario failed: record it, never crash the caller
        status, metrics = "failed", dict(ctx.partial_metrics)
        error = f"{type(exception).__name__}: {exception}"
        if isinstance(exception, SystemExit):
            error = f"SystemExit: the entry function called sys.exit({reprlib.repr(exception.code)})"
        write_text_atomic(out / "traceback.txt", traceback.format_exc())
    finally:
        ctx.close()
    result = _result(ctx, control, status, metrics, error, time.perf_counter() - start, started)
    write_json_atomic(out / runfolder.RECORD, result.to_json())
    return result
