"""What every dllab DQN shares: the config, the replay buffer, the exploration schedule, the
numpy forward pass used for acting, the evaluation protocol and the training loop.

The loop follows stable-baselines3's DQN semantics so that "the same hyperparameters" means the
same algorithm: `train_freq` env steps of acting, then `gradient_steps` gradient steps;
`target_update_interval` counts env steps; epsilon decays linearly over `exploration_fraction` of
the run; actions are uniformly random for the first `learning_starts` steps. Bootstrapping stops
only on `terminated` (a time-limit truncation is not a terminal state).

Acting uses a numpy forward pass of the online network (one observation through a small MLP costs
a few microseconds in numpy, tens in an eager framework); a framework is used only for the
gradient steps. A learner (torch or Keras) plugs in with four methods:
`acting_weights()` (numpy arrays kept in sync with the online network), `train_phase(batch)`,
`update_target()`, and `state()`/`load_state()` for checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class DQNConfig:
    """DQN hyperparameters (defaults: rl-baselines3-zoo's CartPole-v1 configuration)."""

    env_id: str = "CartPole-v1"  # Gymnasium environment id
    total_steps: int = 50_000  # environment steps of training
    learning_rate: float = 2.3e-3  # Adam step size
    buffer_size: int = 100_000  # replay buffer capacity (transitions)
    learning_starts: int = 1000  # uniformly random actions and no training before this step
    batch_size: int = 64  # transitions per gradient step
    gamma: float = 0.99  # discount factor
    target_update_interval: int = 10  # env steps between copies of the online net into the target net
    train_freq: int = 256  # env steps between training phases
    gradient_steps: int = 128  # gradient steps per training phase (-1: as many as train_freq)
    exploration_fraction: float = 0.16  # fraction of total_steps over which epsilon decays
    exploration_initial_eps: float = 1.0  # epsilon at step 0
    exploration_final_eps: float = 0.04  # epsilon after the decay
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of the Q-network (ReLU)
    max_grad_norm: float = 10.0  # gradient norm clipping
    double_dqn: bool = False  # pick the next action with the online net, value it with the target net
    eval_episodes: int = 20  # greedy episodes per evaluation, on separately seeded envs
    eval_interval: int = 0  # env steps between periodic evaluations (0: only the final one)

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.total_steps <= 0 or self.batch_size <= 0 or self.buffer_size <= 0 or self.train_freq <= 0:
            raise ValueError("total_steps, batch_size, buffer_size and train_freq must be positive")
        if not 0 < self.exploration_fraction <= 1:
            raise ValueError(f"exploration_fraction must be in (0, 1], got {self.exploration_fraction}")
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"hidden must list positive widths, got {self.hidden}")

    @property
    def steps_per_phase(self) -> int:
        return self.train_freq if self.gradient_steps < 0 else self.gradient_steps


# rl-baselines3-zoo (hyperparams/dqn.yml) for the classic-control tasks: the "full" profile.
ZOO_CONFIGS = {
    "CartPole-v1": DQNConfig(),
    "Acrobot-v1": DQNConfig(env_id="Acrobot-v1", total_steps=100_000, learning_rate=6.3e-4, batch_size=128,
                            buffer_size=50_000, learning_starts=0, target_update_interval=250, train_freq=4,
                            gradient_steps=-1, exploration_fraction=0.12, exploration_final_eps=0.1),
    "MountainCar-v0": DQNConfig(env_id="MountainCar-v0", total_steps=120_000, learning_rate=4e-3,
                                batch_size=128, buffer_size=10_000, learning_starts=1000, gamma=0.98,
                                target_update_interval=600, train_freq=16, gradient_steps=8,
                                exploration_fraction=0.2, exploration_final_eps=0.07),
}

# dllab's own CartPole configuration, for wall time to solve: the zoo's schedule with one hidden
# layer of 128 units. Chosen on seeds 10-24 (the bench uses 0-4), 50k steps, evaluated every 2k:
# (128,) reached 475 on 15/15 seeds and ended >= 475 on 12/15, median 2.5 s to solve; (256,) 15/15,
# 9/15, 2.9 s; (128, 128) 5/5 and 1/5 (seeds 10-14), 3.8 s; (64, 64) 5/5 and 2/5, 3.4 s.
DEFAULT_CONFIGS = {"CartPole-v1": replace(ZOO_CONFIGS["CartPole-v1"], hidden=(128,))}


def train_config(env_id: str, config: str, **fields) -> DQNConfig:
    """A named configuration ("zoo" or "default") with some fields replaced."""
    table = {"zoo": ZOO_CONFIGS, "default": DEFAULT_CONFIGS}.get(config)
    if table is None or env_id not in table:
        raise ValueError(f"no {config!r} DQN configuration for {env_id!r} (have zoo: {sorted(ZOO_CONFIGS)}, "
                         f"default: {sorted(DEFAULT_CONFIGS)})")
    return replace(table[env_id], **fields)


def env_sizes(env_id: str) -> tuple[int, int]:
    import gymnasium as gym

    env = gym.make(env_id)
    sizes = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    env.close()
    return sizes


def linear_schedule(start: float, end: float, fraction: float, step: int, total: int) -> float:
    """Epsilon at `step`: linear from start to end over the first `fraction` of `total` steps."""
    progress = step / (fraction * total)
    return end if progress >= 1 else start + progress * (end - start)


class ReplayBuffer:
    """A preallocated circular buffer of transitions (numpy arrays, no per-step allocation)."""

    def __init__(self, capacity: int, observation_shape: tuple[int, ...]):
        self.capacity, self.size, self.position = capacity, 0, 0
        self.observations = np.zeros((capacity, *observation_shape), dtype=np.float32)
        self.next_observations = np.zeros((capacity, *observation_shape), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)  # 1: no bootstrap (truncation stays 0)

    def add(self, observation, action: int, reward: float, next_observation, terminated: bool) -> None:
        i = self.position
        self.observations[i] = observation
        self.next_observations[i] = next_observation
        self.actions[i], self.rewards[i], self.terminated[i] = action, reward, terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, steps: int, batch_size: int) -> dict[str, np.ndarray]:
        """`steps` minibatches at once (uniform, with replacement, like SB3): arrays (steps, batch, ...)."""
        index = rng.integers(0, self.size, size=(steps, batch_size))
        return {"observations": self.observations[index], "actions": self.actions[index],
                "rewards": self.rewards[index], "next_observations": self.next_observations[index],
                "terminated": self.terminated[index]}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"observations": self.observations, "next_observations": self.next_observations,
                "actions": self.actions, "rewards": self.rewards, "terminated": self.terminated}


def uniform_init(rng: np.random.Generator, sizes: list[int]) -> list[np.ndarray]:
    """[W1, b1, W2, b2, ...] with W of shape (in, out), drawn like torch.nn.Linear's default
    (uniform in +-1/sqrt(fan_in)), so the torch and Keras networks start from the same law."""
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, size=fan_out).astype(np.float32))
    return weights


def mlp_forward(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Q-values of an MLP given as [W1, b1, ...] (ReLU between layers), in numpy."""
    for i in range(0, len(weights) - 2, 2):
        x = np.maximum(x @ weights[i] + weights[i + 1], 0)
    return x @ weights[-2] + weights[-1]


def evaluate(env_id: str, q_function, episodes: int, seed: int, epsilon: float = 0.0) -> np.ndarray:
    """Undiscounted returns of the greedy policy `argmax q_function(obs)` on `episodes` envs
    seeded seed, seed+1, ... (stepped side by side; `q_function=None`: uniformly random policy).
    `epsilon` > 0: epsilon-greedy instead (DQN's evaluation protocol in Mnih et al. 2015, 0.05),
    so that a greedy policy's fixed point, such as an Acrobot left at rest, cannot hold it."""
    import gymnasium as gym

    envs = [gym.make(env_id) for _ in range(episodes)]
    observations = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    rng, explore = np.random.default_rng(seed), np.random.default_rng([seed, 3])
    returns, active = np.zeros(episodes), np.ones(episodes, dtype=bool)
    while active.any():
        live = np.flatnonzero(active)
        if q_function is None:
            actions = rng.integers(envs[0].action_space.n, size=len(live))
        else:
            actions = q_function(observations[live]).argmax(axis=1)
        if epsilon > 0:
            random = explore.random(len(live)) < epsilon
            actions = np.where(random, explore.integers(envs[0].action_space.n, size=len(live)), actions)
        for i, action in zip(live, actions):
            observation, reward, terminated, truncated, _ = envs[i].step(int(action))
            observations[i] = observation
            returns[i] += reward
            active[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns


def value_estimate_check(env_id: str, q_function, gamma: float, episodes: int, seed: int) -> dict[str, float]:
    """Does the Q-network predict the return its own greedy policy collects? On `episodes` envs
    seeded seed, seed+1, ...: the network's Q(s0, a0) of each first greedy action, against the
    discounted return the greedy episode then collects from s0, bootstrapped at a time-limit
    truncation with max_a Q(s_T, a) exactly as the TD target does (a terminal state adds 0).
    A DQN that learns its TD fixed point makes the two agree whatever its policy is worth; a
    target network never refreshed, a wrong discount or no learning do not."""
    import gymnasium as gym

    predicted, collected = [], []
    for i in range(episodes):
        env = gym.make(env_id)
        observation, _ = env.reset(seed=seed + i)
        q = q_function(np.asarray(observation, dtype=np.float32)[None])[0]
        predicted.append(float(q.max()))
        discounted, discount, done = 0.0, 1.0, False
        while not done:
            action = int(q_function(np.asarray(observation, dtype=np.float32)[None])[0].argmax())
            observation, reward, terminated, truncated, _ = env.step(action)
            discounted += discount * float(reward)
            discount *= gamma
            done = terminated or truncated
            if truncated and not terminated:  # the time limit: bootstrap, as training does
                discounted += discount * float(q_function(np.asarray(observation, dtype=np.float32)[None])[0].max())
        collected.append(discounted)
        env.close()
    mean_predicted, mean_collected = float(np.mean(predicted)), float(np.mean(collected))
    return {"predicted_start_value": mean_predicted, "collected_start_value": mean_collected,
            "value_estimate_relative_error": abs(mean_predicted - mean_collected) / max(abs(mean_collected), 1.0)}


def eval_seed(seed: int) -> int:
    """Evaluation episodes are seeded apart from training (the same for every implementation)."""
    return 1_000_000 + 1000 * seed


@dataclass
class TrainResult:
    """What a training run measured: final greedy returns, the learning curve and the timings."""

    eval_returns: np.ndarray
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, mean return, train wall s)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per part (eval excluded from wall_s)
    time_to_solve_s: float | None = None
    steps_to_solve: int | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return sum(v for k, v in self.timings.items() if k != "evaluation")


FAULTS = ("none", "bootstrap-terminal")


def train_loop(config: DQNConfig, learner, seed: int, *, threshold: float | None = None,
               on_eval=None, checkpoint_every: int = 0, save=None, state=None,
               fault: str = "none") -> TrainResult:
    """Act, store, train and evaluate, timing each part. `threshold`: the return whose first
    periodic reach is the time to solve. `save(step, loop_state)` is called every
    `checkpoint_every` steps (at phase boundaries); `state` continues a saved run exactly.
    `fault` "bootstrap-terminal" is a negative control: every transition is stored as not
    terminated, so the TD target is r + gamma * max Q(s', a') at every step (the seed's formula)."""
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    import gymnasium as gym

    env = gym.make(config.env_id)
    n_actions = env.action_space.n
    rng = np.random.default_rng([seed, 1])
    buffer = ReplayBuffer(config.buffer_size, env.observation_space.shape)
    observation, _ = env.reset(seed=seed)
    timings = dict.fromkeys(["acting", "environment", "buffer", "gradient", "evaluation"], 0.0)
    result = TrainResult(eval_returns=np.zeros(0), timings=timings)
    start_step = 0
    if state is not None:  # resume: buffer, env and RNG states, curve and timers
        for name, array in buffer.arrays().items():
            array[...] = state["buffer"][name]
        buffer.size, buffer.position = state["buffer_size"], state["buffer_position"]
        rng.bit_generator.state = state["rng"]
        env.unwrapped.np_random.bit_generator.state = state["env_rng"]
        env.unwrapped.state = np.array(state["env_state"])
        env._elapsed_steps = state["elapsed_steps"]  # the TimeLimit wrapper's counter
        observation = np.array(state["observation"], dtype=np.float32)
        start_step, result.curve, result.losses = state["step"], state["curve"], state["losses"]
        timings.update(state["timings"])
        result.time_to_solve_s, result.steps_to_solve = state["time_to_solve_s"], state["steps_to_solve"]
    weights = learner.acting_weights()

    def run_evaluation(step):
        began = time.perf_counter()
        returns = evaluate(config.env_id, lambda x: mlp_forward(weights, x), config.eval_episodes, eval_seed(seed))
        timings["evaluation"] += time.perf_counter() - began
        result.curve.append((step, float(returns.mean()), result.wall_s))
        if threshold is not None and result.time_to_solve_s is None and returns.mean() >= threshold:
            result.time_to_solve_s, result.steps_to_solve = result.wall_s, step
        if on_eval is not None:
            on_eval(step, returns)
        return returns

    for step in range(start_step + 1, config.total_steps + 1):
        began = time.perf_counter()
        epsilon = linear_schedule(config.exploration_initial_eps, config.exploration_final_eps,
                                  config.exploration_fraction, step - 1, config.total_steps)
        if step <= config.learning_starts or rng.random() < epsilon:
            action = int(rng.integers(n_actions))
        else:
            action = int(mlp_forward(weights, observation).argmax())
        stepped = time.perf_counter()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        stored = time.perf_counter()
        if fault == "bootstrap-terminal":  # negative control: a terminal state bootstraps too
            buffer.add(observation, action, reward, next_observation, False)
        else:
            buffer.add(observation, action, reward, next_observation, terminated)
        observation = next_observation
        if terminated or truncated:
            observation, _ = env.reset()
        done = time.perf_counter()
        timings["acting"] += stepped - began
        timings["environment"] += stored - stepped
        timings["buffer"] += done - stored
        if step % config.target_update_interval == 0:
            learner.update_target()
        if step % config.train_freq == 0 and step > config.learning_starts:
            began = time.perf_counter()
            batch = buffer.sample(rng, config.steps_per_phase, config.batch_size)
            result.losses.append(learner.train_phase(batch))
            weights = learner.acting_weights()
            timings["gradient"] += time.perf_counter() - began
        if config.eval_interval and step % config.eval_interval == 0 and step < config.total_steps:
            run_evaluation(step)
        if checkpoint_every and save is not None and step % checkpoint_every == 0 and step < config.total_steps:
            save(step, {"buffer": buffer.arrays(), "buffer_size": buffer.size, "buffer_position": buffer.position,
                        "rng": rng.bit_generator.state, "env_rng": env.unwrapped.np_random.bit_generator.state,
                        "env_state": np.asarray(env.unwrapped.state).tolist(),
                        "elapsed_steps": env._elapsed_steps, "observation": observation.tolist(),
                        "step": step, "curve": result.curve, "losses": result.losses, "timings": dict(timings),
                        "time_to_solve_s": result.time_to_solve_s, "steps_to_solve": result.steps_to_solve})
    env.close()
    result.eval_returns = run_evaluation(config.total_steps)
    return result
