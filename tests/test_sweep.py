"""`dllab sweep` on Dask: the same sweep.json with 1 or 2 workers and with an embedded or an
external cluster; a worker killed mid-run has its run redone (resumed) once; a rerun skips
finished runs; a failed run is recorded and the sweep goes on; bad input is refused before
anything is written; `import dllab` does not import Dask."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("gymnasium")

from dllab import sweep  # noqa: E402
from dllab.cli import main as cli_main  # noqa: E402

# Small runs (about a second each) that checkpoint often, so that a kill lands mid-run.
GRID = ["episodes=500", "eval_episodes=100", "checkpoint_every=50"]
SEEDS = "0-2"


def plan_for(folder: Path) -> sweep.SweepPlan:
    return sweep.plan_sweep(
        "rl/q-learning-frozenlake",
        seeds=SEEDS,
        sets=GRID,
        quick=True,
        out=str(folder),
        resamples=2000,
    )


def attempts(folder: Path) -> dict[str, list[str]]:
    return {
        path.stem: path.read_text().splitlines()
        for path in sorted((folder / "attempts").rglob("*.txt"))
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    """sweep.json of the sweep run by one embedded worker."""
    plan = plan_for(tmp_path_factory.mktemp("one-worker"))
    found, timing = sweep.run_sweep(plan, workers=1, plots=False)
    assert timing["executed"] == 3 and timing["workers"] == 1
    assert [run["status"] for run in found["runs"]] == ["ok"] * 3
    return (plan.out / "sweep.json").read_bytes()


@pytest.fixture(scope="module")
def two_workers():
    """An embedded cluster of two one-thread workers, shared by the tests below (each start costs
    a few CPU-seconds of imports)."""
    with sweep.connect(workers=2) as engine:
        yield engine


def test_two_workers_give_the_same_sweep_and_a_rerun_skips_finished_runs(
    reference, two_workers, tmp_path
):
    plan = plan_for(tmp_path / "two")
    found, timing = sweep.run_sweep(plan, engine=two_workers)
    assert timing["workers"] == 2 and timing["executed"] == 3
    assert (plan.out / "sweep.json").read_bytes() == reference
    assert (
        len({run["fingerprint"] for run in found["runs"]}) == 3
    )  # three seeds, three different runs
    entry = found["aggregate"][0]
    figures = entry["metrics"]["ratio_to_optimal"]
    assert (
        figures["n"] == 3
        and figures["min"]
        <= figures["ci_low"]
        <= figures["iqm"]
        <= figures["ci_high"]
        <= figures["max"]
    )
    assert set(entry["expect_met"]) == {
        "ratio_to_optimal",
        "ratio_to_optimal_exact",
        "normalized_score",
    }
    for name in ("sweep.md", "profile.png", "intervals.png"):
        assert (plan.out / name).stat().st_size > 0
    before = attempts(plan.out)
    again, timing = sweep.run_sweep(plan_for(tmp_path / "two"), engine=two_workers, plots=False)
    assert timing["executed"] == 0 and timing["skipped_finished"] == 3
    assert attempts(plan.out) == before and (plan.out / "sweep.json").read_bytes() == reference


def _start_external_cluster(folder: Path) -> tuple[str, list[subprocess.Popen]]:
    """`dask scheduler` and `dask worker --nworkers 2 --nthreads 1`, on localhost."""
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, **sweep.WORKER_ENV, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler_file = folder / "scheduler.json"
    log = open(folder / "cluster.log", "w")
    processes = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists():
        assert time.monotonic() < deadline and processes[0].poll() is None, "no scheduler"
        time.sleep(0.1)
    processes.append(
        subprocess.Popen(
            [
                dask,
                "worker",
                "--scheduler-file",
                str(scheduler_file),
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--no-dashboard",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
    )
    return json.loads(scheduler_file.read_text())["address"], processes


def test_an_external_scheduler_and_workers_give_the_same_sweep(reference, tmp_path):
    address, processes = _start_external_cluster(tmp_path)
    try:
        plan = plan_for(tmp_path / "external")
        found, timing = sweep.run_sweep(plan, scheduler=address, plots=False)
        assert not timing["embedded_cluster"] and timing["executed"] == 3
        assert (plan.out / "sweep.json").read_bytes() == reference
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _run_in_progress(folder: Path, deadline: float) -> tuple[int, Path]:
    """(worker pid, run folder) of a run that has checkpointed and not finished."""
    while time.monotonic() < deadline:
        for path in sorted((folder / "attempts").rglob("*.txt")):
            lines = path.read_text().splitlines()
            run = folder / "runs" / path.parent.name / path.stem
            if (
                len(lines) == 1
                and (run / "checkpoint").is_dir()
                and sweep.run_status(run) not in sweep.FINISHED
            ):
                return int(lines[0].split()[1]), run
        time.sleep(0.02)
    raise AssertionError("no run in progress to kill")


def test_a_worker_killed_mid_run_has_its_run_redone_once(reference, two_workers, tmp_path):
    plan = plan_for(tmp_path / "killed")
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=sweep.run_sweep(plan, engine=two_workers, plots=False))
    )
    thread.start()
    try:
        pid, run = _run_in_progress(plan.out, time.monotonic() + 60)
        os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(timeout=180)
    found, timing = outcome["result"]
    assert [r["status"] for r in found["runs"]] == ["ok"] * 3 and len(found["runs"]) == 3
    redone = attempts(plan.out)[run.name]
    assert (
        len(redone) == 2 and redone[0].split()[1] != redone[1].split()[1]
    )  # on a new worker process
    # resumed from its checkpoint to exactly the metrics of an uninterrupted run
    assert (plan.out / "sweep.json").read_bytes() == reference


def _interactive_signals() -> None:
    """In the child: Ctrl-C delivered as at a terminal (a background job may inherit it ignored),
    in a process group of its own, which the test signals as a terminal signals its foreground."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    os.setpgrp()


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes_to_the_same_sweep(
    reference, two_workers, tmp_path
):
    folder = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "dllab",
        "sweep",
        "rl/q-learning-frozenlake",
        "--quick",
        "--seeds",
        SEEDS,
        "--workers",
        "1",
        "--resamples",
        "2000",
        "--out",
        str(folder),
    ]
    for item in GRID:
        command += ["--set", item]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interactive_signals,
    )
    try:
        _run_in_progress(folder, time.monotonic() + 90)
        os.killpg(process.pid, signal.SIGINT)  # the whole group, workers included, as Ctrl-C does
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    statuses = [sweep.run_status(run) for run in sorted((folder / "runs").glob("*/s*"))]
    assert "interrupted" in statuses and set(statuses) <= {
        "ok",
        "interrupted",
    }  # none left "running"
    sweep.run_sweep(plan_for(folder), engine=two_workers, plots=False)
    assert (folder / "sweep.json").read_bytes() == reference


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    scenarios, code = tmp_path / "scenarios", tmp_path / "code"
    scenarios.mkdir(), code.mkdir()
    (code / "sweep_toy_entry.py").write_text(
        "def run(ctx, value=1):\n"
        "    if value == 2:\n"
        "        raise RuntimeError('value 2 fails on purpose')\n"
        "    return {'score': float(10 * value + ctx.rng().integers(0, 5))}\n"
    )
    (scenarios / "toy.toml").write_text(
        'id = "test/sweep-toy"\ntitle = "a toy for the sweep engine"\nquestions = [20]\n'
        'frameworks = ["numpy"]\nentry = "sweep_toy_entry:run"\n\n[params]\n'
        'value = { default = 1, min = 0, max = 5 }\n\n[expect]\nscore = ">= 5"\n\n'
        '[exempt]\nscore = "a toy scenario for the sweep engine tests"\n'
    )
    monkeypatch.setenv("DLLAB_SCENARIO_PATH", str(scenarios))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(code))
    from dllab import registry

    registry.load_all(refresh=True)
    plan = sweep.plan_sweep(
        "test/sweep-toy", seeds="0-2", sets=["value=1,2"], out=str(tmp_path / "toy"), resamples=500
    )
    found, timing = sweep.run_sweep(plan, workers=1, plots=False)
    statuses = {(r["params"]["value"], r["seed"]): r["status"] for r in found["runs"]}
    assert statuses == {
        (1, 0): "ok",
        (1, 1): "ok",
        (1, 2): "ok",
        (2, 0): "failed",
        (2, 1): "failed",
        (2, 2): "failed",
    }
    assert all("value 2 fails" in r["error"] for r in found["runs"] if r["status"] == "failed")
    ok, failed = found["aggregate"]
    assert (
        ok["metrics"]["score"]["n"] == 3
        and 10 <= ok["metrics"]["score"]["min"] <= ok["metrics"]["score"]["max"] < 15
    )
    assert (
        ok["expect_met"] == {"score": 1.0}
        and failed["expect_met"] == {"score": 0.0}
        and failed["n_failed"] == 3
    )
    again, timing = sweep.run_sweep(plan, workers=1, plots=False)  # failed = finished
    assert timing["executed"] == 0
    registry.load_all(refresh=True)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--set", "episodes=100,abc"], "episodes"),
        (["--set", "no_such_parameter=1,2"], "no parameter"),
        (["--seeds", "5-2"], "empty"),
        (["--seeds", "a-b"], "--seeds"),
        (["--set", "episodes=100,100"], "repeated"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(arguments, message, tmp_path, capsys):
    out = tmp_path / "never"
    status = cli_main(
        ["sweep", "rl/q-learning-frozenlake", "--quick", "--out", str(out), *arguments]
    )
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_grid_parsing():
    assert sweep.parse_seeds("0-3,7,2") == [0, 1, 2, 3, 7]
    assert sweep.parse_grid(["hidden=[64,64],[128]", "lr=0.1,0.2"]) == {
        "hidden": ["[64,64]", "[128]"],
        "lr": ["0.1", "0.2"],
    }
    assert sweep.setting_key({}) == "default"
    assert sweep.setting_key({"hidden": [64, 64], "lr": 0.1}) == "hidden=64x64,lr=0.1"


def test_import_dllab_and_list_import_no_dask():
    code = (
        "import sys, dllab, dllab.cli, dllab.runner, dllab.stats; dllab.cli.main(['list']); "
        "print('LOADED', [m for m in ('dask', 'distributed') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in done.stdout
