"""`python -m dllab bench dqn --against sb3`: dllab's DQN against stable-baselines3's, side by side.

On CartPole-v1, Acrobot-v1 and MountainCar-v0 (rl-baselines3-zoo configurations), for each of
10 seeds by default (`--seeds`, from `--seeds-from`), one run of each implementation, each in a
fresh process (so peak memory is per run) with one thread and the same step budget:

- `sb3`: stable-baselines3's DQN with the rl-baselines3-zoo configuration;
- `dllab`: dllab's fast torch DQN engine (`dllab.rl.dqn_torch_fast`), the very same configuration;
- `dllab-default`: the same engine with dllab's own default configuration (CartPole only);
- `keras-tensorflow`, `keras-torch` (`--impl keras`): dllab's Keras DQN, zoo configuration;
- `dllab-batched` (with `--seeds-batched K`): K seeds of dllab-default in one batched computation.

The runs are tasks of the sweep engine (`dllab.sweep`: an embedded Dask cluster of `--workers`
one-thread processes, or `--scheduler ADDRESS`); each run's figures are kept in
`OUT/runs/<env>/<impl>/s<seed>.json`, so an interrupted benchmark continues where it stopped.
The order of the implementations rotates from seed to seed so that machine drift hits all alike.
All are evaluated the same way: 20 greedy episodes on envs seeded apart from training, with the
greedy policy read from each implementation's Q-network. A periodic evaluation (every
steps/25 env steps) gives the learning curve and the time to solve (the first time the mean
return reaches the env's threshold, 475 on CartPole); time spent evaluating is left out of
`wall_s` and `time_to_solve_s` for every implementation alike. Per env and implementation the
summary gives the IQM and 95% stratified-bootstrap interval (dllab.stats) of the time to solve
(an unsolved run counts as never: +inf) and of the final return, the fraction solved, and the
probability that a dllab run solves faster than an SB3 run.
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

IMPLEMENTATIONS = ["sb3", "dllab", "dllab-default"]  # the default --impl
KNOWN_IMPLEMENTATIONS = ["sb3", "dllab", "dllab-default", "keras-tensorflow", "keras-torch"]
ENVS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]
DEFAULT_SEEDS = 10


def _worker(request: dict) -> dict:
    """One benchmark run, inside its own process: returns the measured figures."""
    import random
    import resource

    import gymnasium as gym
    from threadpoolctl import threadpool_limits

    from dllab.rl.common import DEFAULT_CONFIGS, ZOO_CONFIGS

    impl, env_id, seed, steps = request["impl"], request["env"], request["seed"], request["steps"]
    random.seed(seed), np.random.seed(seed)
    if impl != "keras-tensorflow":  # Keras on TensorFlow does not load torch (its memory counts)
        import torch

        torch.set_num_threads(request["threads"])
        torch.manual_seed(seed)
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
            if impl.startswith("keras"):
                from dllab.rl.dqn_keras import train
            else:
                from dllab.rl.dqn_torch_fast import train

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
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "DLLAB_THREADS": threads}
    if request["impl"].startswith("keras-"):
        env["KERAS_BACKEND"] = request["impl"].removeprefix("keras-")
    with subprocess.Popen([sys.executable, "-m", "dllab.rl.bench", json.dumps(request)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as process:
        while True:  # wake every second: a stopped sweep's KeyboardInterrupt lands here, and kills the run
            try:
                stdout, stderr = process.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                continue
            except BaseException:
                process.kill()
                raise
    if process.returncode != 0:
        raise RuntimeError(f"bench run {request} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _median(values):
    return float(np.median(values)) if values else None


def _solve_median(runs):
    """Median time to solve, counting a run that never solved as infinitely slow."""
    times = [r["time_to_solve_s"] if r["time_to_solve_s"] is not None else float("inf") for r in runs]
    value = float(np.median(times)) if times else float("inf")
    return None if value == float("inf") else value


def summarize(env_id: str, steps: int, runs: list[dict], threads: int, resamples: int = 10_000) -> dict:
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
    summary["stats"] = {impl: interval_stats(rs, resamples) for impl, rs in by.items()}
    summary["probability_faster_than_sb3"] = {
        impl: probability_faster(rs, by["sb3"], resamples) for impl, rs in by.items()
        if impl != "sb3" and "sb3" in by}
    return summary


def _solve_times(runs: list[dict]) -> np.ndarray:
    """Times to solve, +inf for a run that never reached the threshold."""
    return np.array([np.inf if r["time_to_solve_s"] is None else r["time_to_solve_s"] for r in runs])


def interval_stats(runs: list[dict], resamples: int = 10_000) -> dict:
    """IQM and 95% stratified-bootstrap interval (seeded) of the time to solve (unsolved = +inf:
    the IQM is +inf, written null, when over a quarter never solved) and of the final return."""
    from dllab import stats

    solve = stats.iqm_ci(_solve_times(runs), resamples=resamples)
    final = stats.iqm_ci([r["eval_return_mean"] for r in runs], resamples=resamples)
    return {"n": len(runs),
            "time_to_solve_s": dict(zip(("iqm", "ci_low", "ci_high"), solve)),
            "final_return": dict(zip(("iqm", "ci_low", "ci_high"), final)),
            "fraction_solved": float(np.mean([r["time_to_solve_s"] is not None for r in runs])),
            "fraction_final_at_threshold": float(np.mean([r["eval_return_mean"] >= r["threshold"]
                                                          for r in runs]))}


def probability_faster(runs: list[dict], reference: list[dict], resamples: int = 10_000) -> dict:
    """P(a run of `runs` solves sooner than a run of `reference`), never-solved runs tying with
    each other, with its 95% bootstrap interval (rliable's probability of improvement on -time)."""
    from dllab import stats

    value, low, high = stats.probability_of_improvement_ci(-_solve_times(runs), -_solve_times(reference),
                                                           resamples=resamples)
    return {"probability": value, "ci_low": low, "ci_high": high}


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
    lines += ["", interval_table(summary)]
    return "\n".join(lines)


def _interval(figures: dict, spec: str) -> str:
    """`IQM [low, high]`; an infinite time to solve (JSON null) reads "never"."""
    fmt = lambda v: "never" if v is None or v == float("inf") else format(v, spec)
    return f"{fmt(figures['iqm'])} [{fmt(figures['ci_low'])}, {fmt(figures['ci_high'])}]"


def interval_table(summary: dict, markdown: bool = False) -> str:
    """Per implementation: IQM [95% CI] of time to solve and final return, fractions, P(faster)."""
    header = ["env", "impl", "n", "IQM time to solve s [95% CI]", "solved", "IQM final return [95% CI]",
              "final >= threshold", "median wall s", "P(solves faster than sb3) [95% CI]"]
    rows = []
    for impl, figures in summary["stats"].items():
        faster = summary["probability_faster_than_sb3"].get(impl)
        rows.append([summary["env"], impl, str(figures["n"]), _interval(figures["time_to_solve_s"], ".1f"),
                     f"{figures['fraction_solved']:.0%}", _interval(figures["final_return"], ".1f"),
                     f"{figures['fraction_final_at_threshold']:.0%}",
                     format(summary["median_wall_s"][impl], ".1f"),
                     _interval({"iqm": faster["probability"], **faster}, ".2f") if faster else "-"])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])


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
    """Strict JSON, through an exclusively created temp file and a rename (dllab.fileio)."""
    from dllab.fileio import write_json_atomic

    write_json_atomic(path, data)


def _options(args) -> tuple[list[str], list[str], list[int]]:
    """The envs, implementations and seeds asked for, checked (UsageError before anything runs)."""
    from dllab.rl.common import ZOO_CONFIGS

    envs = [e.strip() for e in (args.env or ",".join(ENVS)).split(",") if e.strip()]
    for env in envs:
        if env not in ZOO_CONFIGS:
            raise UsageError(f"bench dqn: no zoo configuration for {env!r} (have: {', '.join(ZOO_CONFIGS)})")
    impls = []
    for name in (args.impl or ",".join(IMPLEMENTATIONS)).split(","):
        expanded = ["keras-tensorflow", "keras-torch"] if name.strip() == "keras" else [name.strip()]
        if any(impl not in KNOWN_IMPLEMENTATIONS for impl in expanded):
            raise UsageError(f"bench dqn: --impl {name!r}: choose among {', '.join(KNOWN_IMPLEMENTATIONS)}, keras")
        impls += [impl for impl in expanded if impl not in impls]
    seeds = DEFAULT_SEEDS if args.seeds is None else args.seeds
    if seeds < 1 or (args.steps is not None and args.steps < 1) or args.threads < 1 or args.seeds_batched < 0 \
            or args.seeds_from < 0:
        raise UsageError("bench dqn: --seeds, --steps and --threads must be positive, --seeds-batched and "
                         "--seeds-from >= 0")
    if args.seeds_batched and envs != ["CartPole-v1"]:
        raise UsageError("bench dqn: --seeds-batched uses dllab's default configuration, defined for "
                         "CartPole-v1: add --env CartPole-v1")
    needs = {"sb3": "stable_baselines3", "keras-tensorflow": "tensorflow", "keras-torch": "torch"}
    for impl in impls:
        module = needs.get(impl, "torch")
        if importlib.util.find_spec(module) is None or (impl.startswith("keras") and
                                                         importlib.util.find_spec("keras") is None):
            extra = {"stable_baselines3": "rl"}.get(module, "all")
            raise UsageError(f"bench dqn: {impl} needs {module.replace('_', '-')}, which is not installed: "
                             f"pip install 'dllab[{extra}]'")
    return envs, impls, list(range(args.seeds_from, args.seeds_from + seeds))


def _requests(args, envs: list[str], impls: list[str], seeds: list[int], out: Path) -> list[dict]:
    """One request per (env, seed, implementation), implementations rotated from seed to seed."""
    from dllab.rl.common import DEFAULT_CONFIGS, ZOO_CONFIGS

    found = []
    for env in envs:
        steps = args.steps or ZOO_CONFIGS[env].total_steps
        here = [impl for impl in impls if impl != "dllab-default" or env in DEFAULT_CONFIGS]
        for index, seed in enumerate(seeds):
            order = here[index % len(here):] + here[:index % len(here)]  # rotate against drift
            for impl in order:
                found.append({"impl": impl, "env": env, "seed": seed, "steps": steps, "threads": args.threads})
            if index == 0 and args.seeds_batched:  # early, between the separate runs it is compared with
                found.append({"impl": "dllab-batched", "env": env, "seed": seed, "steps": steps,
                              "threads": args.threads, "batched": args.seeds_batched})
    for request in found:
        request["result_file"] = str(out / "runs" / request["env"] / request["impl"] / f"s{request['seed']}.json")
    return found


def bench_task(request: dict) -> dict:
    """One benchmark run as a sweep-engine task: its own process (`_spawn`), one thread."""
    from dllab.sweep import _registered

    try:
        with _registered(request["result_file"]):
            return {"request": request, **_spawn(request)}
    except KeyboardInterrupt:  # the sweep was stopped (Ctrl-C): the child process is killed
        return {"request": request, "runs": [], "error": "interrupted"}


def main(args) -> int:
    """The CLI's `bench dqn`: run (through the sweep engine), print the tables, write bench.json,
    bench.md and learning_curves-<env>.png. Runs measured before under OUT are kept, not redone."""
    from dllab import sweep

    envs, impls, seeds = _options(args)
    out = Path(args.out)
    tasks = _requests(args, envs, impls, seeds, out)
    todo = [task for task in tasks if not Path(task["result_file"]).exists()]
    print(f"bench dqn: {', '.join(envs)}; {', '.join(impls)}; seeds {seeds[0]}-{seeds[-1]}: {len(tasks)} runs, "
          f"{len(tasks) - len(todo)} measured before", flush=True)
    out.mkdir(parents=True, exist_ok=True)

    def keep(result: dict) -> None:
        request = result["request"]
        if result.get("error"):
            print(f"  {request['impl']:16s} {request['env']} seed {request['seed']}: {result['error']}", flush=True)
            return
        Path(request["result_file"]).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(request["result_file"]), {"runs": result["runs"]})
        for run in result["runs"]:
            print(f"  {run['impl']:16s} {request['env']} seed {run['seed']}: return "
                  f"{run['eval_return_mean']:.1f}, wall {run['wall_s']:.1f} s", flush=True)

    if todo:
        failed = lambda task, problem: {"request": task, "runs": [], "error": f"{type(problem).__name__}: {problem}"}
        with sweep.connect(args.workers, args.scheduler) as engine:
            sweep.execute(engine, todo, bench_task, on_error=failed, on_result=keep, desc="bench runs")
    summaries = {}
    for env in envs:
        runs = [run for task in tasks if task["env"] == env and Path(task["result_file"]).exists()
                for run in json.loads(Path(task["result_file"]).read_text())["runs"]]
        steps = next(task["steps"] for task in tasks if task["env"] == env)
        summaries[env] = summary = summarize(env, steps, runs, args.threads)
        print(f"\n{env}:\n{table(summary)}")
        plot(summary, out / f"learning_curves-{env}.png")
    write_json(out / "bench.json", {"envs": summaries, "seeds": seeds, "impls": impls})
    header = f"# DQN bench: seeds {seeds[0]}-{seeds[-1]}, one thread per run\n\n"
    from dllab.fileio import write_text_atomic

    write_text_atomic(out / "bench.md", header + "\n\n".join(interval_table(summaries[env], markdown=True)
                                                      for env in envs) + "\n")
    print(f"wrote {out / 'bench.json'}, bench.md and learning_curves-<env>.png")
    return 0


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
