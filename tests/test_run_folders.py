"""Run folders: the owner record from the first moment, one owner check on `--resume`, refusals
that leave a folder exactly as it was, the folder lock, checkpoints that survive a kill between
their two renames, and temp files that cannot be planted. A tiny numpy scenario (`demo/probe`,
written here) keeps these fast; tests/test_interrupt.py kills real trainers."""

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dllab import checkpoint, registry
from dllab.cli import main
from dllab.errors import UsageError
from dllab.runner import run_scenario

PROBE_TOML = """
id = "demo/probe"
title = "a counter that checkpoints every step"
questions = [1]
frameworks = ["numpy"]
entry = "dllab_probe_entry:run"
[params]
size = { default = 3, min = 1, max = 10 }
steps = { default = 4, min = 1, max = 100 }
[quick]
steps = 3
[expect]
total = ">= -1000"
"""

PROBE_MODULE = '''
import json, sys
import numpy as np
from dllab.errors import UsageError

MODE = "ok"
SEEN = {}

def run(ctx, size, steps):
    record = ctx.out_dir / "result.json"
    SEEN["record"] = json.loads(record.read_text()) if record.exists() else None
    if MODE == "exit":
        sys.exit(3)
    if MODE == "usage":
        raise UsageError("probe: a bad data file")
    start, total, saved = 0, 0.0, ctx.load_checkpoint()
    if saved is not None:
        arrays, meta = saved
        start, total = meta["step"], float(arrays["total"])
    SEEN["started_from"] = start
    for step in range(start, steps):
        total += float(ctx.rng(step).normal()) * size
        if MODE != "no-checkpoint":
            ctx.save_checkpoint({"total": np.array(total)}, {"step": step + 1})
        if MODE == "interrupt" and step + 1 == 2:
            raise KeyboardInterrupt
    return {"total": total, "started_from": start}
'''


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """The probe module and its spec; `registry.get("demo/probe")` finds it for the CLI."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "dllab_probe_entry.py").write_text(PROBE_MODULE)
    (code / "probe.toml").write_text(PROBE_TOML)
    monkeypatch.syspath_prepend(str(code))
    sys.modules.pop("dllab_probe_entry", None)
    import dllab_probe_entry

    spec = registry.load_file(code / "probe.toml")
    original = registry.get
    monkeypatch.setattr(registry, "get", lambda name: spec if name == spec.id else original(name))
    monkeypatch.setenv("DLLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    dllab_probe_entry.spec = spec
    yield dllab_probe_entry
    sys.modules.pop("dllab_probe_entry", None)


def snapshot(folder: Path) -> dict:
    """Every entry under `folder`: kind, bytes or link target, mode and modification time."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            if path.is_symlink():
                state[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                state[str(path)] = ("dir", info.st_mode)
            else:
                state[str(path)] = ("file", path.read_bytes(), info.st_mode, info.st_mtime_ns)
    return state


def refused(capsys, argv: list[str], folder: Path, *needles: str) -> str:
    """Run the CLI in-process: it must exit 2 with one line (naming `needles`) and leave
    `folder` exactly as it was."""
    before = snapshot(folder)
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert snapshot(folder) == before
    return err


def interrupted_run(probe, folder: Path, *args: str) -> None:
    probe.MODE = "interrupt"
    assert main(["run", "demo/probe", "--out", str(folder), *args]) == 130
    probe.MODE = "ok"


def edit_record(folder: Path, **changes) -> None:
    record = json.loads((folder / "result.json").read_text())
    for key, value in changes.items():
        if key == "dllab":
            record["versions"]["dllab"] = value
        else:
            record[key] = value
    (folder / "result.json").write_text(json.dumps(record))


def test_the_owner_record_is_written_when_the_folder_is_created(probe, tmp_path):
    result = run_scenario(probe.spec, seed=7, quick=True, overrides=["size=2"], out_dir=tmp_path / "r")
    seen = probe.SEEN["record"]
    assert seen["status"] == "running"
    assert (seen["scenario"], seen["framework"], seen["device"], seen["seed"], seen["profile"]) == \
        ("demo/probe", "numpy", "cpu", 7, "quick")
    assert seen["params"] == {"size": 2, "steps": 3} and seen["control"] is None
    assert seen["versions"]["dllab"] == result.versions["dllab"]
    final = json.loads((tmp_path / "r" / "result.json").read_text())
    assert final["status"] == "ok" and final["metrics"] == result.metrics


def test_an_entry_calling_sys_exit_is_recorded_as_failed(probe, tmp_path, capsys):
    probe.MODE = "exit"
    assert main(["run", "demo/probe", "--out", "given"]) == 1
    assert main(["run", "demo/probe"]) == 1
    folders = [tmp_path / "given", *(tmp_path / "runs" / "demo" / "probe").iterdir()]
    assert len(folders) == 2
    for folder in folders:
        record = json.loads((folder / "result.json").read_text())
        assert record["status"] == "failed" and "sys.exit(3)" in record["error"]
        assert "SystemExit" in (folder / "traceback.txt").read_text()


def test_bad_input_found_by_the_entry_puts_the_folder_back(probe, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    before = snapshot(mine)
    probe.MODE = "usage"
    with pytest.raises(UsageError, match="bad data file"):
        run_scenario(probe.spec, out_dir=mine)
    assert snapshot(mine) == before
    probe.MODE = "ok"
    interrupted_run(probe, tmp_path / "cut")
    before = snapshot(tmp_path / "cut")
    probe.MODE = "usage"
    with pytest.raises(UsageError, match="bad data file"):
        run_scenario(probe.spec, resume_from=tmp_path / "cut")
    assert contents(snapshot(tmp_path / "cut")) == contents(before)  # the record restored


def contents(state: dict) -> dict:
    """A snapshot less modification times and the lock file (which holds the last run's pid)."""
    return {path: entry[:2] for path, entry in state.items() if not path.endswith(".dllab.lock")}


def test_resume_after_sigkill_like_record_continues_the_checkpoint(probe, tmp_path):
    """A killed run leaves status "running"; `--resume` continues from its checkpoint."""
    whole = run_scenario(probe.spec, out_dir=tmp_path / "whole")
    interrupted_run(probe, tmp_path / "cut")
    edit_record(tmp_path / "cut", status="running", metrics={})
    resumed = run_scenario(probe.spec, resume_from=tmp_path / "cut")
    assert probe.SEEN["started_from"] == 2
    assert resumed.status == "ok" and resumed.metrics["total"] == whole.metrics["total"]


@pytest.mark.parametrize("field,change,needles", [
    ("seed", ["--seed", "1"], ["seed 0", "seed 1"]),
    ("profile", ["--quick"], ["profile 'full'", "profile 'quick'"]),
    ("params", ["--set", "size=5"], ["parameter size 3", "parameter size 5"]),
    ("framework", {"framework": "torch"}, ["framework 'torch'", "framework 'numpy'"]),
    ("device", {"device": "cuda"}, ["device 'cuda'", "device 'cpu'"]),
    ("control", {"control": "no-target-update"}, ["control 'no-target-update'", "control None"]),
    ("keras_backend", {"keras_backend": "jax"}, ["keras_backend 'jax'"]),
    ("dllab version", {"dllab": "0.0.1"}, ["dllab version '0.0.1'"]),
    ("scenario", {"scenario": "rl/q-learning-taxi"}, ["holds a run of 'rl/q-learning-taxi'"]),
])
def test_resume_refuses_any_owner_mismatch_naming_both_values(probe, tmp_path, capsys, field, change, needles):
    interrupted_run(probe, tmp_path / "cut")
    extra = change if isinstance(change, list) else []
    if isinstance(change, dict):
        edit_record(tmp_path / "cut", **change)
    refused(capsys, ["run", "demo/probe", "--resume", str(tmp_path / "cut"), *extra], tmp_path / "cut", *needles)


def test_resume_refuses_a_folder_without_a_checkpoint(probe, tmp_path, capsys):
    probe.MODE = "no-checkpoint"
    main(["run", "demo/probe", "--out", "plain"])
    probe.MODE = "ok"
    refused(capsys, ["run", "demo/probe", "--resume", "plain"], tmp_path / "plain", "no checkpoint")
    refused(capsys, ["run", "demo/probe", "--resume", "absent"], tmp_path, "not a dllab run folder")


@pytest.mark.parametrize("content,needle", [
    ("[1, 2, 3]", "holds a JSON list"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"scenario": "demo/probe", "seed": "0"}', "no field 'status'"),
    ('{"scenario": ["demo/probe"], "status": "ok"}', "field 'scenario'"),
    ('{"scenario": "demo/probe", "status": "ok", "framework": "numpy", "device": "cpu", "seed": true, '
     '"profile": "full", "params": {}, "versions": {"dllab": "0"}}', "field 'seed' is True"),
    ('{"scenario": "demo/probe", "status": "ok", "framework": "numpy", "device": "cpu", "seed": 0, '
     '"profile": "full", "params": [], "versions": {"dllab": "0"}}', "field 'params'"),
    ("not json {", "not valid JSON"),
    ('"just a string"', "holds a JSON str"),
])
def test_resume_of_a_malformed_record_is_one_line_and_changes_nothing(probe, tmp_path, capsys, content, needle):
    interrupted_run(probe, tmp_path / "cut")
    (tmp_path / "cut" / "result.json").write_text(content)
    refused(capsys, ["run", "demo/probe", "--resume", str(tmp_path / "cut")], tmp_path / "cut", needle)
    refused(capsys, ["run", "demo/probe", "--out", str(tmp_path / "cut")], tmp_path / "cut", needle)


def test_out_on_another_runs_folder_is_refused(probe, tmp_path, capsys):
    assert main(["run", "demo/probe", "--out", "done"]) == 0
    refused(capsys, ["run", "demo/probe", "--out", "done", "--seed", "4"], tmp_path / "done",
            "holds a run of demo/probe", "--resume done", "choose another --out")
    interrupted_run(probe, tmp_path / "cut")
    (tmp_path / "cut" / "result.json").unlink()  # a checkpoint alone still belongs to a run
    refused(capsys, ["run", "demo/probe", "--out", "cut"], tmp_path / "cut", "holds a checkpoint")


def test_out_on_a_file_or_with_another_resume_folder_is_refused(probe, tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine")
    refused(capsys, ["run", "demo/probe", "--out", "a-file"], tmp_path, "not a folder")
    interrupted_run(probe, tmp_path / "cut")
    refused(capsys, ["run", "demo/probe", "--resume", "cut", "--out", "elsewhere"], tmp_path,
            "resumes in its own folder")


def test_a_folder_locked_by_a_live_run_is_refused_at_once(probe, tmp_path, capsys):
    interrupted_run(probe, tmp_path / "cut")
    (tmp_path / "empty").mkdir()
    handles = []
    for folder in ("cut", "empty"):
        handle = open(tmp_path / folder / ".dllab.lock", "a+")  # what a live run does
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.truncate(0)
        handle.write("4242\n")
        handle.flush()
        handles.append(handle)
    try:
        start = time.monotonic()
        refused(capsys, ["run", "demo/probe", "--resume", "cut"], tmp_path / "cut", "in use", "pid 4242")
        refused(capsys, ["run", "demo/probe", "--out", "empty"], tmp_path / "empty", "in use", "pid 4242")
        assert time.monotonic() - start < 5.0
    finally:
        for handle in handles:
            handle.close()
    assert main(["run", "demo/probe", "--resume", "cut"]) == 0  # free again once the holder ends


def test_two_runs_racing_for_one_folder_never_mix(tmp_path):
    """Started together on one empty folder: one runs, the other exits 2 (locked, or the folder
    already holds the first run); the folder holds one whole run."""
    (tmp_path / "shared").mkdir()
    command = [sys.executable, "-m", "dllab", "run", "rl/q-learning-frozenlake", "--quick", "--set",
               "episodes=400", "--set", "eval_episodes=20", "--out", "shared"]
    runs = [subprocess.Popen([*command, "--seed", str(seed)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    statuses = sorted(status for status, _ in outcomes)
    assert statuses[0] in (0, 1) and statuses[1] == 2, outcomes
    winner = 1 + [status for status, _ in outcomes].index(statuses[0])
    record = json.loads((tmp_path / "shared" / "result.json").read_text())
    assert record["status"] == "ok" and record["seed"] == winner
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.endswith(".tmp")]


def _arrays(value: float) -> dict:
    return {"w": np.full(3, value)}


def test_a_kill_between_the_two_renames_leaves_a_copy_load_uses(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint"
    checkpoint.save(target, _arrays(1.0), {"epoch": 1})
    real_replace, calls = os.replace, []

    def replace_then_die(source, destination):
        calls.append(destination)
        if len(calls) == 2:  # after `checkpoint -> checkpoint.old`, before `tmp -> checkpoint`
            raise KeyboardInterrupt("killed")
        real_replace(source, destination)

    monkeypatch.setattr(checkpoint.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(target, _arrays(2.0), {"epoch": 2})
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    assert not target.exists() and (tmp_path / "checkpoint.old").is_dir()
    arrays, meta = checkpoint.load(target)
    assert meta == {"epoch": 1} and arrays["w"].tolist() == [1.0, 1.0, 1.0]
    assert checkpoint.find(target) == tmp_path / "checkpoint.old"
    checkpoint.save(target, _arrays(3.0), {"epoch": 3})  # the next save completes the swap
    assert checkpoint.load(target)[1] == {"epoch": 3} and not (tmp_path / "checkpoint.old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_load_falls_back_when_the_main_copy_is_incomplete_or_unreadable(tmp_path):
    target = tmp_path / "checkpoint"
    checkpoint.save(target, _arrays(1.0), {"epoch": 1})
    os.rename(target, tmp_path / "checkpoint.old")
    checkpoint.save(tmp_path / "scratch", _arrays(2.0), {"epoch": 2})
    os.rename(tmp_path / "scratch", target)
    (target / "meta.json").write_text("{ truncated")
    assert checkpoint.load(target)[1] == {"epoch": 1}
    (target / "meta.json").unlink()
    assert checkpoint.load(target)[1] == {"epoch": 1}
    (tmp_path / "checkpoint.old" / "arrays.npz").unlink()
    with pytest.raises(UsageError, match="not a usable dllab checkpoint"):
        checkpoint.load(target)


def test_checkpoint_save_follows_no_planted_name(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    runs = tmp_path / "run"
    runs.mkdir()
    for name in ("checkpoint.tmp", ".checkpoint.planted.tmp", "checkpoint.old.tmp"):
        (runs / name).symlink_to(victim)
    checkpoint.save(runs / "checkpoint", _arrays(1.0), {"epoch": 1})
    checkpoint.save(runs / "checkpoint", _arrays(2.0), {"epoch": 2})
    assert checkpoint.load(runs / "checkpoint")[1] == {"epoch": 2}
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "precious"


def test_stale_checkpoint_temp_folders_of_a_killed_save_are_removed(tmp_path):
    stale = tmp_path / ".checkpoint.abc123.tmp"
    stale.mkdir()
    (stale / "arrays.npz").write_bytes(b"half")
    checkpoint.save(tmp_path / "checkpoint", _arrays(1.0), {"epoch": 1})
    assert not stale.exists()


def test_bench_json_is_written_through_an_exclusive_temp_file(tmp_path):
    from dllab.rl.bench import write_json

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "bench.json.tmp").symlink_to(victim)
    write_json(tmp_path / "bench.json", {"a": 1.0, "b": float("nan")})
    assert victim.read_text() == "precious"
    assert json.loads((tmp_path / "bench.json").read_text()) == {"a": 1.0, "b": None}


def test_a_figure_is_written_through_an_exclusive_temp_file(probe, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dllab.context import RunContext

    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "plot.png").symlink_to(victim)
    ctx = RunContext(spec=probe.spec, seed=0, framework="numpy", device="cpu", profile="quick",
                     out_dir=tmp_path / "out", threads=1, params={})
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    ctx.save_figure(figure, "plot")
    assert victim.read_bytes() == b"precious"
    path = tmp_path / "out" / "plot.png"
    assert not path.is_symlink() and path.read_bytes().startswith(b"\x89PNG")
