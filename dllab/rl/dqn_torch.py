"""Deep Q-learning (DQN) in PyTorch: replay buffer, target network, epsilon-greedy exploration,
Huber loss, gradient-norm clipping, optional double DQN (seed question 20, the deep version).

    from dllab.rl.dqn_torch import DQNConfig, train
    result = train(DQNConfig(env_id="CartPole-v1"), seed=0)    # result.eval_returns, .curve, .timings

The loop (acting, buffer, schedules, evaluation) is `dllab.rl.common.train_loop`; this file is the
learner. Speed comes from three choices, all exact:

- The target network changes only between environment steps, so within a training phase it is
  fixed: the TD targets of all the phase's minibatches are computed in one large forward pass.
- The Q-network's parameters live in one flat tensor. The backward pass of the MLP is written out
  (a handful of matmuls into one flat gradient tensor: no autograd graph per step), so gradient
  clipping is one norm and Adam one fused update. `tests/test_dqn.py` checks it against autograd.
- Acting reads the same memory through numpy (`tensor.numpy()` shares it): no copy, no tensors
  per environment step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from dllab.rl.common import DEFAULT_CONFIGS, ZOO_CONFIGS, DQNConfig, TrainResult, train_loop, uniform_init

__all__ = ["DQNConfig", "QNetwork", "TorchLearner", "train", "run"]


class QNetwork:
    """An MLP whose weights are views into one flat parameter tensor (W of shape (in, out))."""

    def __init__(self, sizes: list[int], weights: list[np.ndarray]):
        self.sizes = sizes
        self.flat = torch.cat([torch.from_numpy(w).reshape(-1) for w in weights])
        self.grad = torch.zeros_like(self.flat)
        self.weights, self.grads = self._views(self.flat), self._views(self.grad)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, offset = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            views.append(flat[offset:offset + fan_in * fan_out].view(fan_in, fan_out))
            views.append(flat[offset + fan_in * fan_out:offset + (fan_in + 1) * fan_out])
            offset += (fan_in + 1) * fan_out
        return views

    def forward(self, x: torch.Tensor, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Q-values (batch, actions); differentiable when `weights` require grad."""
        weights = self.weights if weights is None else weights
        for i in range(0, len(weights) - 2, 2):
            x = torch.addmm(weights[i + 1], x, weights[i]).clamp_min(0)
        return torch.addmm(weights[-1], x, weights[-2])

    def huber_gradient(self, x: torch.Tensor, one_hot: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Write d(mean Huber(Q(x, a) - target))/d(parameters) into `self.grad` (the actions a
        given as one-hot rows); return the loss (a 0-d tensor, no synchronisation)."""
        weights, grads = self.weights, self.grads
        activations, h = [x], x
        for i in range(0, len(weights) - 2, 2):
            h = torch.addmm(weights[i + 1], h, weights[i]).clamp_min(0)
            activations.append(h)
        q = torch.addmm(weights[-1], h, weights[-2])
        error = (q * one_hot).sum(1) - targets
        absolute = error.abs()
        loss = torch.where(absolute < 1, 0.5 * error.square(), absolute - 0.5).mean()
        delta = one_hot * (error.clamp(-1, 1) / len(x)).unsqueeze(1)  # Huber's derivative, averaged
        for layer in range(len(weights) // 2 - 1, -1, -1):
            torch.mm(activations[layer].T, delta, out=grads[2 * layer])
            torch.sum(delta, 0, out=grads[2 * layer + 1])
            if layer > 0:  # through the ReLU: zero where the unit was inactive
                delta = torch.ops.aten.threshold_backward(delta @ weights[2 * layer].T, activations[layer], 0)
        return loss


class Adam:
    """torch.optim.Adam's update on one flat tensor, as five in-place operations."""

    def __init__(self, parameter: torch.Tensor, gradient: torch.Tensor, learning_rate: float,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.parameter, self.gradient = parameter, gradient
        self.learning_rate, self.beta1, self.beta2, self.eps = learning_rate, beta1, beta2, eps
        self.m, self.v, self.steps = torch.zeros_like(parameter), torch.zeros_like(parameter), 0
        self._denominator = torch.zeros_like(parameter)

    def step(self) -> None:
        self.steps += 1
        self.m.lerp_(self.gradient, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(self.gradient, self.gradient, value=1 - self.beta2)
        bias1, bias2 = 1 - self.beta1 ** self.steps, 1 - self.beta2 ** self.steps
        torch.sqrt(self.v, out=self._denominator).div_(bias2 ** 0.5).add_(self.eps)
        self.parameter.addcdiv_(self.m, self._denominator, value=-self.learning_rate / bias1)


class TorchLearner:
    """Online and target networks, Adam, and the gradient steps of one training phase."""

    def __init__(self, config: DQNConfig, observation_size: int, n_actions: int, seed: int):
        self.config = config
        sizes = [observation_size, *config.hidden, n_actions]
        initial = uniform_init(np.random.default_rng([seed, 2]), sizes)
        self.online, self.target = QNetwork(sizes, initial), QNetwork(sizes, initial)
        self.optimizer = Adam(self.online.flat, self.online.grad, config.learning_rate)
        self._acting = [w.numpy() for w in self.online.weights]  # numpy views of the same memory

    def acting_weights(self) -> list[np.ndarray]:
        return self._acting

    def update_target(self) -> None:
        self.target.flat.copy_(self.online.flat)

    @torch.no_grad()
    def td_targets(self, rewards, next_observations, terminated) -> torch.Tensor:
        """r + gamma * (1 - terminated) * max_a' Q_target(s', a'), for all rows at once."""
        shape = rewards.shape
        next_flat = next_observations.reshape(-1, next_observations.shape[-1])
        next_q = self.target.forward(next_flat)
        if self.config.double_dqn:  # online net picks the action, target net values it
            chosen = self.online.forward(next_flat).argmax(1, keepdim=True)
            next_value = next_q.gather(1, chosen).squeeze(1)
        else:
            next_value = next_q.max(1).values
        return rewards + self.config.gamma * (1 - terminated) * next_value.reshape(shape)

    @torch.no_grad()
    def train_phase(self, batch: dict[str, np.ndarray]) -> float:
        """Gradient steps on minibatches (steps, batch, ...); returns the mean Huber loss.
        Denormal floats are flushed to zero meanwhile: Adam's moments of dead ReLU units decay
        into the denormal range, where x86 arithmetic is ~100x slower."""
        torch.set_flush_denormal(True)
        try:
            return self._train_phase(batch)
        finally:
            torch.set_flush_denormal(False)

    def _train_phase(self, batch: dict[str, np.ndarray]) -> float:
        data = {k: torch.from_numpy(v) for k, v in batch.items()}
        one_hot = torch.nn.functional.one_hot(data["actions"], self.online.sizes[-1]).float()
        if not self.config.double_dqn:  # the target net is fixed during the phase: one forward pass
            targets = self.td_targets(data["rewards"], data["next_observations"], data["terminated"])
        total = torch.zeros(())
        for k in range(len(data["actions"])):
            if self.config.double_dqn:  # the online net moves after each step
                target = self.td_targets(data["rewards"][k], data["next_observations"][k], data["terminated"][k])
            else:
                target = targets[k]
            total += self.online.huber_gradient(data["observations"][k], one_hot[k], target)
            norm = float(torch.linalg.vector_norm(self.online.grad))
            if norm > self.config.max_grad_norm:  # clip_grad_norm_'s rule
                self.online.grad.mul_(self.config.max_grad_norm / (norm + 1e-6))
            self.optimizer.step()
        return float(total) / len(data["actions"])

    def state(self) -> dict[str, np.ndarray]:
        return {"online": self.online.flat.numpy().copy(), "target": self.target.flat.numpy().copy(),
                "adam_m": self.optimizer.m.numpy().copy(), "adam_v": self.optimizer.v.numpy().copy(),
                "adam_steps": np.array(self.optimizer.steps)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.online.flat.copy_(torch.from_numpy(arrays["online"]))
        self.target.flat.copy_(torch.from_numpy(arrays["target"]))
        self.optimizer.m.copy_(torch.from_numpy(arrays["adam_m"]))
        self.optimizer.v.copy_(torch.from_numpy(arrays["adam_v"]))
        self.optimizer.steps = int(arrays["adam_steps"])


def env_sizes(env_id: str) -> tuple[int, int]:
    import gymnasium as gym

    env = gym.make(env_id)
    sizes = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    env.close()
    return sizes


def train(config: DQNConfig, seed: int = 0, **loop_options) -> TrainResult:
    """Train one DQN (one thread is the caller's choice: `torch.set_num_threads`)."""
    learner = TorchLearner(config, *env_sizes(config.env_id), seed)
    return train_loop(config, learner, seed, **loop_options)


def run(ctx, *, env_id: str, config: str, total_steps: int, hidden: list, learning_rate: float,
        train_freq: int, gradient_steps: int, exploration_fraction: float, double_dqn: bool,
        eval_episodes: int, checkpoint_every: int = 0) -> dict[str, float]:
    """Scenario entry (torch): train on `env_id` with the zoo (or dllab's default) configuration,
    overridden by the given fields, then compare with a random policy and the env's threshold."""
    from dllab.rl.dqn_scenario import run_scenario

    return run_scenario(ctx, train_config(env_id, config, total_steps=total_steps, hidden=tuple(hidden),
                                          learning_rate=learning_rate, train_freq=train_freq,
                                          gradient_steps=gradient_steps, exploration_fraction=exploration_fraction,
                                          double_dqn=double_dqn, eval_episodes=eval_episodes),
                        TorchLearner, env_sizes(env_id), checkpoint_every)


def train_config(env_id: str, config: str, **fields) -> DQNConfig:
    """A named configuration ("zoo" or "default") with some fields replaced."""
    table = {"zoo": ZOO_CONFIGS, "default": DEFAULT_CONFIGS}.get(config)
    if table is None or env_id not in table:
        raise ValueError(f"no {config!r} DQN configuration for {env_id!r} (have zoo: {sorted(ZOO_CONFIGS)}, "
                         f"default: {sorted(DEFAULT_CONFIGS)})")
    return replace(table[env_id], **fields)
