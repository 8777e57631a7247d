"""DDP launches, repeated: every launch hands back correct results, whatever happens at exit;
the same worker runs under torchrun; an interrupted launch leaves no process behind."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dllab.concepts.distributed_torch import launch, make_model, make_problem, train  # noqa: E402

WORKER = dict(seed=0, batch=16, features=4, hidden=8, steps=2, learning_rate=0.1)


def single_process_result():
    problem = make_problem(WORKER["seed"], WORKER["batch"], WORKER["features"], WORKER["hidden"])
    return train(make_model(problem), torch.from_numpy(problem["inputs"]), torch.from_numpy(problem["targets"]),
                 steps=WORKER["steps"], learning_rate=WORKER["learning_rate"])


def check_ranks(ranks, single):
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["first_gradients"] == ranks[1]["first_gradients"]  # bit for bit
    assert ranks[0]["final_parameters"] == ranks[1]["final_parameters"]
    np.testing.assert_allclose(ranks[0]["first_gradients"], single["first_gradients"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ranks[0]["final_parameters"], single["final_parameters"], rtol=0, atol=1e-12)


def test_ddp_launch_twenty_times_in_a_row(tmp_path):
    """20 launches of 2 gloo processes: each one returns both ranks' correct results (a crash at
    exit after the results arrived is counted, never mistaken for a failure)."""
    single = single_process_result()
    crashes, durations = 0, []
    for index in range(20):
        start = time.perf_counter()
        collected = launch(tmp_path / f"launch{index}", world_size=2, threads=1, timeout=120, worker_args=WORKER)
        durations.append(time.perf_counter() - start)
        check_ranks(collected["ranks"], single)
        crashes += collected["teardown_crashes"]
    print(f"20 launches: {crashes} teardown crashes after results, median {np.median(durations):.2f} s each "
          f"(first, with the fork server's start: {durations[0]:.1f} s)")
    assert not multiprocessing.active_children()


def test_same_worker_runs_under_torchrun(tmp_path):
    """`torchrun --standalone --nproc-per-node 2 -m dllab.concepts.distributed_torch` gives the same result."""
    arguments = [f"--{k.replace('_', '-')}={v}" for k, v in WORKER.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DLLAB_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "dllab.concepts.distributed_torch", f"--out={tmp_path}", *arguments],
                          env=env, capture_output=True, text=True, timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    check_ranks(ranks, single_process_result())
    assert done.returncode == 0, done.stderr[-2000:]


def test_launch_that_times_out_leaves_no_worker(tmp_path):
    with pytest.raises(RuntimeError, match="no result in 3 attempts"):
        launch(tmp_path, world_size=2, threads=1, timeout=0.0, worker_args=WORKER)
    assert not multiprocessing.active_children()


def test_uneven_split_is_refused_with_a_message(tmp_path):
    """A batch that does not split evenly would make DDP's average differ from the whole batch's."""
    with pytest.raises(RuntimeError, match="does not split evenly"):
        launch(tmp_path, world_size=2, threads=1, timeout=60, worker_args={**WORKER, "batch": 15})
