"""DistributedDataParallel with real processes (seed question 31), checked against one process.

DDP is data parallelism: every process holds the whole model and takes its own slice of each
batch; during `backward()` the gradients are averaged across processes by all-reduce (in buckets,
overlapped with the rest of backward), and `backward()` returns only when that is done, so every
process applies the same update. Measured here with 2 processes on the gloo backend (CPU):

- after `backward()` the gradients are identical, bit for bit, on every rank (synchronous);
- they equal the gradient of one process on the whole batch, and so do the parameters after
  several optimizer steps (float64, tight tolerance);
- each rank holds all the parameters (read back from its own module after DDP's constructor,
  which broadcasts rank 0's weights: the other ranks start from other random weights) and its
  input tensor holds 1/world of the batch's rows, the ranks' rows together the whole batch.

The worker (`worker`) is configured by the environment variables that `torchrun` sets (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The scenario starts the processes itself
(`launch`: a multiprocessing fork server, a free localhost port, those variables); on several
machines the same worker runs as this module run as a program:

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank <0 or 1> --master-addr <host of rank 0> \\
        --master-port 29500 -m dllab.concepts.distributed_torch --out results/

Each worker writes its result file (atomically) before an orderly barrier and shutdown, and
then leaves with `os._exit`, skipping interpreter teardown: gloo's background threads have been
seen to abort a process at exit ("terminate called without an active exception") after a
correct result. Should that still happen, a crash after the result arrived is counted in
`teardown_crashes` and reported, not mistaken for a wrong result.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dllab.fileio import write_json_atomic


def make_problem(seed: int, batch: int, features: int, hidden: int) -> dict[str, np.ndarray]:
    """Inputs, targets and initial weights (float64), the same in every process."""
    rng = np.random.default_rng([seed, 31])
    return {
        "inputs": rng.normal(size=(batch, features)),
        "targets": rng.normal(size=(batch, 1)),
        "0.weight": rng.normal(size=(hidden, features)) / np.sqrt(features),
        "0.bias": np.zeros(hidden),
        "2.weight": rng.normal(size=(1, hidden)) / np.sqrt(hidden),
        "2.bias": np.zeros(1),
    }


def make_model(problem: dict[str, np.ndarray]) -> torch.nn.Module:
    features, hidden = problem["0.weight"].shape[1], problem["0.weight"].shape[0]
    model = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).double()
    model.load_state_dict({name: torch.from_numpy(problem[name]) for name in model.state_dict()})
    return model


def train(model, inputs, targets, *, steps: int, learning_rate: float, sync=None) -> dict[str, list]:
    """`steps` SGD steps on (inputs, targets); the gradients of the first step and the final weights.
    `sync()` (optional) is a context entered around each forward and backward pass."""
    import contextlib

    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    first_gradients, losses = None, []
    for _ in range(steps):
        optimizer.zero_grad()
        with sync() if sync else contextlib.nullcontext():  # DDP decides in forward whether to sync
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            loss.backward()  # under DDP: returns after the all-reduce of every bucket
        if first_gradients is None:
            first_gradients = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).tolist()
        optimizer.step()
        losses.append(loss.item())
    return {"first_gradients": first_gradients, "losses": losses,
            "final_parameters": torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()}


def rank_share(rank: int, world: int, batch: int, fault: str) -> slice:
    """This rank's rows of the batch: its own 1/world slice (or a control's mistake)."""
    if fault == "whole-batch":  # the mistake: every rank trains on the whole batch
        return slice(0, batch)
    if fault == "same-shard":  # the mistake: the slice ignores the rank
        rank = 0
    return slice(rank * batch // world, (rank + 1) * batch // world)


def rank_model(problem: dict, rank: int, fault: str):
    """The rank's DDP model. DDP broadcasts rank 0's parameters at construction, so every rank
    starts from the same weights even when each built its own (here: rank > 0 from other
    random weights, as independent processes would)."""
    from torch.nn.parallel import DistributedDataParallel

    model = make_model(problem)
    if rank > 0:
        generator = torch.Generator().manual_seed(1000 + rank)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    # the mistake of control replicas-start-different: DDP's initial broadcast switched off
    return DistributedDataParallel(model, init_sync=fault != "replicas-start-different")


def worker(out_dir: Path, *, seed: int, batch: int, features: int, hidden: int, steps: int,
           learning_rate: float, timeout_s: float = 300.0, fault: str = "none") -> None:
    """One DDP process, configured by torchrun's environment variables. A rank whose peers never
    arrive gives up after `timeout_s` instead of gloo's default of 30 minutes."""
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(int(os.environ.get("DLLAB_THREADS", "1")))
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch % world:
        raise ValueError(f"the batch of {batch} does not split evenly over {world} processes")
    problem = make_problem(seed, batch, features, hidden)
    share = rank_share(rank, world, batch, fault)
    model = rank_model(problem, rank, fault)
    initial = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()
    inputs = torch.from_numpy(problem["inputs"][share])
    # the mistake of control no-all-reduce: training under no_sync(), which skips the all-reduce
    result = train(model, inputs, torch.from_numpy(problem["targets"][share]), steps=steps,
                   learning_rate=learning_rate, sync=model.no_sync if fault == "no-all-reduce" else None)
    result.update(rank=rank, world_size=world, initial_parameters=initial, received_inputs=inputs.tolist())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / f"rank{rank}.json", result)  # handed back before teardown
    dist.barrier()  # every rank has written its result
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _exit_when_gone(launcher_pid: int) -> None:
    """Leave as soon as the launching process is gone (killed mid-launch, say): no orphan ranks."""
    while True:
        try:
            os.kill(launcher_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        time.sleep(0.25)


def _start_rank(rank: int, world_size: int, port: int, threads: int, folder: Path, log: Path,
                launcher_pid: int, worker_args: dict) -> None:
    """A started process: stderr to a log file, a watch on the launcher, torchrun's variables,
    then the worker."""
    import threading

    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 2)
    threading.Thread(target=_exit_when_gone, args=(launcher_pid,), daemon=True).start()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      DLLAB_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    worker(folder, **worker_args)


def _log_tail(path: Path) -> str:
    """The end of a worker's log; a worker stopped before it started has none."""
    return path.read_text()[-2000:] if path.exists() else f"{path.name}: no log (stopped before it started)"


def launch(out_dir: Path, *, world_size: int, threads: int, timeout: float, worker_args: dict) -> dict:
    """Start `world_size` workers on a free localhost port as torchrun would, wait, collect.

    The processes come from a multiprocessing fork server (a fresh `sys.executable` that has
    imported torch once), so each launch starts in well under a second. Returns the ranks'
    results and how many workers crashed after handing theirs back. (As with any multiprocessing
    program, a script that calls this needs the `if __name__ == "__main__":` guard.) A start-up failure before
    results (a port taken between probing and binding, say) is retried twice on a new port."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dllab.concepts.distributed_torch", "torch._dynamo"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        folder = out_dir / f"attempt{attempt}"
        port, processes = free_port(), []
        try:
            for rank in range(world_size):
                processes.append(context.Process(target=_start_rank, args=(
                    rank, world_size, port, threads, folder, out_dir / f"attempt{attempt}-rank{rank}.log",
                    os.getpid(), {**worker_args, "timeout_s": timeout})))
                processes[-1].start()
            deadline = time.monotonic() + timeout
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
        finally:  # also on Ctrl-C or a timeout: no worker outlives the scenario
            for process in processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
                if process.is_alive():
                    process.kill()
                    process.join()
        results = [folder / f"rank{rank}.json" for rank in range(world_size)]
        if all(path.exists() for path in results):
            return {"ranks": [json.loads(path.read_text()) for path in results], "attempts": attempt + 1,
                    "teardown_crashes": sum(process.exitcode != 0 for process in processes)}
    logs = "\n".join(_log_tail(out_dir / f"attempt2-rank{r}.log") for r in range(world_size))
    raise RuntimeError(f"DDP workers gave no result in 3 attempts; last logs:\n{logs}")


def holdings(ranks: list[dict], problem: dict) -> dict[str, float]:
    """What each rank held and received, from its own tensors: the fraction of the model's initial
    parameter values it held (1: a whole replica), the fraction of the batch's rows its input
    tensor had, and the fraction of the batch that some rank received."""
    reference = np.concatenate([problem[name].reshape(-1) for name in ("0.weight", "0.bias", "2.weight", "2.bias")])
    held = min(float(np.mean(np.array(r["initial_parameters"]) == reference)) for r in ranks)
    rows = {tuple(row): index for index, row in enumerate(problem["inputs"].tolist())}
    received = [[rows[tuple(row)] for row in r["received_inputs"] if tuple(row) in rows] for r in ranks]
    batch = len(problem["inputs"])
    return {
        "params_per_rank_fraction": held,
        "samples_per_rank_fraction": max(len(set(indices)) for indices in received) / batch,
        "batch_coverage": len(set().union(*map(set, received))) / batch,
    }


def agreement(ranks: list[dict], single: dict) -> dict[str, float]:
    """Ranks against each other and against one process on the whole batch."""
    def spread(key: str) -> float:
        values = np.array([r[key] for r in ranks])
        return float(np.abs(values - values[0]).max())

    def versus_single(key: str) -> float:
        return max(float(np.abs(np.array(r[key]) - np.array(single[key])).max()) for r in ranks)

    mean_rank_loss = np.mean([r["losses"][0] for r in ranks])  # equal slices: the mean of means
    return {
        "grad_max_abs_diff_between_ranks": spread("first_gradients"),
        "params_max_abs_diff_between_ranks": spread("final_parameters"),
        "grad_vs_single_process_max_abs_diff": versus_single("first_gradients"),
        "params_vs_single_process_max_abs_diff": versus_single("final_parameters"),
        "loss_vs_single_process_abs_diff": abs(float(mean_rank_loss) - single["losses"][0]),
    }


def run(ctx, *, world_size: int, batch: int, features: int, hidden: int, steps: int,
        learning_rate: float, timeout_s: float, fault: str) -> dict[str, float]:
    if batch % world_size:
        raise ValueError(f"the batch of {batch} does not split evenly over {world_size} processes")
    worker_args = dict(seed=ctx.seed, batch=batch, features=features, hidden=hidden, steps=steps,
                       learning_rate=learning_rate, fault=fault)
    collected = launch(ctx.artifact("ddp"), world_size=world_size, threads=ctx.threads, timeout=timeout_s,
                       worker_args=worker_args)
    ranks = collected["ranks"]
    problem = make_problem(ctx.seed, batch, features, hidden)
    single = train(make_model(problem), torch.from_numpy(problem["inputs"]), torch.from_numpy(problem["targets"]),
                   steps=steps, learning_rate=learning_rate)
    if collected["teardown_crashes"]:
        print(f"note: {collected['teardown_crashes']} DDP worker(s) crashed at exit after handing back "
              "their result (harmless; see ddp/*.log)", file=sys.stderr)
    return {
        "world_size": len(ranks),
        **agreement(ranks, single),
        **holdings(ranks, problem),
        "teardown_crashes": collected["teardown_crashes"],
        "launch_attempts": collected["attempts"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One DDP worker (run by concepts/distributed or torchrun).")
    parser.add_argument("--out", type=Path, required=True, help="folder for rank<N>.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="give up if peers do not arrive")
    args = parser.parse_args(argv)
    worker(args.out, seed=args.seed, batch=args.batch, features=args.features, hidden=args.hidden,
           steps=args.steps, learning_rate=args.learning_rate, timeout_s=args.timeout_s)


if __name__ == "__main__":
    main()
