"""K CartPole-v1 environments stepped together as numpy arrays, bit for bit the K Gymnasium envs.

Batched DQN seeds (`dllab.rl.dqn_batched`) step K environments per env step. K Gymnasium envs cost
K Python calls (~8 us each on CartPole); the same physics on (K,) float64 arrays costs one set of
numpy operations for all K. Nothing else changes: the constants are read from Gymnasium's
CartPole, the update is its Euler step written in the same operation order, each environment
keeps its own generator (`gymnasium.utils.seeding.np_random(seed)`, what `reset(seed=seed)`
builds) for its resets, and the 500-step time limit truncates as `TimeLimit` does.
`tests/test_dqn.py` checks trajectories equal to K `gym.make("CartPole-v1")` envs.
"""

from __future__ import annotations

import numpy as np

ENV_ID = "CartPole-v1"


class CartPoleSideBySide:
    """`step(actions)` -> (observations float32 (K, 4), terminated (K,), truncated (K,)); rewards
    are 1.0 on every step. Call `reset(k)` for each env that ended before stepping again."""

    def __init__(self, seeds: list[int]):
        import gymnasium as gym
        from gymnasium.utils import seeding

        env = gym.make(ENV_ID)
        physics = env.unwrapped
        if physics.kinematics_integrator != "euler" or getattr(physics, "_sutton_barto_reward", False):
            raise ValueError("CartPoleSideBySide follows CartPole-v1's default Euler step and +1 rewards")
        for name in ["gravity", "masspole", "total_mass", "length", "polemass_length", "force_mag", "tau",
                     "theta_threshold_radians", "x_threshold"]:
            setattr(self, name, getattr(physics, name))
        self.limits = np.array([[self.x_threshold], [self.theta_threshold_radians]])
        self.max_episode_steps = env.spec.max_episode_steps
        env.close()
        self.rngs = [seeding.np_random(seed)[0] for seed in seeds]
        # state[:, k] = (x, x_dot, theta, theta_dot) of env k: each quantity is one contiguous row
        self.state = np.stack([rng.uniform(low=-0.05, high=0.05, size=(4,)) for rng in self.rngs], axis=1)
        self.elapsed = np.zeros(len(seeds), dtype=np.int64)

    def observations(self) -> np.ndarray:
        return self.state.T.astype(np.float32)

    def close(self) -> None:
        """Nothing to release (the interface of a Gymnasium env)."""

    def reset(self, k: int) -> np.ndarray:
        """Start env k's next episode from its own generator; returns its observation."""
        self.state[:, k] = self.rngs[k].uniform(low=-0.05, high=0.05, size=(4,))
        self.elapsed[k] = 0
        return self.state[:, k].astype(np.float32)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = self.state
        x, x_dot, theta, theta_dot = state
        force = np.where(np.asarray(actions) == 1, self.force_mag, -self.force_mag)
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + self.polemass_length * np.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x += self.tau * x_dot  # Euler, in place; each line reads the rates before they change
        x_dot += self.tau * xacc
        theta += self.tau * theta_dot
        theta_dot += self.tau * thetaacc
        terminated = (np.abs(state[0::2]) > self.limits).any(axis=0)  # |x| > 2.4 or |theta| > 12 degrees
        self.elapsed += 1
        return state.T.astype(np.float32), terminated, self.elapsed >= self.max_episode_steps
