"""The fast DQN engine in PyTorch: the engine behind `python -m dllab bench dqn`, and the DQN
scenarios' `engine = "fast"`. It computes the update of `dllab.rl.dqn_torch` (the reference:
read that one first), several times faster; `tests/test_dqn_reference.py` checks that both give
the same loss, gradient and weights after an Adam step (float64, 1e-12). Speed comes from three
choices, all exact:

- The target network changes only between environment steps, so within a training phase it is
  fixed: the TD targets of 8 minibatches at a time come from one forward pass (one pass over the
  whole phase would stream megabytes of activations through memory; 8 * 64 rows stay in cache).
- The Q-network's parameters live in one flat tensor. The backward pass of the MLP is written out
  (a handful of matmuls into one flat gradient tensor: no autograd graph per step), so gradient
  clipping is one norm and Adam one fused update (`torch._fused_adam_`, what
  `torch.optim.Adam(fused=True)` calls, without its per-call Python overhead).
- Acting reads the same memory through numpy (`tensor.numpy()` shares it): no copy, no tensors
  per environment step.

The phase's loss is the mean Huber loss over its gradient steps, as in the reference: each step
writes its TD errors into one (steps, batch) tensor, and the loss is computed once at the end.
"""

from __future__ import annotations

import numpy as np
import torch

from dllab.rl.common import DQNConfig, TrainResult, env_sizes, train_loop, uniform_init

__all__ = ["Adam", "FastTorchLearner", "QNetwork", "huber_loss", "train"]


TARGET_CHUNK = 8  # minibatches per target-network forward pass: (8 * batch, width) stays in cache


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

    def huber_gradient(self, x: torch.Tensor, one_hot: torch.Tensor, targets: torch.Tensor,
                       errors: torch.Tensor | None = None) -> torch.Tensor:
        """Write d(mean Huber(Q(x, a) - target))/d(parameters) into `self.grad` (the actions a
        given as one-hot rows); return the TD errors Q(x, a) - target, written into `errors` if
        given (`huber_loss(errors)` is then the loss, at no cost to the step)."""
        weights, grads = self.weights, self.grads
        activations, h = [x], x
        for i in range(0, len(weights) - 2, 2):
            h = torch.addmm(weights[i + 1], h, weights[i]).clamp_min_(0)
            activations.append(h)
        q = torch.addmm(weights[-1], h, weights[-2])
        error = torch.sub((q * one_hot).sum(1), targets, out=errors)
        clipped = error.clamp(-1, 1)  # Huber's derivative
        delta = one_hot.mul(clipped.div_(len(x)).unsqueeze(1))
        for layer in range(len(weights) // 2 - 1, -1, -1):
            torch.mm(activations[layer].T, delta, out=grads[2 * layer])
            torch.sum(delta, 0, out=grads[2 * layer + 1])
            if layer > 0:  # through the ReLU: zero where the unit was inactive
                delta = torch.ops.aten.threshold_backward(delta @ weights[2 * layer].T,
                                                          activations[layer], 0)
        return error


def huber_loss(errors: torch.Tensor) -> float:
    """The mean Huber loss (delta 1, `F.smooth_l1_loss`) of TD errors."""
    clipped = errors.clamp(-1, 1)
    return float((clipped * (errors - 0.5 * clipped)).mean())


class Adam:
    """torch.optim.Adam's update on flat tensors (one, or a list stepped together): one fused
    kernel (`torch._fused_adam_`, what `Adam(fused=True)` calls, without its per-call Python
    overhead), or five in-place operations per tensor where that kernel is missing."""

    def __init__(self, parameters: torch.Tensor | list[torch.Tensor],
                 gradients: torch.Tensor | list[torch.Tensor],
                 learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        listed = isinstance(parameters, (list, tuple))
        self.parameters = list(parameters) if listed else [parameters]
        self.gradients = list(gradients) if listed else [gradients]
        self.learning_rate, self.beta1, self.beta2, self.eps = learning_rate, beta1, beta2, eps
        self.m = [torch.zeros_like(p) for p in self.parameters]
        self.v = [torch.zeros_like(p) for p in self.parameters]
        self.step_count = torch.zeros(())  # a tensor, as the fused kernel wants
        self._fused = getattr(torch, "_fused_adam_", None)

    @property
    def steps(self) -> int:
        return int(self.step_count)

    def step(self) -> None:
        self.step_count += 1
        if self._fused is not None:
            self._fused(self.parameters, self.gradients, self.m, self.v, [],
                        [self.step_count] * len(self.m),
                        lr=self.learning_rate, beta1=self.beta1, beta2=self.beta2, weight_decay=0.0,
                        eps=self.eps, amsgrad=False, maximize=False)
            return
        steps = float(self.step_count)
        bias1, bias2 = 1 - self.beta1 ** steps, 1 - self.beta2 ** steps
        for parameter, gradient, m, v in zip(self.parameters, self.gradients, self.m, self.v):
            m.lerp_(gradient, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(gradient, gradient, value=1 - self.beta2)
            denominator = (v.sqrt() / bias2 ** 0.5).add_(self.eps)
            parameter.addcdiv_(m, denominator, value=-self.learning_rate / bias1)


class FastTorchLearner:
    """The reference's `DQNLearner` (the same four methods for `train_loop`), on flat tensors."""

    def __init__(self, config: DQNConfig, observation_size: int, n_actions: int, seed: int):
        self.config = config
        sizes = [observation_size, *config.hidden, n_actions]
        initial = uniform_init(np.random.default_rng([seed, 2]), sizes)
        self.online, self.target = QNetwork(sizes, initial), QNetwork(sizes, initial)
        self.optimizer = Adam(self.online.flat, self.online.grad, config.learning_rate)
        self._acting = [w.numpy() for w in self.online.weights]  # numpy views of the same memory
        self._target_stale = False

    def acting_weights(self) -> list[np.ndarray]:
        return self._acting

    def update_target(self) -> None:
        if self._target_stale:  # the online weights change only in training phases
            self.target.flat.copy_(self.online.flat)
            self._target_stale = False

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
            self._target_stale = True

    def _train_phase(self, batch: dict[str, np.ndarray]) -> float:
        data = {k: torch.from_numpy(v) for k, v in batch.items()}
        dtype = self.online.flat.dtype
        one_hot = torch.nn.functional.one_hot(data["actions"], self.online.sizes[-1]).to(dtype)
        steps = len(data["actions"])
        errors = torch.empty(data["rewards"].shape, dtype=dtype)  # (steps, batch): the TD errors
        for k in range(steps):
            if self.config.double_dqn:  # the online net moves after each step
                target = self.td_targets(data["rewards"][k], data["next_observations"][k],
                                         data["terminated"][k])
            else:  # the target net is fixed during the phase: one forward pass per chunk
                if k % TARGET_CHUNK == 0:
                    chunk = slice(k, k + TARGET_CHUNK)
                    targets = self.td_targets(data["rewards"][chunk],
                                              data["next_observations"][chunk],
                                              data["terminated"][chunk])
                target = targets[k % TARGET_CHUNK]
            self.online.huber_gradient(data["observations"][k], one_hot[k], target, errors[k])
            norm = float(torch.linalg.vector_norm(self.online.grad))
            if norm > self.config.max_grad_norm:  # clip_grad_norm_'s rule
                self.online.grad.mul_(self.config.max_grad_norm / (norm + 1e-6))
            self.optimizer.step()
        return huber_loss(errors)  # equal batches: the mean over all rows is the mean of the steps'

    def state(self) -> dict[str, np.ndarray]:
        return {"target_stale": np.array(self._target_stale),
                "online": self.online.flat.numpy().copy(),
                "target": self.target.flat.numpy().copy(),
                "adam_m": self.optimizer.m[0].numpy().copy(),
                "adam_v": self.optimizer.v[0].numpy().copy(),
                "adam_steps": np.array(self.optimizer.steps)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.online.flat.copy_(torch.from_numpy(arrays["online"]))
        self.target.flat.copy_(torch.from_numpy(arrays["target"]))
        self.optimizer.m[0].copy_(torch.from_numpy(arrays["adam_m"]))
        self.optimizer.v[0].copy_(torch.from_numpy(arrays["adam_v"]))
        self.optimizer.step_count.fill_(float(arrays["adam_steps"]))
        self._target_stale = bool(arrays["target_stale"])


def train(config: DQNConfig, seed: int = 0, **loop_options) -> TrainResult:
    """Train one DQN with the fast engine (one thread is the caller's choice:
    `torch.set_num_threads`)."""
    learner = FastTorchLearner(config, *env_sizes(config.env_id), seed)
    return train_loop(config, learner, seed, **loop_options)

