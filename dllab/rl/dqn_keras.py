"""Deep Q-learning (DQN) with Keras 3, on KERAS_BACKEND=tensorflow or torch: the twin of the
reference implementation `dllab.rl.dqn_torch` (seed question 20, deep version).

Read it top to bottom beside the torch one: the same names in the same order, with the same
meanings. A Q-network `keras.Sequential`, a target network refreshed with `set_weights`, the TD
target with double DQN as one visible branch, the Huber loss (`keras.losses.huber`), and Adam
whose `global_clipnorm` is torch's `clip_grad_norm_`. The loop around the learner (acting, replay
buffer, epsilon schedule, evaluation, checkpoints) is `dllab.rl.common.train_loop`, shared with
the torch learner; the hyperparameters are `dllab.rl.common.DQNConfig`.

    from dllab.rl.dqn_keras import DQN, DQNConfig
    agent = DQN(DQNConfig(env_id="CartPole-v1"))     # rl-baselines3-zoo's CartPole hyperparameters
    result = agent.learn(seed=0)                      # result.eval_returns, .curve, .timings
    actions = agent.predict(observations)             # greedy actions

Keras has no backend-neutral "compute gradients" call, so `gradient_step` is written once per
backend, as in the Keras guides' custom training loops: `tf.GradientTape` on TensorFlow,
`loss.backward()` on torch (where a Keras model is a `torch.nn.Module`). On TensorFlow a phase's
gradient steps run as one `tf.function` graph loop: Python is entered once per phase, not per step.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from dllab.rl.common import DQNConfig, TrainResult, env_sizes, mlp_forward, train_loop, uniform_init

__all__ = ["DQN", "DQNConfig", "DQNLearner", "QNetwork", "build_q_network", "run", "train"]


class QNetwork(keras.Sequential):
    """An MLP from observations to one Q-value per action (ReLU between layers)."""

    def __init__(self, sizes: list[int]):
        layers: list = [keras.Input(shape=(sizes[0],))]
        for fan_out in sizes[1:-1]:
            layers += [keras.layers.Dense(fan_out, activation="relu")]
        layers.append(keras.layers.Dense(sizes[-1]))
        super().__init__(layers)


def build_q_network(sizes: list[int], weights: list[np.ndarray]) -> QNetwork:
    """A QNetwork holding `weights`: [W1, b1, ...] with W of shape (in, out), as `uniform_init`
    draws them for both frameworks (Dense kernels are (in, out) too)."""
    network = QNetwork(sizes)
    network.set_weights(weights)
    return network


def gradient_step(optimizer, compute_loss, variables):
    """Differentiate `compute_loss()` with respect to `variables` and apply the optimizer: the
    only backend-specific code of the DQN. Returns the loss."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = compute_loss()
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss
    import torch

    for variable in variables:
        variable.value.grad = None
    loss = compute_loss()
    loss.backward()
    with torch.no_grad():
        optimizer.apply([variable.value.grad for variable in variables], variables)
    return loss.detach()


class DQNLearner:
    """Online and target Q-networks, Adam, and the gradient steps of one training phase."""

    def __init__(self, config: DQNConfig, observation_size: int, n_actions: int, seed: int):
        backend = keras.backend.backend()
        if backend not in ("tensorflow", "torch"):
            raise ValueError(f"the Keras DQN runs on tensorflow or torch, not {backend}")
        self.config = config
        sizes = [observation_size, *config.hidden, n_actions]
        initial = uniform_init(np.random.default_rng([seed, 2]), sizes)
        self.online, self.target = build_q_network(sizes, initial), build_q_network(sizes, initial)
        self.optimizer = keras.optimizers.Adam(config.learning_rate, epsilon=1e-8,
                                               global_clipnorm=config.max_grad_norm)
        self.optimizer.build(self.online.trainable_variables)
        self._acting, self._target_stale = self.online_weights(), False
        if backend == "tensorflow":  # a phase's steps as one graph loop
            import tensorflow as tf

            self._gradient_steps = tf.function(self._gradient_steps)

    def online_weights(self) -> list[np.ndarray]:
        """The online network as numpy [W1, b1, ...] (W of shape (in, out)), for acting."""
        return self.online.get_weights()

    def acting_weights(self) -> list[np.ndarray]:
        return self._acting

    def update_target(self) -> None:
        if self._target_stale:  # the online weights change only in training phases
            self.target.set_weights(self.online.get_weights())
            self._target_stale = False

    def td_target(self, rewards, next_observations, terminated):
        """r + gamma * (1 - terminated) * Q_target(s', a'): a' is the target network's best action,
        or with double DQN the online network's (which the target network then values)."""
        next_q = self.target(next_observations)
        if self.config.double_dqn:
            next_actions = ops.argmax(self.online(next_observations), axis=1)[:, None]
        else:
            next_actions = ops.argmax(next_q, axis=1)[:, None]
        next_value = ops.take_along_axis(next_q, next_actions, axis=1)[:, 0]
        return ops.stop_gradient(rewards + self.config.gamma * (1 - terminated) * next_value)

    def train_step(self, observations, actions, target):
        """One gradient step on a minibatch: the Huber loss of Q(s, a) against the TD target, its
        gradient clipped to norm max_grad_norm; returns the loss."""
        def huber_loss():
            q = ops.take_along_axis(self.online(observations), actions[:, None], axis=1)[:, 0]
            return keras.losses.huber(target, q)

        return gradient_step(self.optimizer, huber_loss, self.online.trainable_variables)

    def train_phase(self, batch: dict[str, np.ndarray]) -> float:
        """Gradient steps on minibatches (arrays of shape (steps, batch, ...)), each against the
        TD target of the networks as they are; returns the mean Huber loss of the steps."""
        data = {name: ops.convert_to_tensor(array) for name, array in batch.items()}
        total = self._gradient_steps(data, ops.convert_to_tensor(len(batch["actions"])))
        self._acting, self._target_stale = self.online_weights(), True
        return float(total) / len(batch["actions"])

    def _gradient_steps(self, data, steps):
        """The phase's loop, as in the torch twin's `train_phase`; returns the sum of the losses
        (`steps` a tensor: under tf.function, `range(steps)` becomes one graph loop)."""
        total = ops.convert_to_tensor(0.0)
        for k in range(steps):
            target = self.td_target(data["rewards"][k], data["next_observations"][k],
                                    data["terminated"][k])
            total += self.train_step(data["observations"][k], data["actions"][k], target)
        return total

    def state(self) -> dict[str, np.ndarray]:
        """Weights of both networks and Adam's moments, as numpy arrays for a checkpoint."""
        from dllab.checkpoint import keras_optimizer_state

        arrays = {}
        for prefix, network in (("online/", self.online), ("target/", self.target)):
            arrays.update({prefix + str(k): v for k, v in enumerate(network.get_weights())})
        arrays.update(keras_optimizer_state(self.optimizer))
        arrays["target_stale"] = np.array(self._target_stale)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue from `state()`'s arrays exactly."""
        from dllab.checkpoint import load_keras_optimizer_state

        for prefix, network in (("online/", self.online), ("target/", self.target)):
            network.set_weights([arrays[prefix + str(k)] for k in range(len(network.weights))])
        load_keras_optimizer_state(self.optimizer, arrays)
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
    """Train one DQN with a Keras model on the current Keras backend."""
    learner = DQNLearner(config, *env_sizes(config.env_id), seed)
    return train_loop(config, learner, seed, **loop_options)


def run(ctx, *, engine: str = "reference", **params) -> dict[str, float]:
    """Scenario entry (Keras): this learner (the fast engine is torch only); see
    `dllab.rl.dqn_scenario.run_scenario` for the parameters."""
    from dllab.errors import UsageError
    from dllab.rl.dqn_scenario import run_scenario

    if engine != "reference":
        raise UsageError(f"{ctx.spec.id}: engine {engine!r} is torch only (--framework torch); "
                         "the Keras DQN has one engine, \"reference\"")
    return run_scenario(ctx, DQNLearner, **params)
