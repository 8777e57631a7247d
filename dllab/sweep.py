"""`python -m dllab sweep ID`: many seeds and settings of a scenario as Dask tasks, aggregated with
the interquartile mean and stratified-bootstrap intervals (dllab.stats).

The grid is every combination of the `--set key=v1,v2,...` values times every seed. Each cell is
an ordinary dllab run (`dllab.runner.run_scenario`, one thread) in a Dask worker process, in its
own folder `DIR/runs/<setting>/s<seed>` (its result.json, checkpoint and plots as for `run`).
Without `--scheduler` (or `$DASK_SCHEDULER_ADDRESS`) an embedded `distributed.LocalCluster` of
single-thread worker processes is started and closed; with one, the same tasks go to that cluster
(whose workers must see DIR at the same path).

Reproducible: every seed comes from the sweep, never from a worker, and the aggregate is read from
the runs' own records in a fixed order with a seeded bootstrap: the same runs give the same
`sweep.json`, whatever the number or kind of workers. Reliable: a run whose result.json says "ok"
or "failed" is finished and skipped when the sweep is run again; any other run is redone
(continued from its checkpoint where it has one). A worker that dies mid-run has its task redone
by the scheduler on another worker; a run is counted once, from its folder's record.

Dask is imported inside functions only: `import dllab` and `dllab list` do not import it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from dllab import fileio
from dllab.errors import UsageError

FINISHED = ("ok", "failed")
WORKER_ENV = {
    "DLLAB_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}
_SAFE = re.compile(r"[^A-Za-z0-9._=+,-]+")


@dataclass(frozen=True)
class Setting:
    """One combination of grid values: its folder name, `key=value` overrides and parsed values."""

    key: str
    overrides: tuple[str, ...]
    params: dict[str, Any]


@dataclass
class SweepPlan:
    """Everything a sweep runs, validated before anything is submitted or written."""

    scenario: str
    framework: str
    quick: bool
    seeds: list[int]
    grid: dict[str, list[str]]
    settings: list[Setting]
    out: Path
    resamples: int = 10_000
    bootstrap_seed: int = 0
    expectations: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the scenario's file: a worker reads only that one

    def folder(self, setting: Setting, seed: int) -> Path:
        return self.out / "runs" / setting.key / f"s{seed}"


# --- the grid ----------------------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """`0-99`, `3`, `0,5,7` or `0-9,20-29` (inclusive ranges) as a sorted list without repeats."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise UsageError(f"--seeds {text!r}: expected seeds such as 0-99, 7 or 0,3,5")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise UsageError(f"--seeds {text!r}: range {low}-{high} is empty")
        if high - low >= 1_000_000:
            raise UsageError(f"--seeds {text!r}: more than a million seeds in one range")
        seeds.update(range(low, high + 1))
    return sorted(seeds)


def _split_values(text: str) -> list[str]:
    """Comma-separated values, commas inside [...] kept (a list value such as [64,64])."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(items: Iterable[str]) -> dict[str, list[str]]:
    """`--set key=v1,v2,...` (repeatable) as {key: [v1, v2, ...]} in the order given."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UsageError(f"--set {item!r}: expected key=value or key=v1,v2,...")
        if key in grid:
            raise UsageError(f"--set {key}: given twice (list every value once: {key}=v1,v2)")
        values = _split_values(text)
        if any(not value for value in values) or len(set(values)) != len(values):
            raise UsageError(f"--set {item!r}: empty or repeated value")
        grid[key] = values
    return grid


def setting_key(params: dict[str, Any]) -> str:
    """A folder name for a setting: `default`, or `key=value,key=value` in filesystem-safe text
    (a list value [64, 64] as 64x64)."""
    if not params:
        return "default"
    text = ",".join(
        f"{key}={'x'.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in params.items()
    )
    return _SAFE.sub("_", text)[:200]


def build_settings(spec, quick: bool, grid: dict[str, list[str]]) -> list[Setting]:
    """Every combination of the grid's values, each checked by the runner's parameter schema."""
    from dllab.runner import resolve_params

    settings, keys = [], set()
    for values in itertools.product(*grid.values()):
        overrides = tuple(f"{key}={value}" for key, value in zip(grid, values))
        resolved = resolve_params(spec, quick, overrides)  # UsageError on a bad value
        params = {key: resolved[key] for key in grid}
        key = setting_key(params)
        if key in keys:
            raise UsageError(f"--set: two settings give the same values ({key})")
        keys.add(key)
        settings.append(Setting(key, overrides, params))
    return settings


def plan_sweep(
    scenario_id: str,
    *,
    seeds: str = "0-9",
    sets: Iterable[str] = (),
    framework: str | None = None,
    quick: bool = False,
    out: str | None = None,
    resamples: int = 10_000,
    bootstrap_seed: int = 0,
) -> SweepPlan:
    """Resolve and validate a sweep (id, seeds, grid, framework, folder); creates nothing."""
    from dllab import registry
    from dllab.runner import check_seed, choose_framework, runs_root

    spec = registry.get(scenario_id)
    seed_list = [check_seed(seed) for seed in parse_seeds(seeds)]
    grid = parse_grid(sets)
    settings = build_settings(spec, quick, grid)
    framework = choose_framework(spec, framework)
    if resamples < 100:
        raise UsageError(f"--resamples {resamples}: use at least 100 bootstrap resamples")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(out) if out else runs_root() / "sweeps" / spec.id / stamp
    plan = SweepPlan(
        spec.id,
        framework,
        quick,
        seed_list,
        grid,
        settings,
        folder.resolve(),
        resamples,
        bootstrap_seed,
        {name: bound.text for name, bound in spec.expectations(quick).items()},
        str(spec.source),
    )
    _check_existing(plan)
    return plan


def _identity(plan: SweepPlan) -> dict[str, Any]:
    return {
        "scenario": plan.scenario,
        "framework": plan.framework,
        "profile": "quick" if plan.quick else "full",
    }


def _check_existing(plan: SweepPlan) -> None:
    """A folder given again must hold a sweep of the same scenario, framework and profile."""
    if plan.out.exists() and not plan.out.is_dir():
        raise UsageError(f"--out {plan.out}: exists and is not a folder")
    record = plan.out / "sweep-spec.json"
    if not record.exists():
        if plan.out.is_dir() and any(plan.out.iterdir()):
            raise UsageError(f"--out {plan.out}: folder exists and holds no dllab sweep")
        return
    try:
        previous = json.loads(record.read_text())
    except (OSError, ValueError):
        raise UsageError(f"--out {plan.out}: unreadable sweep-spec.json") from None
    if {key: previous.get(key) for key in _identity(plan)} != _identity(plan):
        raise UsageError(
            f"--out {plan.out}: holds a sweep of {previous.get('scenario')} "
            f"({previous.get('framework')}, {previous.get('profile')}), not this one"
        )


def requests(plan: SweepPlan) -> list[dict[str, Any]]:
    """One task per (setting, seed), in a fixed order: settings as listed, seeds ascending."""
    return [
        {
            "scenario": plan.scenario,
            "source": plan.source,
            "framework": plan.framework,
            "quick": plan.quick,
            "seed": seed,
            "overrides": list(setting.overrides),
            "setting": setting.key,
            "params": setting.params,
            "folder": str(plan.folder(setting, seed)),
            "attempts": str(plan.out / "attempts" / setting.key / f"s{seed}.txt"),
        }
        for setting in plan.settings
        for seed in plan.seeds
    ]


# --- one run, in a worker process --------------------------------------------------------------

_ACTIVE: dict[int, str] = {}  # thread id -> run folder, of the runs in progress in this process
_ACTIVE_LOCK = threading.Lock()


def run_status(folder: Path | str) -> str | None:
    """The status in a folder's result.json ("ok", "failed", "interrupted", "running") or None."""
    try:
        return json.loads((Path(folder) / "result.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _record(request: dict[str, Any], status_if_missing: str = "failed", error: str = "") -> dict:
    """What the sweep keeps of a run: read from its result.json (the run's own record)."""
    folder = Path(request["folder"])
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        result = {"status": status_if_missing, "error": error or "no result.json written"}
    return {
        "seed": request["seed"],
        "setting": request["setting"],
        "params": request["params"],
        "status": result.get("status"),
        "folder": request["folder"],
        "fingerprint": result.get("fingerprint"),
        "error": result.get("error", "") or error,
        "wall_s": result.get("wall_s"),
        "metrics": result.get("metrics") or {},
        "expect_ok": {
            name: check.get("ok") for name, check in (result.get("expect") or {}).items()
        },
    }


def run_task(request: dict[str, Any]) -> dict[str, Any]:
    """One sweep cell, in the worker: an ordinary dllab run in its folder, continued from its
    checkpoint where the folder holds an unfinished run of its own, started afresh otherwise.
    A failed run is a result, not an exception."""
    from dllab.errors import DllabError, SkipScenario

    folder = Path(request["folder"])
    if run_status(folder) in FINISHED:  # redone after a lost worker, but it had finished
        return _record(request)
    attempts = Path(request["attempts"])
    attempts.parent.mkdir(parents=True, exist_ok=True)
    with open(attempts, "a") as log:
        log.write(f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
    for name, value in WORKER_ENV.items():
        os.environ.setdefault(name, value)
    error = ""
    try:
        resume = _resumable(folder)
        try:
            _run_cell(request, folder, resume)
        except UsageError:
            if resume is None:
                raise
            shutil.rmtree(folder)  # its checkpoint is not this run's (another dllab version, say)
            _run_cell(request, folder, None)
    except (SkipScenario, DllabError) as problem:
        error = f"{type(problem).__name__}: {problem}"
    except KeyboardInterrupt:  # the sweep was stopped between the runner's own handlers
        return _record(request, "interrupted", "interrupted")
    return _record(request, "failed", error)


def _resumable(folder: Path) -> Path | None:
    """`folder` if it holds an unfinished run with a complete checkpoint (resume there); else
    None, the unfinished folder removed (a fresh start). A live run in it is refused."""
    from dllab import checkpoint, runfolder

    if not folder.exists():
        return None
    holder = runfolder.live_holder(folder)
    if holder is not None:
        raise UsageError(f"{folder}: in use by a live dllab run (pid {holder})")
    if run_status(folder) in ("running", "interrupted") and checkpoint.find(folder / "checkpoint"):
        return folder
    shutil.rmtree(folder)
    return None


def _scenario(request: dict[str, Any]):
    """The scenario's spec from its own file where this machine has it (so that another file
    being edited meanwhile cannot stop the sweep), else from the registry."""
    from dllab import registry

    source = Path(request.get("source") or "")
    if source.suffix == ".toml" and source.is_file():
        spec = registry.load_file(source)
        if spec.id == request["scenario"]:
            return spec
    return registry.get(request["scenario"])


def _run_cell(request: dict[str, Any], folder: Path, resume: Path | None) -> None:
    from dllab.runner import run_scenario

    folder.parent.mkdir(parents=True, exist_ok=True)
    with _registered(str(folder)):
        run_scenario(
            _scenario(request),
            seed=request["seed"],
            framework=request["framework"],
            quick=request["quick"],
            overrides=request["overrides"],
            out_dir=folder,
            threads=1,
            show_progress=False,
            resume_from=resume,
        )


@contextlib.contextmanager
def _registered(folder: str):
    with _ACTIVE_LOCK:
        _ACTIVE[threading.get_ident()] = folder
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(threading.get_ident(), None)


def interrupt_active_runs() -> list[str]:
    """In a worker (through `Client.run`): raise KeyboardInterrupt in each thread running a dllab
    run, which the runner turns into status "interrupted" with the metrics so far, as for Ctrl-C."""
    import ctypes

    with _ACTIVE_LOCK:
        for thread_id in _ACTIVE:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread_id), ctypes.py_object(KeyboardInterrupt)
            )
        return list(_ACTIVE.values())


# --- the engine: Dask ---------------------------------------------------------------------------

_DASK_CONFIG = {
    "distributed.worker.daemon": False,  # a run may start processes of its own (DDP, data loaders)
    "distributed.worker.memory.target": False,  # task results are small: nothing to spill
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": 0.85,  # a worker near its share of memory stops taking runs
    "distributed.worker.memory.terminate": 0.95,  # and is restarted by its nanny above this
    "distributed.scheduler.allowed-failures": 3,  # a run whose worker dies 4 times: failed
    "distributed.admin.tick.limit": "30s",  # workers busy in numpy: no event-loop warnings
}


def _quiet_dask() -> None:
    """Dask's INFO and WARNING lines (worker start, restarts) would drown the sweep's own output."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    for name in (
        "distributed",
        "distributed.nanny",
        "distributed.scheduler",
        "distributed.worker",
        "distributed.core",
        "distributed.batched",
        "tornado",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass
class Engine:
    """A connected Dask client and what was measured while connecting."""

    client: Any
    workers: int
    embedded: bool
    start_s: float
    address: str


def scheduler_address(scheduler: str | None) -> str | None:
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None):
    """An `Engine`: an embedded LocalCluster of `workers` one-thread processes (default: the CPU
    count), or a client of the Dask scheduler at `scheduler` / $DASK_SCHEDULER_ADDRESS."""
    _quiet_dask()
    import dask
    from distributed import Client, LocalCluster

    dask.config.set(_DASK_CONFIG)
    address = scheduler_address(scheduler)
    began = time.perf_counter()
    cluster = None
    if address:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as problem:
            raise UsageError(f"--scheduler {address}: cannot connect ({problem})") from None
        client.wait_for_workers(1, timeout=120)
    else:
        cluster = LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
            env=dict(WORKER_ENV),
        )
        client = Client(cluster)
    from dllab.sweep_worker import IgnoreInterrupt

    client.register_plugin(IgnoreInterrupt())
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    engine = Engine(
        client, threads, cluster is not None, time.perf_counter() - began, client.scheduler.address
    )
    try:
        yield engine
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=20)


def execute(
    engine: Engine,
    tasks: list[dict],
    function: Callable[[dict], dict],
    *,
    on_error: Callable[[dict, BaseException], dict],
    on_result: Callable | None = None,
    desc: str = "runs",
) -> list[dict | None]:
    """`function(task)` for every task on the cluster, results in task order (None: not run,
    after Ctrl-C). A task that raises (or whose worker died too often) gives `on_error(task, e)`.
    Ctrl-C cancels what has not started and interrupts what runs, then re-raises."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    client = engine.client
    futures = {client.submit(function, task, pure=False): index for index, task in enumerate(tasks)}
    results: list[dict | None] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit="run", disable=None, file=sys.stderr)
    try:
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as problem:  # noqa: BLE001 - recorded, the sweep goes on
                results[index] = on_error(tasks[index], problem)
            if on_result is not None:
                on_result(results[index])
            bar.update()
    except KeyboardInterrupt:
        bar.close()
        print(
            "dllab: interrupted: cancelling the runs not started, stopping the ones running ...",
            file=sys.stderr,
            flush=True,
        )
        stop(engine, list(futures))
        raise
    bar.close()
    return results


def stop(engine: Engine, futures: list, timeout: float = 30.0) -> None:
    """Cancel every task, and interrupt the runs in progress in every worker until none is left."""
    client = engine.client
    with contextlib.suppress(Exception):
        client.cancel(futures)
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        try:
            active = client.run(interrupt_active_runs, on_error="ignore")
        except Exception:  # noqa: BLE001 - the workers are gone already
            return
        quiet = quiet + 1 if not any(active.values()) else 0
        time.sleep(0.5)


# --- aggregation ---------------------------------------------------------------------------------


def _direction(bound: str) -> int | None:
    """+1 if a higher value meets `bound` better (">= 0.9"), -1 if lower does ("< 5"), else None."""
    text = bound.strip()
    if text.startswith(">"):
        return 1
    if text.startswith("<"):
        return -1
    return None


def aggregate_setting(plan: SweepPlan, setting: Setting, records: list[dict]) -> dict[str, Any]:
    """IQM, interval, mean, median, min, max and n of every metric over the setting's "ok" runs;
    the fraction of its finished runs meeting each expectation (a failed run meets none)."""
    from dllab import stats

    mine = [r for r in records if r["setting"] == setting.key]
    ok = [r for r in mine if r["status"] == "ok"]
    finished = [r for r in mine if r["status"] in FINISHED]
    names = sorted({name for r in ok for name in r["metrics"]})
    metrics = {}
    for name in names:
        values = [r["metrics"].get(name) for r in ok]
        values = [float("nan") if v is None else float(v) for v in values]
        metrics[name] = stats.summary(values, resamples=plan.resamples, seed=plan.bootstrap_seed)
    expect_met = {
        name: (
            sum(r["expect_ok"].get(name) is True for r in finished) / len(finished)
            if finished
            else None
        )
        for name in plan.expectations
    }
    counts = {status: sum(r["status"] == status for r in mine) for status in ("ok", "failed")}
    return {
        "setting": setting.key,
        "params": setting.params,
        "metrics": metrics,
        "expect_met": expect_met,
        "n_runs": len(mine),
        "n_ok": counts["ok"],
        "n_failed": counts["failed"],
        "n_unfinished": len(mine) - len(finished),
    }


def comparisons(plan: SweepPlan, records: list[dict]) -> list[dict[str, Any]]:
    """For pairs of settings (all pairs up to 4 settings, else each against the first), the
    probability that a run of A beats a run of B on each expected metric, with its interval."""
    from dllab import stats

    settings = plan.settings
    if len(settings) < 2:
        return []
    pairs = (
        list(itertools.combinations(settings, 2))
        if len(settings) <= 4
        else [(settings[0], other) for other in settings[1:]]
    )
    found = []
    for name, bound in plan.expectations.items():
        sign = _direction(bound)
        if sign is None:
            continue
        for a, b in pairs:
            scores = [
                [
                    sign * r["metrics"][name]
                    for r in records
                    if r["setting"] == s.key
                    and r["status"] == "ok"
                    and r["metrics"].get(name) is not None
                ]
                for s in (a, b)
            ]
            if not scores[0] or not scores[1]:
                continue
            value, low, high = stats.probability_of_improvement_ci(
                scores[0], scores[1], resamples=plan.resamples, seed=plan.bootstrap_seed
            )
            found.append(
                {
                    "metric": name,
                    "better": "higher" if sign > 0 else "lower",
                    "a": a.key,
                    "b": b.key,
                    "probability_a_better": value,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return found


def aggregate(plan: SweepPlan, records: list[dict]) -> dict[str, Any]:
    """sweep.json: the plan, every run (seed, params, status, folder, fingerprint) and the
    aggregate per setting. A function of the runs' records only: same runs, same file."""
    order = {
        (s.key, seed): i for i, (s, seed) in enumerate(itertools.product(plan.settings, plan.seeds))
    }
    records = sorted(records, key=lambda r: order[(r["setting"], r["seed"])])
    runs = [
        {
            "seed": r["seed"],
            "params": r["params"],
            "setting": r["setting"],
            "status": r["status"],
            "folder": os.path.relpath(r["folder"], plan.out),
            "fingerprint": r["fingerprint"],
            **({"error": r["error"]} if r["error"] else {}),
        }
        for r in records
    ]
    return {
        **_identity(plan),
        "seeds": plan.seeds,
        "grid": plan.grid,
        "expectations": plan.expectations,
        "bootstrap": {
            "method": "stratified percentile bootstrap of the IQM (Agarwal et al. 2021)",
            "resamples": plan.resamples,
            "confidence": 0.95,
            "seed": plan.bootstrap_seed,
        },
        "runs": runs,
        "aggregate": [aggregate_setting(plan, s, records) for s in plan.settings],
        "comparisons": comparisons(plan, records),
    }


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def table(sweep: dict[str, Any], markdown: bool = False, names: Iterable[str] | None = None) -> str:
    """The aggregate as text (terminal) or Markdown (sweep.md): one row per setting and metric
    (`names`: only those metrics)."""
    header = [
        "setting",
        "metric",
        "IQM",
        "95% CI",
        "mean",
        "median",
        "min",
        "max",
        "n",
        "meets bound",
    ]
    rows = []
    for entry in sweep["aggregate"]:
        for name, figures in entry["metrics"].items():
            if names is not None and name not in names:
                continue
            met = entry["expect_met"].get(name)
            bound = sweep["expectations"].get(name, "")
            rows.append(
                [
                    entry["setting"],
                    name,
                    _number(figures["iqm"]),
                    f"[{_number(figures['ci_low'])}, {_number(figures['ci_high'])}]",
                    _number(figures["mean"]),
                    _number(figures["median"]),
                    _number(figures["min"]),
                    _number(figures["max"]),
                    str(figures["n"]),
                    f"{met:.0%} ({bound})" if met is not None else "",
                ]
            )
    lines = _format_rows(header, rows, markdown)
    if sweep["comparisons"]:
        lines += ["", "Probability of improvement (a run of A beats a run of B):"]
        rows = [
            [
                c["metric"],
                c["a"],
                c["b"],
                _number(c["probability_a_better"]),
                f"[{_number(c['ci_low'])}, {_number(c['ci_high'])}]",
            ]
            for c in sweep["comparisons"]
        ]
        lines += _format_rows(["metric", "A", "B", "P(A better)", "95% CI"], rows, markdown)
    return "\n".join(lines)


def _format_rows(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(row) + " |" for row in rows
        ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    ]


# --- files and plots -----------------------------------------------------------------------------


def _plotted_metrics(sweep: dict[str, Any]) -> list[str]:
    names = sorted({name for entry in sweep["aggregate"] for name in entry["metrics"]})
    expected = [name for name in sweep["expectations"] if name in names]
    return (expected or names[:4])[:6]


def plot_profiles(sweep: dict[str, Any], records: list[dict], path: Path) -> None:
    """Performance profiles: per metric, the fraction of runs above each threshold, per setting."""
    import numpy as np

    from dllab import stats

    names = _plotted_metrics(sweep)
    plt, figure, axes = _figure(len(names))
    for axis, name in zip(axes, names):
        values = [
            r["metrics"][name] for r in records if r["status"] == "ok" and name in r["metrics"]
        ]
        finite = [v for v in values if v is not None and np.isfinite(v)]
        if not finite:
            continue
        thresholds = np.linspace(min(finite), max(finite), 101)
        for entry in sweep["aggregate"]:
            mine = [
                r["metrics"].get(name, np.nan)
                for r in records
                if r["setting"] == entry["setting"] and r["status"] == "ok"
            ]
            mine = [np.nan if v is None else v for v in mine]
            axis.step(
                thresholds,
                stats.performance_profile(mine, thresholds),
                where="post",
                label=entry["setting"],
            )
        _bound_line(axis, sweep["expectations"].get(name), vertical=True)
        axis.set(
            title=name, xlabel="threshold", ylabel="fraction of runs above", ylim=(-0.02, 1.02)
        )
        axis.legend(fontsize=7)
    _save(plt, figure, path)


def plot_intervals(sweep: dict[str, Any], path: Path) -> None:
    """Per metric, the IQM of each setting with its 95% stratified-bootstrap interval."""
    names = _plotted_metrics(sweep)
    plt, figure, axes = _figure(len(names))
    for axis, name in zip(axes, names):
        entries = [
            e for e in sweep["aggregate"] if e["metrics"].get(name, {}).get("iqm") is not None
        ]
        for row, entry in enumerate(entries):
            figures = entry["metrics"][name]
            axis.plot(
                [figures["ci_low"], figures["ci_high"]],
                [row, row],
                linewidth=6,
                alpha=0.5,
                color=f"C{row}",
            )
            axis.plot([figures["iqm"]], [row], "k|", markersize=14)
        axis.set_yticks(range(len(entries)), [e["setting"] for e in entries], fontsize=7)
        _bound_line(axis, sweep["expectations"].get(name), vertical=True)
        axis.set(title=f"{name}: IQM and 95% CI", xlabel=name)
    _save(plt, figure, path)


def _figure(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, max(count, 1))
    rows = -(-max(count, 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return plt, figure, list(axes.flat)


def _bound_line(axis, bound: str | None, vertical: bool) -> None:
    match = re.match(r"^\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$", bound or "")
    if match:
        axis.axvline(float(match.group(2)), color="gray", linestyle="--", label=f"bound {bound}")


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(figure)


def write_outputs(
    plan: SweepPlan, sweep: dict[str, Any], records: list[dict], plots: bool = True
) -> None:
    """sweep.json and sweep.md (atomically), and the two PNGs unless `plots` is False."""
    fileio.write_json_atomic(plan.out / "sweep.json", sweep)
    title = f"# Sweep of {sweep['scenario']} ({sweep['framework']}, {sweep['profile']} profile)\n\n"
    seeds = f"{len(plan.seeds)} seeds ({_seed_text(plan.seeds)}), {len(plan.settings)} setting(s)"
    fileio.write_text_atomic(
        plan.out / "sweep.md",
        title + seeds + ". IQM = interquartile mean; "
        "95% CI by stratified bootstrap.\n\n" + table(sweep, markdown=True) + "\n",
    )
    if plots:
        plot_profiles(sweep, records, plan.out / "profile.png")
        plot_intervals(sweep, plan.out / "intervals.png")


def _seed_text(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


# --- the command ---------------------------------------------------------------------------------


def _failed_record(task: dict, problem: BaseException) -> dict:
    """A task that raised on the worker, or whose workers kept dying (Dask's KilledWorker)."""
    record = _record(task, "failed", f"{type(problem).__name__}: {problem}")
    if record["status"] not in FINISHED:
        record.update(status="failed", error=f"{type(problem).__name__}: {problem}")
    return record


def run_sweep(
    plan: SweepPlan,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    engine: Engine | None = None,
    on_result: Callable | None = None,
    plots: bool = True,
) -> tuple[dict, dict]:
    """Run every cell not finished yet, then aggregate all cells and write the sweep's files, on
    `engine` if given (left open), else on a cluster connected for this sweep (see `connect`).
    Returns (sweep.json's content, timing); raises KeyboardInterrupt after writing on Ctrl-C."""
    tasks = requests(plan)
    todo = [task for task in tasks if run_status(task["folder"]) not in FINISHED]
    plan.out.mkdir(parents=True, exist_ok=True)
    fileio.write_json_atomic(
        plan.out / "sweep-spec.json", {**_identity(plan), "seeds": plan.seeds, "grid": plan.grid}
    )
    timing: dict[str, Any] = {
        "runs": len(tasks),
        "skipped_finished": len(tasks) - len(todo),
        "executed": len(todo),
    }
    results: dict[str, dict] = {}
    interrupted = False
    if todo:
        with contextlib.nullcontext(engine) if engine else connect(workers, scheduler) as engine:
            began = time.perf_counter()
            try:
                done = execute(engine, todo, run_task, on_error=_failed_record, on_result=on_result)
                results = {r["folder"]: r for r in done if r is not None}
            except KeyboardInterrupt:
                interrupted = True
            timing.update(_timing(engine, time.perf_counter() - began, results.values()))
    records = [
        results.get(task["folder"]) or _record(task, "interrupted" if interrupted else "failed")
        for task in tasks
    ]
    sweep = aggregate(plan, records)
    write_outputs(plan, sweep, records, plots)
    fileio.write_json_atomic(plan.out / "timing.json", timing)
    if interrupted:
        raise KeyboardInterrupt
    return sweep, timing


def _timing(engine: Engine, seconds: float, records: Iterable[dict]) -> dict[str, Any]:
    """Wall time of the sweep and the overhead per run: worker-seconds not spent inside the runs
    (scheduling, transfers, imports, the tail where fewer runs than workers remain)."""
    run_seconds = sum(r["wall_s"] or 0.0 for r in records)
    executed = sum(1 for _ in records) or 1
    return {
        "workers": engine.workers,
        "embedded_cluster": engine.embedded,
        "cluster_start_s": round(engine.start_s, 3),
        "execute_s": round(seconds, 3),
        "run_wall_sum_s": round(run_seconds, 3),
        "overhead_per_run_s": round((engine.workers * seconds - run_seconds) / executed, 4),
        "runs_per_s": round(executed / seconds, 4) if seconds > 0 else None,
    }


def main(args) -> int:
    """The CLI's `sweep`: exit 0 if every run finished "ok" meeting its expectations, 1 if not,
    2 on bad input (before anything is written), 130 on Ctrl-C (finished runs kept)."""
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    plan = plan_sweep(
        args.id,
        seeds=args.seeds,
        sets=args.grid,
        framework=args.framework,
        quick=args.quick,
        out=args.out,
        resamples=args.resamples,
    )
    if importlib_missing("distributed"):
        raise UsageError("sweep needs Dask: pip install 'dllab[sweep]'")
    total = len(plan.seeds) * len(plan.settings)
    print(
        f"sweep {plan.scenario} ({plan.framework}, {'quick' if plan.quick else 'full'}): "
        f"{len(plan.settings)} setting(s) x {len(plan.seeds)} seeds = {total} runs -> {plan.out}",
        flush=True,
    )
    try:
        sweep, timing = run_sweep(plan, workers=args.workers, scheduler=args.scheduler)
    except KeyboardInterrupt:
        print(
            f"dllab: interrupted; finished runs kept, rerun with --out {plan.out} to go on",
            file=sys.stderr,
        )
        return 130
    expected = [
        name for name in plan.expectations if any(name in e["metrics"] for e in sweep["aggregate"])
    ]
    print(table(sweep, names=expected or None))
    if expected:
        print(f"(the metrics with an expectation; every metric in {plan.out / 'sweep.md'})")
    if timing["executed"]:
        print(
            f"\n{timing['executed']} runs on {timing['workers']} worker(s) in "
            f"{timing['execute_s']:.1f} s "
            f"({timing['skipped_finished']} finished before); overhead "
            f"{timing['overhead_per_run_s']:.3f} worker-s per run; cluster start "
            f"{timing['cluster_start_s']:.1f} s"
        )
    else:
        print(f"\nall {total} runs had finished before: nothing run")
    print(f"wrote {plan.out / 'sweep.json'}, sweep.md, profile.png, intervals.png")
    met = all(run["status"] == "ok" for run in sweep["runs"]) and all(
        fraction == 1.0 for entry in sweep["aggregate"] for fraction in entry["expect_met"].values()
    )
    return 0 if met else 1


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
