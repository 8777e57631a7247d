"""The RL scenarios' negative controls inject exactly their mistake: the fault branches of the
tabular update and of the DQN loop, and learning rate 0, checked on small runs."""

import gymnasium as gym
import numpy as np
import pytest

from dllab.rl.common import DQNConfig, train_loop
from dllab.rl.tabular import train_q_learning


def _cliff():
    return gym.make("CliffWalking-v1", max_episode_steps=100)


def test_learning_rate_zero_leaves_the_table_at_zero():
    q = train_q_learning(_cliff(), 20, 0.99, 0.0, 0.0, 1.0, 0.01, 0.8, np.random.default_rng(0), seed=0)
    assert not q.any()


def test_reward_only_target_learns_the_immediate_reward():
    """Without the bootstrap term every entry moves toward r(s, a) alone: on CliffWalking each
    value lies between the cliff's -100 and a step's -1; the correct update goes below -1 where
    the goal is more than one step away."""
    args = (200, 0.99, 0.5, 0.05, 1.0, 0.01, 0.8)
    faulty = train_q_learning(_cliff(), *args, np.random.default_rng(0), seed=0, fault="reward-only-target")
    correct = train_q_learning(_cliff(), *args, np.random.default_rng(0), seed=0)
    steps = faulty[faulty > -2.0]
    assert steps.size and steps.min() >= -1.0 - 1e-12 and faulty.min() >= -100.0
    assert correct.min() < -100.0 or correct[correct > -50].min() < -1.5


def test_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="fault must be one of"):
        train_q_learning(_cliff(), 1, 0.99, 0.5, 0.05, 1.0, 0.01, 0.8, np.random.default_rng(0), seed=0,
                         fault="typo")


class _RecordingLearner:
    """A learner that trains nothing and records how many sampled transitions are terminal."""

    def __init__(self):
        self.terminal = 0

    def acting_weights(self):
        rng = np.random.default_rng(0)
        return [rng.standard_normal((4, 2)).astype(np.float32), np.zeros(2, np.float32)]

    def train_phase(self, batch):
        self.terminal += int(batch["terminated"].sum())
        return 0.0

    def update_target(self):
        pass


@pytest.mark.parametrize("fault", ["none", "bootstrap-terminal"])
def test_bootstrap_terminal_stores_no_terminal_transition(fault):
    """CartPole ends by termination every few dozen steps at random: the correct loop samples
    terminal transitions, the seed's formula (fault) none."""
    config = DQNConfig(total_steps=600, learning_starts=100, train_freq=100, gradient_steps=4,
                       batch_size=64, eval_episodes=1, hidden=(2,))
    learner = _RecordingLearner()
    train_loop(config, learner, seed=0, fault=fault)
    assert (learner.terminal > 0) == (fault == "none")
