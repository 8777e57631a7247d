"""K seeds of DQN trained as one batched computation (torch, stacked weights, batched matmuls).

Each seed keeps its own environment, replay buffer, exploration RNG, epsilon, online and target
networks and Adam moments, exactly as in `dllab.rl.dqn_torch` (same initial weights, same random
streams): the K runs are the K separate runs, computed side by side. What is shared is the work:
one batched forward pass picks the K greedy actions, and each gradient step is a handful of
`torch.bmm` calls over the K networks, so Python and framework overhead is paid once for all K.
(Batched matmuls sum in a different order than single ones, so results agree with separate runs
in distribution, and to float rounding at the start, not bit for bit.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dllab.rl.common import (DQNConfig, ReplayBuffer, TrainResult, env_sizes, eval_seed, evaluate, linear_schedule,
                             mlp_forward, uniform_init)


class BatchedQNetwork:
    """K MLPs in one flat tensor; each parameter block is contiguous with shape (K, ...)."""

    def __init__(self, sizes: list[int], weights_per_seed: list[list[np.ndarray]]):
        self.sizes, self.count = sizes, len(weights_per_seed)
        blocks = [np.stack([weights[i] for weights in weights_per_seed]) for i in range(len(weights_per_seed[0]))]
        self.flat = torch.cat([torch.from_numpy(b).reshape(-1) for b in blocks])
        self.grad = torch.zeros_like(self.flat)
        self.weights, self.grads = self._views(self.flat, blocks), self._views(self.grad, blocks)

    @staticmethod
    def _views(flat, blocks):
        views, offset = [], 0
        for block in blocks:
            views.append(flat[offset:offset + block.size].view(block.shape))
            offset += block.size
        return views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, batch, in) -> Q-values (K, batch, actions)."""
        w = self.weights
        for i in range(0, len(w) - 2, 2):
            x = torch.baddbmm(w[i + 1].unsqueeze(1), x, w[i]).clamp_min(0)
        return torch.baddbmm(w[-1].unsqueeze(1), x, w[-2])

    def huber_gradient(self, x: torch.Tensor, one_hot: torch.Tensor, targets: torch.Tensor) -> None:
        """Each seed's mean-Huber gradient into `self.grad` (the batched form of QNetwork's)."""
        w, g = self.weights, self.grads
        activations, h = [x], x
        for i in range(0, len(w) - 2, 2):
            h = torch.baddbmm(w[i + 1].unsqueeze(1), h, w[i]).clamp_min(0)
            activations.append(h)
        q = torch.baddbmm(w[-1].unsqueeze(1), h, w[-2])
        error = (q * one_hot).sum(2) - targets
        delta = one_hot * (error.clamp(-1, 1) / x.shape[1]).unsqueeze(2)
        for layer in range(len(w) // 2 - 1, -1, -1):
            torch.bmm(activations[layer].transpose(1, 2), delta, out=g[2 * layer])
            torch.sum(delta, 1, out=g[2 * layer + 1])
            if layer > 0:
                delta = torch.ops.aten.threshold_backward(torch.bmm(delta, w[2 * layer].transpose(1, 2)),
                                                          activations[layer], 0)

    def clip_gradients(self, max_norm: float) -> None:
        """clip_grad_norm_ per seed: each network's gradient scaled to norm <= max_norm."""
        squares = sum(g.reshape(self.count, -1).square().sum(1) for g in self.grads)
        scale = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in self.grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


@dataclass
class BatchedResult:
    results: list[TrainResult]
    timings: dict[str, float]


def train_batched(config: DQNConfig, seeds: list[int], threshold: float | None = None) -> BatchedResult:
    """Train len(seeds) DQNs in lock step (same schedule), as one batched computation."""
    import gymnasium as gym

    from dllab.rl.dqn_torch import Adam

    count = len(seeds)
    observation_size, n_actions = env_sizes(config.env_id)
    sizes = [observation_size, *config.hidden, n_actions]
    initial = [uniform_init(np.random.default_rng([seed, 2]), sizes) for seed in seeds]
    online, target = BatchedQNetwork(sizes, initial), BatchedQNetwork(sizes, initial)
    optimizer = Adam(online.flat, online.grad, config.learning_rate)
    acting = [w.numpy() for w in online.weights]  # (K, ...) numpy views of the online weights
    envs = [gym.make(config.env_id) for _ in seeds]
    rngs = [np.random.default_rng([seed, 1]) for seed in seeds]
    buffers = [ReplayBuffer(config.buffer_size, (observation_size,)) for _ in seeds]
    observations = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]).astype(np.float32)
    timings = dict.fromkeys(["acting", "environment", "buffer", "gradient", "evaluation"], 0.0)
    results = [TrainResult(eval_returns=np.zeros(0)) for _ in seeds]
    steps_per_phase = config.steps_per_phase
    started = time.perf_counter()

    def evaluate_all(step):
        for k, (seed, result) in enumerate(zip(seeds, results)):
            began = time.perf_counter()
            weights = [w[k] for w in acting]
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
        greedy = np.matmul(observations[:, None, :], acting[0]) + acting[1][:, None, :]
        for i in range(2, len(acting), 2):  # one batched forward pass for the K greedy actions
            greedy = np.matmul(np.maximum(greedy, 0), acting[i]) + acting[i + 1][:, None, :]
        greedy = greedy[:, 0].argmax(axis=1)
        actions = [int(rng.integers(n_actions)) if step <= config.learning_starts or rng.random() < epsilon
                   else int(greedy[k]) for k, rng in enumerate(rngs)]
        stepped = time.perf_counter()
        for k, env in enumerate(envs):
            next_observation, reward, terminated, truncated, _ = env.step(actions[k])
            buffers[k].add(observations[k], actions[k], reward, next_observation, terminated)
            observations[k] = env.reset()[0] if terminated or truncated else next_observation
        timings["environment"] += time.perf_counter() - stepped
        timings["acting"] += stepped - began
        if step % config.target_update_interval == 0:
            target.flat.copy_(online.flat)
        if step % config.train_freq == 0 and step > config.learning_starts:
            began = time.perf_counter()
            batches = [buffer.sample(rng, steps_per_phase, config.batch_size) for buffer, rng in zip(buffers, rngs)]
            data = {name: torch.from_numpy(np.stack([b[name] for b in batches], axis=1)) for name in batches[0]}
            # data[name]: (steps, K, batch, ...); the target nets are fixed during the phase
            with torch.no_grad():
                next_obs = data["next_observations"].transpose(0, 1).reshape(count, -1, observation_size)
                next_value = target.forward(next_obs).max(2).values.reshape(count, steps_per_phase, -1)
                targets = data["rewards"] + config.gamma * (1 - data["terminated"]) * next_value.transpose(0, 1)
                one_hot = torch.nn.functional.one_hot(data["actions"], n_actions).float()
                torch.set_flush_denormal(True)
                for s in range(steps_per_phase):
                    online.huber_gradient(data["observations"][s], one_hot[s], targets[s])
                    online.clip_gradients(config.max_grad_norm)
                    optimizer.step()
                torch.set_flush_denormal(False)
            timings["gradient"] += time.perf_counter() - began
        if config.eval_interval and step % config.eval_interval == 0 and step < config.total_steps:
            evaluate_all(step)
    evaluate_all(config.total_steps)
    for env in envs:
        env.close()
    return BatchedResult(results, timings)
