"""Tabular RL, cross-checked: exact DP values against Monte Carlo roll-outs of the same policy,
value iteration against the Bellman optimality equation, Q-learning against value iteration."""

import gymnasium as gym
import numpy as np
import pytest

from dllab.rl.tabular import (evaluate_policy, finite_horizon_optimum, rollout_returns, tabular_model,
                              train_q_learning, value_iteration)


@pytest.fixture(scope="module")
def lake():
    env = gym.make("FrozenLake-v1")
    return env, tabular_model(env)


def test_value_iteration_satisfies_bellman_optimality(lake):
    _, model = lake
    q, policy = value_iteration(model, gamma=0.95)
    values = q.max(axis=1)
    backup = (model.reward + 0.95 * model.transition @ values).max(axis=1)
    np.testing.assert_allclose(values, backup, atol=1e-8)
    assert policy.shape == (model.n_states,)


def test_exact_policy_value_matches_monte_carlo(lake):
    """DP evaluation and 20,000 Gymnasium roll-outs agree within 4 standard errors."""
    env, model = lake
    _, policy = value_iteration(model, gamma=0.99)
    exact = evaluate_policy(model, policy, horizon=100)
    returns = rollout_returns(env, policy, 20_000, seed=123)
    stderr = returns.std(ddof=1) / np.sqrt(len(returns))
    assert abs(returns.mean() - exact) < 4 * stderr


def test_horizon_optimum_bounds_every_stationary_policy(lake):
    _, model = lake
    best = finite_horizon_optimum(model, 100)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert evaluate_policy(model, rng.integers(4, size=model.n_states), 100) <= best + 1e-12
    _, policy = value_iteration(model, gamma=0.99)
    assert evaluate_policy(model, policy, 100) <= best + 1e-12
    assert evaluate_policy(model, None, 100) < 0.1 * best  # the random floor is far below


def test_random_policy_value_matches_monte_carlo(lake):
    env, model = lake
    exact = evaluate_policy(model, None, 100)
    env.action_space.seed(0)
    total, episodes = 0.0, 20_000
    for episode in range(episodes):
        env.reset(seed=episode)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
    stderr = np.sqrt(exact * (1 - exact) / episodes)
    assert abs(total / episodes - exact) < 4 * stderr


def test_q_learning_reaches_the_optimal_cliff_path():
    env = gym.make("CliffWalking-v1", max_episode_steps=100)
    model = tabular_model(env)
    q = train_q_learning(env, 400, 0.99, 0.5, 0.05, 1.0, 0.01, 0.8, np.random.default_rng(1), seed=1)
    _, optimal = value_iteration(model, 0.99)
    assert evaluate_policy(model, q.argmax(axis=1), 100) == evaluate_policy(model, optimal, 100) == -13


def test_same_seed_same_q_other_seed_other_q():
    def train(seed):
        env = gym.make("FrozenLake-v1")
        return train_q_learning(env, 300, 0.99, 0.2, 0.02, 1.0, 0.05, 0.8, np.random.default_rng(seed), seed)
    assert np.array_equal(train(3), train(3))
    assert not np.array_equal(train(3), train(4))
