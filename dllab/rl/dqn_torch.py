"""Deep Q-learning (DQN) in PyTorch: the reference implementation (seed question 20, deep version).

Read it top to bottom beside its Keras twin, `dllab.rl.dqn_keras`: the same names in the same
order, with the same meanings. A Q-network `nn.Sequential`, a target network refreshed with
`load_state_dict`, the TD target with double DQN as one visible branch, the Huber loss
(`F.smooth_l1_loss`), `clip_grad_norm_` and `torch.optim.Adam`. The loop around the learner
(acting, replay buffer, epsilon schedule, evaluation, checkpoints) is `dllab.rl.common.train_loop`,
shared with the Keras learner; the hyperparameters are `dllab.rl.common.DQNConfig`.

    from dllab.rl.dqn_torch import DQN, DQNConfig
    agent = DQN(DQNConfig(env_id="CartPole-v1"))     # rl-baselines3-zoo's CartPole hyperparameters
    result = agent.learn(seed=0)                      # result.eval_returns, .curve, .timings
    actions = agent.predict(observations)             # greedy actions

`dllab.rl.dqn_torch_fast` computes the same update several times faster (flat parameters, a
written-out backward pass, fused Adam); `tests/test_dqn_reference.py` checks that both give the
same loss, gradient and weights after an Adam step (float64, 1e-12). It is the engine behind
`python -m dllab bench dqn`, and `--set engine=fast` picks it in the DQN scenarios.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dllab.rl.common import DQNConfig, TrainResult, env_sizes, mlp_forward, train_loop, uniform_init

__all__ = ["DQN", "DQNConfig", "DQNLearner", "QNetwork", "build_q_network", "run", "train"]


class QNetwork(nn.Sequential):
    """An MLP from observations to one Q-value per action (ReLU between layers)."""

    def __init__(self, sizes: list[int]):
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        super().__init__(*layers)


def build_q_network(sizes: list[int], weights: list[np.ndarray]) -> QNetwork:
    """A QNetwork holding `weights`: [W1, b1, ...] with W of shape (in, out), as `uniform_init`
    draws them for both frameworks (`nn.Linear` keeps W as (out, in))."""
    network = QNetwork(sizes)
    linears = [module for module in network if isinstance(module, nn.Linear)]
    with torch.no_grad():
        for layer, kernel, bias in zip(linears, weights[0::2], weights[1::2]):
            layer.weight.copy_(torch.from_numpy(kernel.T))
            layer.bias.copy_(torch.from_numpy(bias))
    return network


class DQNLearner:
    """Online and target Q-networks, Adam, and the gradient steps of one training phase."""

    def __init__(self, config: DQNConfig, observation_size: int, n_actions: int, seed: int):
        self.config = config
        sizes = [observation_size, *config.hidden, n_actions]
        initial = uniform_init(np.random.default_rng([seed, 2]), sizes)
        self.online, self.target = build_q_network(sizes, initial), build_q_network(sizes, initial)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=config.learning_rate)
        self._acting, self._target_stale = self.online_weights(), False

    def online_weights(self) -> list[np.ndarray]:
        """The online network as numpy [W1, b1, ...] (W of shape (in, out)), for acting."""
        arrays = [parameter.detach().numpy() for parameter in self.online.parameters()]
        return [array.T.copy() if array.ndim == 2 else array.copy() for array in arrays]

    def acting_weights(self) -> list[np.ndarray]:
        return self._acting

    def update_target(self) -> None:
        if self._target_stale:  # the online weights change only in training phases
            self.target.load_state_dict(self.online.state_dict())
            self._target_stale = False

    @torch.no_grad()
    def td_target(self, rewards, next_observations, terminated) -> torch.Tensor:
        """r + gamma * (1 - terminated) * Q_target(s', a'): a' is the target network's best action,
        or with double DQN the online network's (which the target network then values)."""
        next_q = self.target(next_observations)
        if self.config.double_dqn:
            next_actions = self.online(next_observations).argmax(dim=1, keepdim=True)
        else:
            next_actions = next_q.argmax(dim=1, keepdim=True)
        next_value = next_q.gather(1, next_actions).squeeze(1)
        return rewards + self.config.gamma * (1 - terminated) * next_value

    def train_step(self, observations, actions, target) -> float:
        """One gradient step on a minibatch: the Huber loss of Q(s, a) against the TD target, its
        gradient clipped to norm max_grad_norm; returns the loss."""
        q = self.online(observations).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, target)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return loss.item()

    def train_phase(self, batch: dict[str, np.ndarray]) -> float:
        """Gradient steps on minibatches (arrays of shape (steps, batch, ...)), each against the
        TD target of the networks as they are; returns the mean Huber loss of the steps."""
        data = {name: torch.from_numpy(array) for name, array in batch.items()}
        losses = []
        for k in range(len(data["actions"])):
            target = self.td_target(data["rewards"][k], data["next_observations"][k],
                                    data["terminated"][k])
            losses.append(self.train_step(data["observations"][k], data["actions"][k], target))
        self._acting, self._target_stale = self.online_weights(), True
        return float(np.mean(losses))

    def state(self) -> dict[str, np.ndarray]:
        """Weights of both networks and Adam's moments, as numpy arrays for a checkpoint."""
        from dllab.checkpoint import torch_optimizer_state

        arrays = {}
        for prefix, network in (("online/", self.online), ("target/", self.target)):
            arrays.update({prefix + k: v.numpy().copy() for k, v in network.state_dict().items()})
        arrays.update(torch_optimizer_state(self.optimizer)[0])  # hyperparameters: from the config
        arrays["target_stale"] = np.array(self._target_stale)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue from `state()`'s arrays exactly."""
        from dllab.checkpoint import load_torch_optimizer_state

        for prefix, network in (("online/", self.online), ("target/", self.target)):
            network.load_state_dict({k[len(prefix):]: torch.from_numpy(v)
                                     for k, v in arrays.items() if k.startswith(prefix)})
        load_torch_optimizer_state(self.optimizer, arrays)
        self._acting, self._target_stale = self.online_weights(), bool(arrays["target_stale"])


class DQN:
    """The learner and the loop as one object: `DQN(DQNConfig(...)).learn(seed=0)` trains and
    returns a TrainResult; `predict(observations)` then gives the greedy actions."""

    def __init__(self, config: DQNConfig | None = None):
        self.config, self.learner = config or DQNConfig(), None

    def learn(self, seed: int = 0, **loop_options) -> TrainResult:
        self.learner = DQNLearner(self.config, *env_sizes(self.config.env_id), seed)
        return train_loop(self.config, self.learner, seed, **loop_options)

    def predict(self, observations) -> np.ndarray:
        if self.learner is None:
            raise ValueError("DQN.predict: call learn() first")
        observations = np.asarray(observations, dtype=np.float32)
        return mlp_forward(self.learner.acting_weights(), observations).argmax(-1)


def train(config: DQNConfig, seed: int = 0, **loop_options) -> TrainResult:
    """Train one DQN (one thread is the caller's choice: `torch.set_num_threads`)."""
    learner = DQNLearner(config, *env_sizes(config.env_id), seed)
    return train_loop(config, learner, seed, **loop_options)


def run(ctx, *, engine: str = "reference", **params) -> dict[str, float]:
    """Scenario entry (torch): this learner, or with engine "fast" `dllab.rl.dqn_torch_fast`'s
    (the same update, faster); see `dllab.rl.dqn_scenario.run_scenario` for the parameters."""
    from dllab.rl.dqn_scenario import run_scenario

    if engine == "fast":
        from dllab.rl.dqn_torch_fast import FastTorchLearner

        return run_scenario(ctx, FastTorchLearner, **params)
    return run_scenario(ctx, DQNLearner, **params)
