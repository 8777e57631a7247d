"""The DQN scenarios' shared body: train with a learner (torch or Keras), measure the greedy
policy against a uniformly random one on the same seeded evaluation episodes and against the
env's own success threshold, plot the learning curve, and checkpoint for `--resume`."""

from __future__ import annotations

from dllab.rl.common import (env_sizes, eval_seed, evaluate, mlp_forward, train_config, train_loop,
                             value_estimate_check)

FINAL_EPSILON = 0.05  # the final evaluation's exploration rate (Mnih et al. 2015)

VOLATILE = ["wall_s", "steps_per_s", "time_to_solve_s", "acting_s", "environment_s", "buffer_s",
            "gradient_s", "evaluation_s"]


def run_scenario(ctx, learner_class, *, env_id: str, config: str, hidden: list, checkpoint_every: int = 0,
                 fault: str = "none", **fields) -> dict[str, float]:
    """Train with the `config` ("zoo" or "default") configuration of `env_id`, some fields
    replaced (a TOML's params: total_steps, learning_rate, train_freq, ...), then measure.
    `checkpoint_every` N: save a checkpoint every N env steps (resume with `dllab run --resume`).
    `fault`: a negative control's mistake (see `dllab.rl.common.train_loop`)."""
    import gymnasium as gym

    from dllab.errors import UsageError

    try:
        config = train_config(env_id, config, hidden=tuple(hidden), **fields)
    except ValueError as error:  # no such configuration, or an inconsistent one
        raise UsageError(f"{ctx.spec.id}: {error}") from None
    sizes = env_sizes(env_id)
    threshold = gym.spec(config.env_id).reward_threshold
    config.eval_interval = config.eval_interval or max(config.train_freq, config.total_steps // 10)  # 0: auto
    learner = learner_class(config, *sizes, ctx.seed)
    loaded = ctx.load_checkpoint()
    state = None if loaded is None else restore(learner, *loaded)

    def save(step, loop_state):
        ctx.save_checkpoint(*checkpoint(learner, loop_state))

    def on_eval(step, returns):
        ctx.log_scalar("charts/eval_return", float(returns.mean()), step)
        ctx.record(last_eval_return=float(returns.mean()), last_eval_step=step)

    result = train_loop(config, learner, ctx.seed, threshold=threshold, on_eval=on_eval,
                        checkpoint_every=checkpoint_every, save=save, state=state, fault=fault)
    for phase, loss in enumerate(result.losses):
        ctx.log_scalar("losses/td_loss", loss, phase)
    random_returns = evaluate(config.env_id, None, config.eval_episodes, eval_seed(ctx.seed))
    weights = learner.acting_weights()
    epsilon_returns = evaluate(config.env_id, lambda x: mlp_forward(weights, x), config.eval_episodes,
                               eval_seed(ctx.seed), epsilon=FINAL_EPSILON)
    values = value_estimate_check(config.env_id, lambda x: mlp_forward(weights, x), config.gamma,
                                  config.eval_episodes, eval_seed(ctx.seed))
    save_curve(ctx, result.curve, random_returns.mean(), threshold, config.env_id)
    mean, random_mean = float(result.eval_returns.mean()), float(random_returns.mean())
    timings = {f"{name}_s": seconds for name, seconds in result.timings.items()}
    return {
        "eval_return_mean": mean,
        "eval_return_min": float(result.eval_returns.min()),
        "random_return_mean": random_mean,
        "env_threshold": threshold,
        "return_over_random": mean - random_mean,
        # 0 = the random policy, 1 = the env's success threshold (both in this run's episodes)
        "normalized_score": (mean - random_mean) / (threshold - random_mean),
        "solved": float(mean >= threshold),
        # the final network acting 0.05-greedy on the same episodes (a greedy fixed point cannot hold)
        "epsilon_return_mean": float(epsilon_returns.mean()),
        "epsilon_normalized_score": (float(epsilon_returns.mean()) - random_mean) / (threshold - random_mean),
        "best_periodic_return": max(point[1] for point in result.curve),
        # the best periodic greedy evaluation (a greedy policy early in training can lock into a
        # loop, e.g. an Acrobot left at rest, so single evaluations swing between good and floor)
        "best_periodic_over_random": max(point[1] for point in result.curve) - random_mean,
        "best_normalized_score": (max(point[1] for point in result.curve) - random_mean) / (threshold - random_mean),
        "steps_to_solve": float(result.steps_to_solve or 0),
        "time_to_solve_s": float(result.time_to_solve_s or 0.0),
        "wall_s": result.wall_s,
        "steps_per_s": config.total_steps / result.wall_s,
        **values,
        **timings,
    }


def checkpoint(learner, loop_state: dict) -> tuple[dict, dict]:
    """(arrays, meta) for `ctx.save_checkpoint`: the learner's weights and Adam moments, the
    replay buffer, and the loop's JSON state (step, RNG and env states, curve, timers)."""
    meta = dict(loop_state)
    arrays = dict(learner.state())
    arrays.update({f"buffer/{k}": v for k, v in meta.pop("buffer").items()})
    return arrays, meta


def restore(learner, arrays: dict, meta: dict) -> dict:
    """Load a checkpoint into `learner`; return the loop state for `train_loop(state=...)`."""
    learner.load_state(arrays)
    state = dict(meta, buffer={k[len("buffer/"):]: v for k, v in arrays.items() if k.startswith("buffer/")})
    state["curve"] = [tuple(point) for point in meta["curve"]]
    return state


def save_curve(ctx, curve, random_mean: float, threshold: float, env_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    steps, returns = [p[0] for p in curve], [p[1] for p in curve]
    axis.plot(steps, returns, marker="o", label=f"DQN ({ctx.framework})")
    axis.axhline(random_mean, color="gray", linestyle=":", label="random policy")
    axis.axhline(threshold, color="green", linestyle="--", label="env threshold")
    axis.set_xlabel("environment steps")
    axis.set_ylabel("greedy return (mean of evaluation episodes)")
    axis.set_title(env_id)
    axis.legend()
    ctx.save_figure(figure, "learning_curve.png")
