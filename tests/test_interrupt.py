"""Interrupted runs: Ctrl-C or SIGTERM stops a run within seconds, leaves a valid result.json with
status "interrupted" and a checkpoint, and `--resume` continues to the uninterrupted metrics."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["rl/q-learning-frozenlake", "--set", "episodes=12000", "--set", "eval_episodes=300",
        "--set", "checkpoint_every=500"]


def _interactive_signals() -> None:
    """In the child before it runs: Ctrl-C delivered as at a terminal. A command started in the
    background by a non-interactive shell (`cmd &` in a script, as CI runners may do) inherits
    an ignored SIGINT, and Python then never raises KeyboardInterrupt, as POSIX intends: the run
    would finish with exit 0. The test is about the terminal case."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _start(folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dllab", "run", *ARGS, "--out", str(folder), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interactive_signals)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_run_and_resume_reaches_the_same_metrics(tmp_path, signal_number):
    process = _start(tmp_path / "cut")
    _wait_for(tmp_path / "cut" / "checkpoint" / "meta.json", process)
    sent = time.monotonic()
    process.send_signal(signal_number)
    process.communicate(timeout=60)
    # The signal, not the end of the episodes, stopped the run: exit status 130 and status
    # "interrupted". The time bound only catches a slow teardown (the whole run takes ~6 s alone;
    # under the parallel test suite on 2 cores, stopping has taken up to ~5.5 s).
    assert time.monotonic() - sent < 15.0
    assert process.returncode == 130, f"exit {process.returncode}; SIGINT here: {signal.getsignal(signal.SIGINT)}"
    cut = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert cut["status"] == "interrupted"
    checkpoint_episode = json.loads((tmp_path / "cut" / "checkpoint" / "meta.json").read_text())["episode"]
    assert 0 < checkpoint_episode < 12000

    resumed = subprocess.run([sys.executable, "-m", "dllab", "run", *ARGS, "--resume", str(tmp_path / "cut")],
                             capture_output=True, text=True, timeout=300)
    whole = subprocess.run([sys.executable, "-m", "dllab", "run", *ARGS, "--out", str(tmp_path / "whole")],
                           capture_output=True, text=True, timeout=300)
    assert resumed.returncode in (0, 1) and whole.returncode in (0, 1), resumed.stderr + whole.stderr
    resumed_result = json.loads((tmp_path / "cut" / "result.json").read_text())
    whole_result = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert resumed_result["status"] == "ok"
    assert resumed_result["metrics"] == whole_result["metrics"]


def test_resume_of_a_folder_that_is_no_run_is_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dllab", "run", *ARGS, "--resume", str(tmp_path / "nothing")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a dllab run folder" in done.stderr
    other = subprocess.run([sys.executable, "-m", "dllab", "run", "rl/q-learning-cliffwalking", "--quick",
                            "--out", str(tmp_path / "cliff"), "--set", "episodes=20", "--set", "eval_episodes=2"],
                           capture_output=True, text=True)
    assert other.returncode in (0, 1)
    done = subprocess.run([sys.executable, "-m", "dllab", "run", *ARGS, "--resume", str(tmp_path / "cliff")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "holds a run of" in done.stderr


def test_two_simultaneous_runs_never_share_a_folder(tmp_path):
    command = [sys.executable, "-m", "dllab", "run", "rl/q-learning-cliffwalking", "--quick",
               "--set", "episodes=30", "--set", "eval_episodes=3"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(3)]
    for process in processes:
        process.wait(timeout=120)
    folders = list((tmp_path / "runs" / "rl" / "q-learning-cliffwalking").iterdir())
    assert len(folders) == 3
    assert all(json.loads((f / "result.json").read_text())["scenario"] == "rl/q-learning-cliffwalking" for f in folders)


# SIGKILL (or the OOM killer) gives a run no chance to write anything: the owner record written
# when the folder was created (status "running") and the last whole checkpoint are all it leaves.
# Each trainer is killed twice at checkpoints (the fresh run, then the resumed one), a resume
# with another seed is refused without a change, and the last resume ends where an uninterrupted
# run does. Sizes are small: the quick profile, a few epochs or steps, a checkpoint at each.
KILLED = {
    "tabular": (["rl/q-learning-frozenlake", "--quick", "--set", "episodes=6000", "--set", "eval_episodes=200",
                 "--set", "checkpoint_every=500"], "episode", (1000, 3000)),
    "cnn": (["supervised/cnn", "--quick", "--framework", "torch", "--set", "epochs=4"], "epoch", (1, 2)),
    "dqn": (["rl/dqn-cartpole", "--quick", "--framework", "torch", "--set", "total_steps=3000",
             "--set", "checkpoint_every=500", "--set", "eval_interval=1000", "--set", "eval_episodes=3"],
            "step", (500, 1500)),
    "gan": (["gan/gan", "--quick", "--framework", "torch", "--set", "epochs=4", "--set", "checkpoint_every=1"],
            "epoch", (1, 2)),
}


def _checkpointed(folder: Path, key: str) -> int:
    """How far the folder's newest whole checkpoint is (0 if none yet, or while it is replaced)."""
    try:
        return int(json.loads((folder / "checkpoint" / "meta.json").read_text())[key])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_after(command: list[str], folder: Path, key: str, reached: int) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _checkpointed(folder, key) < reached:
        assert process.poll() is None, f"the run ended before checkpoint {reached}: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "running" and record["metrics"] == {}


@pytest.mark.parametrize("trainer", sorted(KILLED))
def test_sigkill_at_checkpoints_then_resume_reaches_the_uninterrupted_metrics(tmp_path, trainer):
    from dllab import registry

    args, key, points = KILLED[trainer]
    if trainer != "tabular":
        pytest.importorskip("torch")
    run = [sys.executable, "-m", "dllab", "run", *args]
    whole = subprocess.Popen([*run, "--out", str(tmp_path / "whole")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    cut = tmp_path / "cut"
    _kill_after([*run, "--out", str(cut)], cut, key, points[0])
    before = {p: p.read_bytes() for p in cut.rglob("*") if p.is_file()}
    other_seed = subprocess.run([*run, "--seed", "1", "--resume", str(cut)], capture_output=True, text=True)
    assert other_seed.returncode == 2 and "seed 0, this run seed 1" in other_seed.stderr, other_seed.stderr
    assert {p: p.read_bytes() for p in cut.rglob("*") if p.is_file()} == before
    _kill_after([*run, "--resume", str(cut)], cut, key, points[1])
    resumed = subprocess.run([*run, "--resume", str(cut)], capture_output=True, text=True, timeout=600)
    assert whole.wait(timeout=600) in (0, 1) and resumed.returncode in (0, 1), resumed.stderr + whole.stderr.read()
    resumed_record = json.loads((cut / "result.json").read_text())
    whole_record = json.loads((tmp_path / "whole" / "result.json").read_text())
    volatile = set(registry.get(args[0]).volatile)
    assert resumed_record["status"] == whole_record["status"] == "ok"
    assert resumed_record["fingerprint"] == whole_record["fingerprint"]
    assert {k: v for k, v in resumed_record["metrics"].items() if k not in volatile} == \
        {k: v for k, v in whole_record["metrics"].items() if k not in volatile}
