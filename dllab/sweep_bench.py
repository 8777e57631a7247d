"""`python -m dllab bench sweep`: the sweep engine's throughput with 1 and with N local workers.

The same runs (a scenario's quick profile, seeds 0..S-1, one thread each) three ways:

1. one after another in this process, without Dask (`run_scenario` in a loop): the baseline;
2. `dllab sweep` on an embedded cluster of 1 worker;
3. `dllab sweep` on an embedded cluster of N workers (default: the CPU count).

It reports the wall time of each, the throughput ratio N workers / 1 worker (independent
one-thread runs on N free cores: about N), the overhead per run (worker-seconds not spent inside
runs: scheduling, transfers, imports, the tail of the sweep), the cluster start time, and Dask's own
per-task cost, measured with 200 empty tasks on the 1-worker cluster. The sweeps' metrics must
equal the baseline's (the same fingerprints): a benchmark of wrong results would be worthless.
This is a measurement, not a test: on a shared machine the ratio is as good as the free cores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from dllab import fileio
from dllab.errors import UsageError


def _noop(index: int) -> int:
    return index


def _sequential(plan, folder: Path) -> tuple[float, dict[int, str]]:
    """The plan's runs one after another in this process: (wall seconds, seed -> fingerprint)."""
    from dllab import registry
    from dllab.runner import run_scenario

    spec = registry.get(plan.scenario)
    began = time.perf_counter()
    fingerprints = {}
    for seed in plan.seeds:
        result = run_scenario(
            spec,
            seed=seed,
            framework=plan.framework,
            quick=True,
            out_dir=folder / f"s{seed}",
            threads=1,
            show_progress=False,
        )
        fingerprints[seed] = result.fingerprint
    return time.perf_counter() - began, fingerprints


def _task_overhead(workers: int, tasks: int = 200) -> float:
    """Seconds per empty task through the scheduler (submit, run, gather) on `workers` workers."""
    from dllab import sweep

    with sweep.connect(workers) as engine:
        engine.client.gather(engine.client.map(_noop, range(20), pure=False))  # warm up
        began = time.perf_counter()
        engine.client.gather(engine.client.map(_noop, range(tasks), pure=False))
        return (time.perf_counter() - began) / tasks


def main(args) -> int:
    """Run the three ways, print the figures and write OUT/sweep/sweep-bench.json."""
    import os

    from dllab import sweep

    seeds = 20 if args.seeds is None else args.seeds
    workers = args.workers or os.cpu_count() or 1
    if seeds < 2 or workers < 2:
        raise UsageError("bench sweep: --seeds and --workers must be at least 2")
    if sweep.importlib_missing("distributed"):
        raise UsageError("bench sweep needs Dask: pip install 'dllab[sweep]'")
    root = Path(args.out) / "sweep"
    shutil.rmtree(root, ignore_errors=True)  # the bench's own folder: every figure measured now
    plan = lambda name: sweep.plan_sweep(
        args.scenario, seeds=f"0-{seeds - 1}", quick=True, out=str(root / name), resamples=1000
    )
    print(
        f"bench sweep: {args.scenario} --quick, seeds 0-{seeds - 1}: sequential, 1 worker, "
        f"{workers} workers",
        flush=True,
    )
    sequential_s, fingerprints = _sequential(plan("sequential"), root / "sequential")
    figures = {"scenario": args.scenario, "seeds": seeds, "sequential_s": round(sequential_s, 3)}
    for count in (1, workers):
        found, timing = sweep.run_sweep(plan(f"workers-{count}"), workers=count)
        if {run["seed"]: run["fingerprint"] for run in found["runs"]} != fingerprints:
            raise RuntimeError(
                f"the sweep on {count} worker(s) gave other metrics than the sequential runs"
            )
        figures[f"workers_{count}"] = timing
    one, many = figures["workers_1"], figures[f"workers_{workers}"]
    figures["throughput_ratio"] = round(one["execute_s"] / many["execute_s"], 3)
    figures["speedup_vs_sequential"] = round(sequential_s / many["execute_s"], 3)
    figures["dask_seconds_per_empty_task"] = round(_task_overhead(1), 5)
    fileio.write_json_atomic(root / "sweep-bench.json", figures)
    print(
        f"sequential {sequential_s:.1f} s; 1 worker {one['execute_s']:.1f} s "
        f"(+{one['cluster_start_s']:.1f} s start); {workers} workers {many['execute_s']:.1f} s "
        f"(+{many['cluster_start_s']:.1f} s start)"
    )
    print(
        f"throughput ratio {workers} workers / 1 worker: {figures['throughput_ratio']:.2f}; "
        f"sequential / {workers} workers: {figures['speedup_vs_sequential']:.2f}"
    )
    print(
        f"overhead per run: {one['overhead_per_run_s']:.3f} worker-s (1 worker), "
        f"{many['overhead_per_run_s']:.3f} ({workers} workers); Dask per empty task "
        f"{1000 * figures['dask_seconds_per_empty_task']:.2f} ms"
    )
    print(f"wrote {root / 'sweep-bench.json'}")
    return 0
