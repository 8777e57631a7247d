"""Deep Q-learning (DQN) with a Keras 3 model, on KERAS_BACKEND=tensorflow or torch.

The same algorithm as `dllab.rl.dqn_torch` (the loop is `dllab.rl.common.train_loop`): a
`keras.Sequential` MLP started from the same initial law as the torch one, Adam with global-norm
clipping (`global_clipnorm`, torch's `clip_grad_norm_`), `keras.losses.Huber`. Only the gradient
step depends on the backend, as in the Keras guides' custom training loops:

- TensorFlow: `tf.GradientTape` inside a `tf.function` that runs the phase's gradient steps as one
  graph loop (`tf.range`), so Python is entered once per phase, not once per step;
- torch: `loss.backward()` on the Keras model (a `torch.nn.Module` under this backend), then
  `optimizer.apply(gradients, variables)`.

Acting uses a numpy copy of the weights refreshed after each training phase.
"""

from __future__ import annotations

import numpy as np

from dllab.rl.common import DQNConfig, TrainResult, env_sizes, train_loop, uniform_init

__all__ = ["KerasLearner", "build_q_network", "train", "run"]


def build_q_network(sizes: list[int], weights: list[np.ndarray]):
    import keras

    layers = [keras.Input(shape=(sizes[0],))]
    layers += [keras.layers.Dense(width, activation="relu") for width in sizes[1:-1]]
    layers += [keras.layers.Dense(sizes[-1])]
    model = keras.Sequential(layers)
    model.set_weights(weights)  # Dense kernels are (in, out), like uniform_init's
    return model


class KerasLearner:
    """Online and target Keras models, Adam, and the backend's gradient steps of a phase."""

    def __init__(self, config: DQNConfig, observation_size: int, n_actions: int, seed: int):
        import keras

        self.config, self.n_actions = config, n_actions
        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "torch"):
            raise ValueError(f"the Keras DQN runs on the tensorflow or torch backend, not {self.backend!r}")
        sizes = [observation_size, *config.hidden, n_actions]
        initial = uniform_init(np.random.default_rng([seed, 2]), sizes)
        self.online, self.target = build_q_network(sizes, initial), build_q_network(sizes, initial)
        self.optimizer = keras.optimizers.Adam(config.learning_rate, epsilon=1e-8,
                                               global_clipnorm=config.max_grad_norm)
        self.optimizer.build(self.online.trainable_variables)
        self.huber = keras.losses.Huber(delta=1.0)
        self._acting, self._target_stale = self.online.get_weights(), False
        self._phase = self._tensorflow_phase() if self.backend == "tensorflow" else self._torch_phase

    def acting_weights(self) -> list[np.ndarray]:
        return self._acting

    def update_target(self) -> None:
        if self._target_stale:  # the online weights change only in training phases
            self.target.set_weights(self._acting)
            self._target_stale = False

    def q_values(self, model, x: np.ndarray) -> np.ndarray:
        from keras import ops

        return ops.convert_to_numpy(model(x, training=False))

    def td_targets(self, rewards, next_observations, terminated) -> np.ndarray:
        """r + gamma * (1 - terminated) * max_a' Q_target(s', a'), all rows in one forward pass."""
        next_flat = next_observations.reshape(-1, next_observations.shape[-1])
        next_value = self.q_values(self.target, next_flat).max(axis=1).reshape(rewards.shape)
        return rewards + self.config.gamma * (1 - terminated) * next_value

    def train_phase(self, batch: dict[str, np.ndarray]) -> float:
        """Gradient steps on minibatches (steps, batch, ...); returns the mean Huber loss."""
        one_hot = np.eye(self.n_actions, dtype=np.float32)[batch["actions"]]
        if self.config.double_dqn:  # the online net picks the next action: step by step
            losses = []
            for k in range(len(one_hot)):
                next_q = self.q_values(self.target, batch["next_observations"][k])
                chosen = self.q_values(self.online, batch["next_observations"][k]).argmax(axis=1)
                value = next_q[np.arange(len(chosen)), chosen]
                target = batch["rewards"][k] + self.config.gamma * (1 - batch["terminated"][k]) * value
                losses.append(self._phase(batch["observations"][k:k + 1], one_hot[k:k + 1],
                                          target[None].astype(np.float32)))
            loss = float(np.mean(losses))
        else:  # the target net is fixed during the phase
            targets = self.td_targets(batch["rewards"], batch["next_observations"], batch["terminated"])
            loss = self._phase(batch["observations"], one_hot, targets.astype(np.float32))
        self._acting, self._target_stale = self.online.get_weights(), True
        return loss

    def _tensorflow_phase(self):
        import tensorflow as tf

        model, optimizer, huber = self.online, self.optimizer, self.huber

        @tf.function
        def phase(observations, one_hot, targets):
            total = tf.constant(0.0)
            for k in tf.range(tf.shape(observations)[0]):
                with tf.GradientTape() as tape:
                    q = tf.reduce_sum(model(observations[k], training=True) * one_hot[k], axis=1)
                    loss = huber(targets[k], q)
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))
                total += loss
            return total / tf.cast(tf.shape(observations)[0], tf.float32)

        return lambda *arrays: float(phase(*arrays))

    def _torch_phase(self, observations, one_hot, targets) -> float:
        import torch

        variables = self.online.trainable_variables
        observations, one_hot, targets = (torch.from_numpy(a) for a in (observations, one_hot, targets))
        total = 0.0
        for k in range(len(observations)):
            q = (self.online(observations[k], training=True) * one_hot[k]).sum(dim=1)
            loss = self.huber(targets[k], q)
            self.online.zero_grad()
            loss.backward()
            with torch.no_grad():
                self.optimizer.apply([v.value.grad for v in variables], variables)
            total += float(loss.detach())
        return total / len(observations)

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"online/{i}": w for i, w in enumerate(self.online.get_weights())}
        arrays.update({f"target/{i}": w for i, w in enumerate(self.target.get_weights())})
        arrays.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(self.optimizer.variables)})
        arrays["target_stale"] = np.array(self._target_stale)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        count = len(self.online.get_weights())
        self.online.set_weights([arrays[f"online/{i}"] for i in range(count)])
        self.target.set_weights([arrays[f"target/{i}"] for i in range(count)])
        for i, variable in enumerate(self.optimizer.variables):
            variable.assign(arrays[f"optimizer/{i}"])
        self._acting, self._target_stale = self.online.get_weights(), bool(arrays["target_stale"])


def train(config: DQNConfig, seed: int = 0, **loop_options) -> TrainResult:
    """Train one DQN with a Keras model on the current Keras backend."""
    learner = KerasLearner(config, *env_sizes(config.env_id), seed)
    return train_loop(config, learner, seed, **loop_options)


def run(ctx, **params) -> dict[str, float]:
    """Scenario entry (Keras): see `dllab.rl.dqn_scenario.run_scenario` for the parameters."""
    from dllab.rl.dqn_scenario import run_scenario

    return run_scenario(ctx, KerasLearner, **params)
