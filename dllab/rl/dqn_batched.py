"""K seeds of DQN trained as one batched computation (torch, stacked weights, batched matmuls).

Each seed keeps its own environment, replay buffer, exploration RNG, epsilon, online and target
networks and Adam moments, exactly as in `dllab.rl.dqn_torch_fast` (same initial weights, same
random streams): the K runs are the K separate runs, computed side by side. What is shared is
the work:

- The K online and the K target networks are 2K networks stacked layer by layer: each weight is
  one contiguous (2K, in, out) block, online rows first. One forward pass of all 2K networks
  gives each seed's Q(s, .) and its target network's Q(s', .), so a gradient step is a handful of
  `torch.bmm` calls whatever K is, into buffers reused from step to step.
- The online halves of the blocks are contiguous: Adam is one fused update over them, and the
  check for per-seed gradient clipping one norm (the norm over all seeds bounds each seed's).
- One batched numpy forward pass picks the K greedy actions, one write stores K transitions, and
  on CartPole the K environments step as numpy arrays (`dllab.rl.cartpole_side_by_side`, equal
  to K Gymnasium envs bit for bit).

Batched matmuls sum in a different order than single ones, so results agree with separate runs
in distribution, and to float rounding at the start, not bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dllab.rl.common import DQNConfig, TrainResult, env_sizes, eval_seed, evaluate, linear_schedule, mlp_forward, uniform_init


class BatchedQNetwork:
    """N MLPs stacked layer by layer: `weights` are contiguous (N, in, out) and (N, 1, out) blocks
    of one flat tensor. Layer outputs go to reused buffers, so a forward pass allocates nothing."""

    def __init__(self, sizes: list[int], weights_per_network: list[list[np.ndarray]]):
        self.sizes, self.count = sizes, len(weights_per_network)
        self.shapes = block_shapes(sizes, self.count)
        self.flat = torch.cat([torch.from_numpy(np.stack([weights[i] for weights in weights_per_network])).reshape(-1)
                               for i in range(len(self.shapes))])
        self.weights = blocks(self.flat, self.shapes)
        self._outputs: dict[int, list[torch.Tensor]] = {}

    def network(self, n: int) -> list[np.ndarray]:
        """Network n as numpy views [W1 (in, out), b1 (out,), ...] (no copy)."""
        return [w[n].numpy() if i % 2 == 0 else w[n, 0].numpy() for i, w in enumerate(self.weights)]

    def outputs(self, rows: int) -> list[torch.Tensor]:
        """The reused buffers [(N, rows, width), ..., (N, rows, actions)] that `forward` fills."""
        if rows not in self._outputs:
            self._outputs[rows] = [torch.empty(self.count, rows, width) for width in self.sizes[1:]]
        return self._outputs[rows]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (N, rows, in) -> every layer's output [(N, rows, width), ..., Q-values (N, rows, actions)]
        (ReLU applied to the hidden ones), in `outputs(rows)`: overwritten by the next call."""
        outputs, w = self.outputs(x.shape[1]), self.weights
        for layer, out in enumerate(outputs):
            x = torch.bmm(x, w[2 * layer], out=out).add_(w[2 * layer + 1])
            if layer < len(outputs) - 1:
                x.clamp_min_(0)
        return outputs


def block_shapes(sizes: list[int], count: int) -> list[tuple[int, ...]]:
    """[(count, in, out), (count, 1, out), ...]: the weight and bias blocks of `count` MLPs."""
    return [shape for fan_in, fan_out in zip(sizes[:-1], sizes[1:]) for shape in [(count, fan_in, fan_out), (count, 1, fan_out)]]


def blocks(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Contiguous views of `flat`, one per shape, in order."""
    views, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(flat[offset:offset + size].view(shape))
        offset += size
    return views


class BatchedLearner:
    """K online networks (rows :K of each block) and their K target networks (rows K:), with
    Adam and per-seed gradient clipping."""

    def __init__(self, config: DQNConfig, sizes: list[int], seeds: list[int]):
        from dllab.rl.dqn_torch_fast import Adam

        self.config, self.count = config, len(seeds)
        initial = [uniform_init(np.random.default_rng([seed, 2]), sizes) for seed in seeds]
        self.networks = BatchedQNetwork(sizes, initial + initial)
        self.online = [w[:self.count] for w in self.networks.weights]  # contiguous (K, ...) blocks
        self.target = [w[self.count:] for w in self.networks.weights]
        self.grad = torch.zeros(sum(w.numel() for w in self.online))
        self.grads = blocks(self.grad, block_shapes(sizes, self.count))
        self.optimizer = Adam(self.online, self.grads, config.learning_rate)
        self.acting = [w.numpy() for w in self.online]  # numpy views of the online weights
        self._deltas = [torch.empty(self.count, config.batch_size, width) for width in sizes[1:-1]]
        # views used by every gradient step, made once: the online half of the layer outputs
        # (transposed for the weight gradients), the target half of the Q-values, W transposed
        outputs = self.networks.outputs(config.batch_size)
        self._q, self._next_q = outputs[-1][:self.count], outputs[-1][self.count:]
        self._hidden = [h[:self.count] for h in outputs[:-1]]
        self._hidden_t = [h.transpose(1, 2) for h in self._hidden]
        self._weights_t = [w.transpose(1, 2) for w in self.online[0::2]]
        self._grad_rows = [block.view(self.count, -1) for block in self.grads]

    def update_target(self) -> None:
        for target, online in zip(self.target, self.online):
            target.copy_(online)

    def gradient_step(self, inputs: torch.Tensor, inputs_t: torch.Tensor, one_hot: torch.Tensor,
                      rewards: torch.Tensor, discounts: torch.Tensor) -> None:
        """inputs (2K, batch, in): each seed's observations, then its next observations; inputs_t
        (K, in, batch): the observations transposed; one_hot (K, batch, actions) / batch;
        rewards and discounts = gamma * (1 - terminated): (K, batch, 1)."""
        g, hidden, hidden_t = self.grads, self._hidden, self._hidden_t
        self.networks.forward(inputs)
        targets = self._next_q.amax(2, keepdim=True).mul_(discounts).add_(rewards)
        delta = torch.sub(self._q, targets).clamp_(-1, 1).mul_(one_hot)  # Huber's derivative, chosen actions
        for layer in range(len(hidden), -1, -1):
            torch.bmm(hidden_t[layer - 1] if layer else inputs_t, delta, out=g[2 * layer])
            torch.sum(delta, 1, keepdim=True, out=g[2 * layer + 1])
            if layer > 0:  # through the ReLU: zero where the unit was inactive
                delta = torch.bmm(delta, self._weights_t[layer], out=self._deltas[layer - 1])
                torch.ops.aten.threshold_backward.grad_input(delta, hidden[layer - 1], 0, grad_input=delta)
        total = float(torch.linalg.vector_norm(self.grad))  # >= every seed's norm: if within, no seed clips
        if total > self.config.max_grad_norm:  # clip_grad_norm_, per seed
            norms = torch.stack([torch.linalg.vector_norm(rows, dim=1) for rows in self._grad_rows]).norm(dim=0)
            scale = norms.add_(1e-6).reciprocal_().mul_(self.config.max_grad_norm).clamp_(max=1.0)
            for rows in self._grad_rows:
                rows.mul_(scale.unsqueeze(1))
        self.optimizer.step()

    @torch.no_grad()
    def train_phase(self, batch: dict[str, np.ndarray]) -> None:
        """Gradient steps on minibatches (steps, K, batch, ...), denormals flushed meanwhile
        (see `dllab.rl.dqn_torch_fast.FastTorchLearner.train_phase`)."""
        inputs = torch.from_numpy(np.concatenate([batch["observations"], batch["next_observations"]], axis=1))
        inputs_t = torch.from_numpy(np.ascontiguousarray(batch["observations"].transpose(0, 1, 3, 2)))
        n_actions = self.networks.sizes[-1]
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(batch["actions"]), n_actions).float()
        one_hot /= self.config.batch_size
        rewards = torch.from_numpy(batch["rewards"]).unsqueeze(3)
        discounts = torch.from_numpy((1 - batch["terminated"]) * np.float32(self.config.gamma)).unsqueeze(3)
        torch.set_flush_denormal(True)
        try:
            for step in range(len(inputs)):
                self.gradient_step(inputs[step], inputs_t[step], one_hot[step], rewards[step], discounts[step])
        finally:
            torch.set_flush_denormal(False)


class BatchedReplayBuffer:
    """K circular buffers in lock step: arrays (K, capacity, ...), one write stores K transitions."""

    def __init__(self, count: int, capacity: int, observation_size: int):
        self.capacity, self.size, self.position = capacity, 0, 0
        self.observations = np.zeros((count, capacity, observation_size), dtype=np.float32)
        self.next_observations = np.zeros_like(self.observations)
        self.actions = np.zeros((count, capacity), dtype=np.int64)
        self.rewards = np.zeros((count, capacity), dtype=np.float32)
        self.terminated = np.zeros((count, capacity), dtype=np.float32)  # 1: no bootstrap

    def add(self, observations, actions, rewards, next_observations, terminated) -> None:
        i = self.position
        self.observations[:, i], self.next_observations[:, i] = observations, next_observations
        self.actions[:, i], self.rewards[:, i], self.terminated[:, i] = actions, rewards, terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rngs: list[np.random.Generator], steps: int, batch_size: int) -> dict[str, np.ndarray]:
        """Each seed's minibatches drawn with its own RNG, as `ReplayBuffer.sample` draws them:
        arrays (steps, K, batch, ...)."""
        index = np.stack([rng.integers(0, self.size, size=(steps, batch_size)) for rng in rngs], axis=1)
        seed = np.arange(len(rngs))[None, :, None]
        return {"observations": self.observations[seed, index], "actions": self.actions[seed, index],
                "rewards": self.rewards[seed, index], "next_observations": self.next_observations[seed, index],
                "terminated": self.terminated[seed, index]}


class GymEnvs:
    """K Gymnasium envs behind CartPoleSideBySide's interface (for environments other than CartPole)."""

    def __init__(self, env_id: str, seeds: list[int]):
        import gymnasium as gym

        self.envs = [gym.make(env_id) for _ in seeds]
        self.first = np.stack([env.reset(seed=seed)[0] for env, seed in zip(self.envs, seeds)]).astype(np.float32)
        self.rewards = np.zeros(len(seeds), dtype=np.float32)

    def observations(self) -> np.ndarray:
        return self.first

    def reset(self, k: int) -> np.ndarray:
        return self.envs[k].reset()[0]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def step(self, actions):
        steps = [env.step(int(action)) for env, action in zip(self.envs, actions)]
        self.rewards[:] = [s[1] for s in steps]
        return (np.stack([s[0] for s in steps]).astype(np.float32), np.array([s[2] for s in steps]),
                np.array([s[3] for s in steps]))


@dataclass
class BatchedResult:
    results: list[TrainResult]
    timings: dict[str, float]


def train_batched(config: DQNConfig, seeds: list[int], threshold: float | None = None) -> BatchedResult:
    """Train len(seeds) DQNs in lock step (same schedule), as one batched computation."""
    from dllab.rl.cartpole_side_by_side import ENV_ID as CARTPOLE, CartPoleSideBySide

    if config.double_dqn:
        raise ValueError("train_batched: double DQN is not batched; train the seeds separately")
    count = len(seeds)
    observation_size, n_actions = env_sizes(config.env_id)
    learner = BatchedLearner(config, [observation_size, *config.hidden, n_actions], seeds)
    acting = learner.acting
    envs = CartPoleSideBySide(seeds) if config.env_id == CARTPOLE else GymEnvs(config.env_id, seeds)
    rewards = np.ones(count, dtype=np.float32) if config.env_id == CARTPOLE else envs.rewards
    rngs = [np.random.default_rng([seed, 1]) for seed in seeds]
    buffer = BatchedReplayBuffer(count, config.buffer_size, observation_size)
    observations = envs.observations()
    timings = dict.fromkeys(["acting", "environment", "buffer", "gradient", "evaluation"], 0.0)
    results = [TrainResult(eval_returns=np.zeros(0)) for _ in seeds]
    started = time.perf_counter()

    def evaluate_all(step):
        for k, (seed, result) in enumerate(zip(seeds, results)):
            began = time.perf_counter()
            weights = learner.networks.network(k)
            returns = evaluate(config.env_id, lambda x: mlp_forward(weights, x), config.eval_episodes, eval_seed(seed))
            timings["evaluation"] += time.perf_counter() - began
            wall = time.perf_counter() - started - timings["evaluation"]
            result.eval_returns = returns
            result.curve.append((step, float(returns.mean()), wall))
            if threshold is not None and result.time_to_solve_s is None and returns.mean() >= threshold:
                result.time_to_solve_s, result.steps_to_solve = wall, step

    for step in range(1, config.total_steps + 1):
        began = time.perf_counter()
        epsilon = linear_schedule(config.exploration_initial_eps, config.exploration_final_eps,
                                  config.exploration_fraction, step - 1, config.total_steps)
        greedy = observations[:, None, :]
        for i in range(0, len(acting) - 2, 2):  # one batched forward pass for the K greedy actions
            greedy = np.maximum(greedy @ acting[i] + acting[i + 1], 0)
        greedy = (greedy @ acting[-2] + acting[-1])[:, 0].argmax(axis=1)
        actions = [int(rng.integers(n_actions)) if step <= config.learning_starts or rng.random() < epsilon
                   else int(greedy[k]) for k, rng in enumerate(rngs)]
        stepped = time.perf_counter()
        next_observations, terminated, truncated = envs.step(actions)
        stored = time.perf_counter()
        buffer.add(observations, actions, rewards, next_observations, terminated)
        observations = next_observations
        for k in np.flatnonzero(terminated | truncated):
            observations[k] = envs.reset(k)
        done = time.perf_counter()
        timings["acting"] += stepped - began
        timings["environment"] += stored - stepped
        timings["buffer"] += done - stored
        if step % config.target_update_interval == 0:
            learner.update_target()
        if step % config.train_freq == 0 and step > config.learning_starts:
            began = time.perf_counter()
            learner.train_phase(buffer.sample(rngs, config.steps_per_phase, config.batch_size))
            timings["gradient"] += time.perf_counter() - began
        if config.eval_interval and step % config.eval_interval == 0 and step < config.total_steps:
            evaluate_all(step)
    evaluate_all(config.total_steps)
    envs.close()
    return BatchedResult(results, timings)
