"""Tabular Q-learning (seed question 20) checked against the exact optimum.

The exact optimum comes from dynamic programming on Gymnasium's own transition table,
`env.unwrapped.P[state][action] = [(probability, next_state, reward, terminated), ...]`:

- `value_iteration` gives the gamma-optimal stationary policy, which is what a discounted
  Q-learner aims at;
- `finite_horizon_optimum` gives the best expected return within the registered time limit (the
  physical limit; its optimal policy may depend on the steps left);
- `evaluate_policy` gives a stationary policy's exact expected return within the time limit.

The learned greedy policy is also rolled out on the same seeded evaluation episodes as the
value-iteration policy, so the sampled ratio and the exact one can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TabularModel:
    """Gymnasium's `P` as dense arrays: `transition[s, a, s']` counts only non-terminal moves."""

    transition: np.ndarray  # (S, A, S) probability of continuing to s'
    reward: np.ndarray  # (S, A) expected immediate reward
    initial: np.ndarray  # (S,) initial state distribution

    @property
    def n_states(self) -> int:
        return self.reward.shape[0]


def tabular_model(env) -> TabularModel:
    """Read the transition table and initial distribution of a Gymnasium toy-text env."""
    base = env.unwrapped
    n_states, n_actions = base.observation_space.n, base.action_space.n
    transition = np.zeros((n_states, n_actions, n_states))
    reward = np.zeros((n_states, n_actions))
    for state in range(n_states):
        for action in range(n_actions):
            for probability, next_state, step_reward, terminated in base.P[state][action]:
                reward[state, action] += probability * step_reward
                if not terminated:
                    transition[state, action, next_state] += probability
    initial = getattr(base, "initial_state_distrib", None)
    if initial is None:  # CliffWalking keeps a fixed start state
        initial = np.zeros(n_states)
        initial[base.start_state_index] = 1.0
    return TabularModel(transition, reward, np.asarray(initial, dtype=float))


def value_iteration(model: TabularModel, gamma: float = 0.99, tolerance: float = 1e-10,
                    max_iterations: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Optimal action values Q* for discount gamma, and the greedy policy (ties: lowest action)."""
    values = np.zeros(model.n_states)
    for _ in range(max_iterations):
        q = model.reward + gamma * model.transition @ values
        new_values = q.max(axis=1)
        if np.max(np.abs(new_values - values)) < tolerance:
            values = new_values
            break
        values = new_values
    q = model.reward + gamma * model.transition @ values
    return q, q.argmax(axis=1)


def finite_horizon_optimum(model: TabularModel, horizon: int) -> float:
    """The best expected undiscounted return within `horizon` steps from the initial distribution."""
    values = np.zeros(model.n_states)
    for _ in range(horizon):
        values = (model.reward + model.transition @ values).max(axis=1)
    return float(model.initial @ values)


def evaluate_policy(model: TabularModel, policy: np.ndarray | None, horizon: int) -> float:
    """A stationary policy's exact expected undiscounted return within `horizon` steps
    (`policy=None`: the uniformly random policy, the floor that learning must clear)."""
    states = np.arange(model.n_states)
    if policy is None:
        reward, transition = model.reward.mean(axis=1), model.transition.mean(axis=1)
    else:
        reward, transition = model.reward[states, policy], model.transition[states, policy]
    values = np.zeros(model.n_states)
    for _ in range(horizon):
        values = reward + transition @ values
    return float(model.initial @ values)


def rollout_returns(env, policy: np.ndarray, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of a greedy policy on episodes seeded seed, seed+1, ..."""
    returns = np.zeros(episodes)
    for episode in range(episodes):
        state, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            state, reward, terminated, truncated, _ = env.step(int(policy[state]))
            total += reward
            done = terminated or truncated
        returns[episode] = total
    return returns


FAULTS = ("none", "reward-only-target")


def train_q_learning(env, episodes: int, gamma: float, alpha_start: float, alpha_end: float,
                     epsilon_start: float, epsilon_end: float, decay_fraction: float,
                     rng: np.random.Generator, seed: int, on_episode=None,
                     q: np.ndarray | None = None, start_episode: int = 0,
                     fault: str = "none") -> np.ndarray:
    """Epsilon-greedy Q-learning; epsilon and the learning rate decay over the first
    `decay_fraction` of the episodes (epsilon linearly, alpha geometrically), then stay
    (`alpha_start` 0: no learning at all, the untrained table's greedy policy).
    `q` and `start_episode` continue a checkpointed run (the env and rng restored by the caller).
    `fault` "reward-only-target" is a negative control: the TD target drops its bootstrap term."""
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    n_states, n_actions = env.observation_space.n, env.action_space.n
    q = np.zeros((n_states, n_actions)) if q is None else q
    decay_episodes = max(1, int(decay_fraction * episodes))
    for episode in range(start_episode, episodes):
        progress = min(1.0, episode / decay_episodes)
        epsilon = epsilon_start + progress * (epsilon_end - epsilon_start)
        alpha = alpha_start * (alpha_end / alpha_start) ** progress if alpha_start > 0 else 0.0
        state, _ = env.reset(seed=seed if episode == 0 else None)
        done, total = False, 0.0
        while not done:
            if rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:  # greedy, ties broken at random so an all-zero row does not always pick action 0
                row = q[state]
                action = int(rng.choice(np.flatnonzero(row == row.max())))
            next_state, reward, terminated, truncated, _ = env.step(action)
            target = reward + (0.0 if terminated else gamma * q[next_state].max())  # bootstrap unless terminal
            if fault == "reward-only-target":  # negative control: r alone, no gamma * max Q(s', a')
                target = reward
            q[state, action] += alpha * (target - q[state, action])
            state, total, done = next_state, total + reward, terminated or truncated
        if on_episode is not None:
            on_episode(episode, total, epsilon, alpha, q)
    return q


def q_learning(ctx, env_id: str, episodes: int, gamma: float, alpha_start: float, alpha_end: float,
               epsilon_start: float, epsilon_end: float, decay_fraction: float, eval_episodes: int,
               max_episode_steps: int = 0, log_every: int = 0,
               checkpoint_every: int = 1000, fault: str = "none") -> dict[str, float]:
    """Scenario entry: train, then compare the greedy policy with the exact optima.
    `max_episode_steps` 0 keeps the registered time limit (CliffWalking has none: give one);
    `log_every` 0 logs the training curve at 100 points.
    Every `checkpoint_every` episodes (0: never) the Q table and both RNG states (the agent's and
    the env's) are saved, so `--resume` continues to exactly the metrics of an uninterrupted run.
    `fault` injects a negative control's mistake into the update (see `train_q_learning`)."""
    import gymnasium as gym

    from dllab.errors import UsageError

    env = gym.make(env_id, max_episode_steps=max_episode_steps or None)
    if not hasattr(env.unwrapped, "P"):
        raise UsageError(f"{env_id} has no transition table env.unwrapped.P (a toy-text env such as "
                         "FrozenLake-v1 or Taxi-v4 has one)")
    horizon = env.spec.max_episode_steps
    if not horizon:
        raise UsageError(f"{env_id} has no registered time limit: set max_episode_steps")
    env.action_space.seed(ctx.seed)
    model = tabular_model(env)
    log_every = log_every or max(1, episodes // 100)
    rng, q, start_episode = ctx.rng(), None, 0
    saved = ctx.load_checkpoint()
    if saved is not None:
        arrays, meta = saved
        q, start_episode = arrays["q"].copy(), int(meta["episode"])
        rng.bit_generator.state = meta["agent_rng"]
        env.reset(seed=ctx.seed)
        env.unwrapped.np_random.bit_generator.state = meta["env_rng"]
    recent: list[float] = []
    curve_x: list[int] = []
    curve_y: list[float] = []
    bar = ctx.progress(total=episodes, desc=f"Q-learning {env_id}")
    bar.update(start_episode)

    def on_episode(episode, episode_return, epsilon, alpha, q):
        recent.append(episode_return)
        bar.update(1)
        done = episode + 1
        if done % log_every == 0:
            ctx.log_scalar("charts/episodic_return", float(np.mean(recent)), done)
            ctx.log_scalar("charts/epsilon", epsilon, done)
            ctx.log_scalar("charts/learning_rate", alpha, done)
            ctx.record(episodes_done=done, recent_return_mean=float(np.mean(recent)))
            curve_x.append(done)
            curve_y.append(float(np.mean(recent)))
            recent.clear()
        if checkpoint_every and done % checkpoint_every == 0 and done < episodes:
            ctx.save_checkpoint({"q": q}, {"episode": done, "agent_rng": rng.bit_generator.state,
                                           "env_rng": env.unwrapped.np_random.bit_generator.state})

    q = train_q_learning(env, episodes, gamma, alpha_start, alpha_end, epsilon_start, epsilon_end,
                         decay_fraction, rng, ctx.seed, on_episode, q=q, start_episode=start_episode,
                         fault=fault)
    bar.close()
    learned_policy = q.argmax(axis=1)
    _, optimal_policy = value_iteration(model, gamma)
    eval_seed = 10_000_000 + ctx.seed  # evaluation episodes never overlap training seeds
    learned = rollout_returns(env, learned_policy, eval_episodes, eval_seed)
    optimal = rollout_returns(env, optimal_policy, eval_episodes, eval_seed)
    exact_learned = evaluate_policy(model, learned_policy, horizon)
    exact_gamma_optimal = evaluate_policy(model, optimal_policy, horizon)
    horizon_optimum = finite_horizon_optimum(model, horizon)
    from dllab.plots import line_plot

    line_plot(ctx, "learning_curve", {"training return (epsilon-greedy)": (curve_x, curve_y)},
              title=f"Q-learning on {env_id}", xlabel="episode", ylabel=f"mean return per {log_every} episodes",
              references={"greedy policy, exact": exact_learned, "gamma-optimal, exact": exact_gamma_optimal,
                          "best within time limit": horizon_optimum})
    random_exact = evaluate_policy(model, None, horizon)
    ratio = lambda a, b: a / b if b > 0 else b / a  # for negative returns (costs), optimal/learned
    return {
        "return_mean": learned.mean(),
        "return_stderr": learned.std(ddof=1) / np.sqrt(eval_episodes),
        "optimal_return_mean": optimal.mean(),
        "ratio_to_optimal": ratio(learned.mean(), optimal.mean()),
        "return_exact": exact_learned,
        "optimal_return_exact": exact_gamma_optimal,
        "horizon_optimum": horizon_optimum,
        "ratio_to_optimal_exact": ratio(exact_learned, exact_gamma_optimal),
        "ratio_to_horizon_optimum": ratio(exact_learned, horizon_optimum),
        "random_return_exact": random_exact,
        # 0 = the uniformly random policy, 1 = the gamma-optimal one (exact values, no sampling noise)
        "normalized_score": (exact_learned - random_exact) / (exact_gamma_optimal - random_exact),
        "policy_agreement": float(np.mean(learned_policy == optimal_policy)),
    }
