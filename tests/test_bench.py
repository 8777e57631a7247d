"""`dllab bench dqn`: the summary's keys and ratios, bad input, and evaluation parity (SB3's
Q-network read through dllab's numpy forward pass gives SB3's own Q-values)."""

import json
from argparse import Namespace

import numpy as np
import pytest

from dllab.errors import UsageError
from dllab.rl import bench


def fake_run(impl, seed, wall, solve, ret=500.0):
    return {"impl": impl, "seed": seed, "eval_return_mean": ret, "wall_s": wall, "time_to_solve_s": solve,
            "steps_per_s": 50_000 / wall, "peak_rss_mb": 300.0, "threshold": 475.0, "curve": [[0, 20.0, 0.0]]}


def test_summary_keys_and_median_ratios():
    runs = [fake_run("sb3", s, 70 + s, 40 + s) for s in range(5)]
    runs += [fake_run("dllab", s, 20 + s, 12) for s in range(5)]
    runs += [fake_run("dllab-default", s, 5, None if s == 0 else 2 + s) for s in range(5)]
    summary = bench.summarize("CartPole-v1", 50_000, runs, threads=1)
    assert {"env", "steps", "runs", "ratio_wall_median", "ratio_solve_median"} <= set(summary)
    assert {"impl", "seed", "eval_return_mean", "wall_s", "time_to_solve_s", "steps_per_s"} <= set(summary["runs"][0])
    assert summary["ratio_wall_median"] == pytest.approx(22 / 72)
    # a run that never solved counts as slower than any that did: median of (inf, 3, 4, 5, 6) is 5
    assert summary["ratio_solve_median"] == pytest.approx(5 / 42)
    assert summary["solved_runs"] == {"sb3": 5, "dllab": 5, "dllab-default": 4}
    json.dumps(summary)  # bench.json must serialize
    assert "ratio_wall_median" in bench.table(summary)


def test_unsolved_majority_gives_no_solve_ratio():
    runs = [fake_run("sb3", s, 70, None) for s in range(3)] + [fake_run("dllab-default", s, 5, 2) for s in range(3)]
    assert bench.summarize("CartPole-v1", 1000, runs, 1)["ratio_solve_median"] is None


def test_interval_columns_and_probability_of_solving_faster():
    """IQM over seeds with never-solved runs as +inf, and P(dllab solves sooner than sb3)."""
    runs = [fake_run("sb3", s, 70, [40.0, 41.0, 42.0, None][s]) for s in range(4)]
    runs += [fake_run("dllab", s, 20, [10.0, 11.0, 12.0, 13.0][s], ret=400.0 + s) for s in range(4)]
    summary = bench.summarize("CartPole-v1", 50_000, runs, threads=1, resamples=2000)
    dllab = summary["stats"]["dllab"]
    assert dllab["time_to_solve_s"]["iqm"] == pytest.approx(11.5)  # mean of the middle two of four
    assert dllab["time_to_solve_s"]["ci_low"] >= 10.0 and dllab["time_to_solve_s"]["ci_high"] <= 13.0
    assert dllab["final_return"]["iqm"] == pytest.approx(401.5) and dllab["fraction_final_at_threshold"] == 0.0
    assert summary["stats"]["sb3"]["fraction_solved"] == 0.75
    assert summary["stats"]["sb3"]["time_to_solve_s"]["iqm"] == pytest.approx(41.5)  # 40, 41, 42, inf
    faster = summary["probability_faster_than_sb3"]["dllab"]
    assert faster["probability"] == 1.0 and faster["ci_low"] == 1.0  # every dllab run beats every sb3 run
    assert "P(solves faster than sb3)" in bench.table(summary)
    reverse = bench.probability_faster(runs[:4], runs[4:], resamples=500)
    assert reverse["probability"] == 0.0
    tie = bench.probability_faster([fake_run("a", 0, 1, None)], [fake_run("b", 0, 1, None)], resamples=200)
    assert tie["probability"] == 0.5  # neither solved: a tie
    json.loads(json.dumps(bench.summarize("CartPole-v1", 1, runs[:1], 1, resamples=200), allow_nan=True))


def args(**overrides):
    base = dict(target="dqn", against="sb3", env="CartPole-v1", seeds=1, seeds_from=0, steps=100, threads=1,
                seeds_batched=0, impl=None, workers=None, scheduler=None, out="unused")
    return Namespace(**{**base, **overrides})


def test_requests_cover_envs_seeds_and_rotated_implementations(tmp_path):
    for module in ("stable_baselines3", "torch", "tensorflow", "keras"):  # each implementation's install
        pytest.importorskip(module)
    envs, impls, seeds = bench._options(args(env=None, seeds=None, seeds_from=10, impl="sb3,dllab,keras"))
    assert envs == bench.ENVS and seeds == list(range(10, 20))
    assert impls == ["sb3", "dllab", "keras-tensorflow", "keras-torch"]
    tasks = bench._requests(args(steps=None), envs, impls, seeds, tmp_path)
    assert len(tasks) == 3 * 10 * 4 and len({t["result_file"] for t in tasks}) == len(tasks)
    cartpole = [t for t in tasks if t["env"] == "CartPole-v1"]
    assert [t["impl"] for t in cartpole[:8]] == ["sb3", "dllab", "keras-tensorflow", "keras-torch",
                                                 "dllab", "keras-tensorflow", "keras-torch", "sb3"]
    assert {t["steps"] for t in tasks if t["env"] == "MountainCar-v0"} == {120_000}  # the zoo's budget
    default = bench._requests(args(), ["Acrobot-v1"], ["sb3", "dllab-default"], [0], tmp_path)
    assert [t["impl"] for t in default] == ["sb3"]  # dllab's own configuration is CartPole's only


def test_bad_input_is_a_usage_error(monkeypatch):
    with pytest.raises(UsageError, match="no zoo configuration"):
        bench.main(args(env="Pong-v5"))
    with pytest.raises(UsageError, match="positive"):
        bench.main(args(seeds=0))
    with pytest.raises(UsageError, match="choose among"):
        bench.main(args(impl="sb4"))
    with pytest.raises(UsageError, match="CartPole-v1"):
        bench.main(args(env="Acrobot-v1", seeds_batched=3))
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'dllab\[rl\]'"):
        bench.main(args())


def test_sb3_q_network_read_by_dllab_forward_pass():
    pytest.importorskip("stable_baselines3")
    import torch
    from stable_baselines3 import DQN

    from dllab.rl.common import mlp_forward

    model = DQN("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    with torch.no_grad():
        expected = model.policy.q_net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mlp_forward(bench.sb3_weights(model), x), expected, rtol=1e-5, atol=1e-6)
