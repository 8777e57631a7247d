"""`python -m dllab bench dqn --against sb3`: dllab's DQN against stable-baselines3's, side by side.

For each seed, three runs, each in a fresh process (so peak memory is per run) with the same
thread count and the same step budget:

- `sb3`: stable-baselines3's DQN with the rl-baselines3-zoo configuration;
- `dllab`: dllab's torch DQN with the very same configuration;
- `dllab-default`: dllab's torch DQN with its own default configuration;
- `dllab-batched` (with `--seeds-batched K`): K seeds of dllab-default in one batched computation.

The order of the implementations rotates from seed to seed so that machine drift hits all alike.
All are evaluated the same way: 20 greedy episodes on envs seeded apart from training, with the
greedy policy read from each implementation's Q-network. A periodic evaluation (every
steps/25 env steps) gives the learning curve and the time to solve (the first time the mean
return reaches the env's threshold, 475 on CartPole); time spent evaluating is left out of
`wall_s` and `time_to_solve_s` for every implementation alike.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dllab.errors import UsageError

IMPLEMENTATIONS = ["sb3", "dllab", "dllab-default"]


def _worker(request: dict) -> dict:
    """One benchmark run, inside its own process: returns the measured figures."""
    import random
    import resource

    import gymnasium as gym
    import torch
    from threadpoolctl import threadpool_limits

    from dllab.rl.common import DEFAULT_CONFIGS, ZOO_CONFIGS

    impl, env_id, seed, steps = request["impl"], request["env"], request["seed"], request["steps"]
    torch.set_num_threads(request["threads"])
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    threshold = gym.spec(env_id).reward_threshold
    interval = max(1, steps // 25)
    table = DEFAULT_CONFIGS if impl in ("dllab-default", "dllab-batched") else ZOO_CONFIGS
    from dataclasses import replace

    config = replace(table[env_id], total_steps=steps, eval_interval=interval)
    curve, solve, timings = [], None, None
    start = time.perf_counter()
    with threadpool_limits(request["threads"]):
        if impl == "sb3":
            final, evaluation_s = _sb3(config, seed, interval, threshold, start, curve, request["threads"])
            results = [(seed, final, time.perf_counter() - start - evaluation_s, curve)]
        elif impl == "dllab-batched":
            from dllab.rl.dqn_batched import train_batched

            seeds = list(range(seed, seed + request["batched"]))
            batched = train_batched(config, seeds, threshold=threshold)
            wall = time.perf_counter() - start - batched.timings["evaluation"]
            results = [(s, r.eval_returns, wall, r.curve) for s, r in zip(seeds, batched.results)]
            timings = batched.timings
        else:
            from dllab.rl.dqn_torch import train

            result = train(config, seed, threshold=threshold)
            wall = time.perf_counter() - start - result.timings["evaluation"]
            setup = wall - result.wall_s  # building the net and env: counted in the curve's times too
            curve = [(step, value, seconds + setup) for step, value, seconds in result.curve]
            results = [(seed, result.eval_returns, wall, curve)]
            timings = result.timings
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = []
    for run_seed, final, wall, run_curve in results:
        solve = next((point[2] for point in run_curve if point[1] >= threshold), None)
        runs.append({"impl": impl, "seed": run_seed, "eval_return_mean": float(np.mean(final)),
                     "wall_s": wall, "time_to_solve_s": solve, "steps_per_s": steps / wall,
                     "peak_rss_mb": peak_mb, "threshold": threshold, "timings": timings, "curve": [list(point) for point in run_curve]})
    return {"runs": runs}


def _sb3(config, seed, interval, threshold, start, curve, threads):
    """SB3's DQN with `config`; a callback evaluates every `interval` steps (timed and excluded)."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    from dllab.rl.common import eval_seed, evaluate, mlp_forward

    def greedy_returns(model):
        weights = sb3_weights(model)
        return evaluate(config.env_id, lambda x: mlp_forward(weights, x), config.eval_episodes, eval_seed(seed))

    class PeriodicEvaluation(BaseCallback):
        evaluation_s = 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps % interval == 0 and self.num_timesteps < config.total_steps:
                began = time.perf_counter()
                returns = greedy_returns(self.model)
                PeriodicEvaluation.evaluation_s += time.perf_counter() - began
                train_s = time.perf_counter() - start - PeriodicEvaluation.evaluation_s
                curve.append((self.num_timesteps, float(returns.mean()), train_s))
            return True

    model = DQN("MlpPolicy", config.env_id, learning_rate=config.learning_rate, buffer_size=config.buffer_size,
                learning_starts=config.learning_starts, batch_size=config.batch_size, gamma=config.gamma,
                target_update_interval=config.target_update_interval, train_freq=config.train_freq,
                gradient_steps=config.gradient_steps, exploration_fraction=config.exploration_fraction,
                exploration_initial_eps=config.exploration_initial_eps,
                exploration_final_eps=config.exploration_final_eps, max_grad_norm=config.max_grad_norm,
                policy_kwargs={"net_arch": list(config.hidden)}, seed=seed, device="cpu", verbose=0)
    model.learn(config.total_steps, callback=PeriodicEvaluation())
    began = time.perf_counter()
    final = greedy_returns(model)
    evaluation_s = PeriodicEvaluation.evaluation_s + time.perf_counter() - began
    curve.append((config.total_steps, float(final.mean()), time.perf_counter() - start - evaluation_s))
    return final, evaluation_s


def sb3_weights(model) -> list[np.ndarray]:
    """An SB3 DQN's online Q-network as [W1, b1, ...] (W of shape (in, out)) for `mlp_forward`."""
    layers = [m for m in model.policy.q_net.q_net if hasattr(m, "weight")]
    return [array for layer in layers for array in
            (layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())]


def _spawn(request: dict) -> dict:
    threads = str(request["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    done = subprocess.run([sys.executable, "-m", "dllab.rl.bench", json.dumps(request)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"bench run {request} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(values):
    return float(np.median(values)) if values else None


def _solve_median(runs):
    """Median time to solve, counting a run that never solved as infinitely slow."""
    times = [r["time_to_solve_s"] if r["time_to_solve_s"] is not None else float("inf") for r in runs]
    value = float(np.median(times)) if times else float("inf")
    return None if value == float("inf") else value


def summarize(env_id: str, steps: int, runs: list[dict], threads: int) -> dict:
    by = {impl: [r for r in runs if r["impl"] == impl] for impl in dict.fromkeys(r["impl"] for r in runs)}
    wall = {impl: _median([r["wall_s"] for r in rs]) for impl, rs in by.items()}
    solve = {impl: _solve_median(rs) for impl, rs in by.items()}
    ratio = lambda a, b: a / b if a is not None and b else None
    summary = {"env": env_id, "steps": steps, "threads": threads, "runs": runs,
               "ratio_wall_median": ratio(wall.get("dllab"), wall.get("sb3")),
               "ratio_solve_median": ratio(solve.get("dllab-default"), solve.get("sb3")),
               "median_wall_s": wall, "median_time_to_solve_s": solve,
               "solved_runs": {impl: sum(r["time_to_solve_s"] is not None for r in rs) for impl, rs in by.items()},
               "final_return_at_least_threshold": {impl: sum(r["eval_return_mean"] >= r["threshold"]
                                                             for r in rs) for impl, rs in by.items()}}
    if "dllab-batched" in by and wall.get("dllab-default"):
        summary["ratio_batched_wall"] = by["dllab-batched"][0]["wall_s"] / wall["dllab-default"]
    return summary


def table(summary: dict) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    lines = [f"{'impl':14s} {'seed':>4s} {'return':>7s} {'wall s':>7s} {'solve s':>8s} {'steps/s':>8s} {'peak MB':>8s}"]
    for r in summary["runs"]:
        lines.append(f"{r['impl']:14s} {r['seed']:4d} {r['eval_return_mean']:7.1f} {r['wall_s']:7.1f} "
                     f"{fmt(r['time_to_solve_s'], '8.1f')} {r['steps_per_s']:8.0f} {r['peak_rss_mb']:8.0f}")
    lines.append("")
    for impl, wall in summary["median_wall_s"].items():
        lines.append(f"median {impl:14s} wall {wall:7.1f} s, time to solve "
                     f"{fmt(summary['median_time_to_solve_s'][impl], '.1f')} s, solved "
                     f"{summary['solved_runs'][impl]}, final >= threshold "
                     f"{summary['final_return_at_least_threshold'][impl]}")
    lines.append(f"ratio_wall_median (dllab / sb3, same config): {fmt(summary['ratio_wall_median'], '.3f')}")
    lines.append(f"ratio_solve_median (dllab-default / sb3): {fmt(summary['ratio_solve_median'], '.3f')}")
    if "ratio_batched_wall" in summary:
        lines.append(f"ratio_batched_wall (batched seeds / one dllab-default seed): {summary['ratio_batched_wall']:.2f}")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"sb3": "tab:red", "dllab": "tab:blue", "dllab-default": "tab:green", "dllab-batched": "tab:purple"}
    labelled = set()
    for r in summary["runs"]:
        steps, returns, seconds = zip(*r["curve"])
        label = None if r["impl"] in labelled else r["impl"]
        labelled.add(r["impl"])
        axes[0].plot(steps, returns, color=colors.get(r["impl"]), alpha=0.6, label=label)
        axes[1].plot(seconds, returns, color=colors.get(r["impl"]), alpha=0.6, label=label)
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("training wall seconds (evaluation excluded)")
    for axis in axes:
        axis.set_ylabel("greedy return (20 episodes)")
        axis.legend()
    figure.suptitle(f"DQN on {summary['env']}: dllab vs stable-baselines3 ({summary['threads']} thread(s))")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(args) -> int:
    """The CLI's `bench dqn`: run, print the table, write bench.json and learning_curves.png."""
    from dllab.rl.common import ZOO_CONFIGS

    if args.env not in ZOO_CONFIGS:
        raise UsageError(f"bench dqn: no zoo configuration for {args.env!r} (have: {', '.join(ZOO_CONFIGS)})")
    if args.seeds < 1 or args.steps < 1 or args.threads < 1 or args.seeds_batched < 0:
        raise UsageError("bench dqn: --seeds, --steps and --threads must be positive, --seeds-batched >= 0")
    if args.seeds_batched and args.env != "CartPole-v1":
        raise UsageError("bench dqn: --seeds-batched uses dllab's default configuration, defined for CartPole-v1")
    if importlib.util.find_spec("stable_baselines3") is None:
        raise UsageError("stable-baselines3 is not installed: pip install 'dllab[rl]'")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []

    def spawn(request):
        found = _spawn(request)["runs"]
        runs.extend(found)
        for run in found:
            print(f"  {run['impl']:14s} seed {run['seed']}: return {run['eval_return_mean']:.1f}, "
                  f"wall {run['wall_s']:.1f} s", flush=True)
        # bench.json after every run: an interrupted benchmark keeps what it measured
        write_json(out / "bench.json", summarize(args.env, args.steps, runs, args.threads))

    for seed in range(args.seeds):
        order = IMPLEMENTATIONS[seed % 3:] + IMPLEMENTATIONS[:seed % 3]  # rotate against drift
        for impl in order:
            spawn({"impl": impl, "env": args.env, "seed": seed, "steps": args.steps, "threads": args.threads})
        if seed == 0 and args.seeds_batched:  # early, between the separate runs it is compared with
            spawn({"impl": "dllab-batched", "env": args.env, "seed": 0, "steps": args.steps,
                   "threads": args.threads, "batched": args.seeds_batched})
    summary = summarize(args.env, args.steps, runs, args.threads)
    print(table(summary))
    write_json(out / "bench.json", summary)
    plot(summary, out / "learning_curves.png")
    print(f"wrote {out / 'bench.json'} and {out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
