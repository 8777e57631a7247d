"""DQN pieces cross-checked: the fast engine's hand-written backward pass against autograd, its
Adam update against torch.optim.Adam, the TD target's bootstrap rule, the buffer and schedule, the batched
seeds against separate runs, and an interrupted run resumed to the same result."""

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dllab.rl.common import (DEFAULT_CONFIGS, DQNConfig, ReplayBuffer, linear_schedule, mlp_forward,
                             train_config, uniform_init)
from dllab.rl.dqn_torch_fast import Adam, FastTorchLearner, QNetwork, huber_loss, train

SIZES = [4, 32, 16, 2]


def test_hand_written_gradient_equals_autograd():
    rng = np.random.default_rng(0)
    net = QNetwork(SIZES, uniform_init(rng, SIZES))
    x = torch.from_numpy(rng.standard_normal((64, 4)).astype(np.float32))
    actions = torch.from_numpy(rng.integers(0, 2, 64))
    targets = torch.from_numpy((rng.standard_normal(64) * 3).astype(np.float32))  # both Huber branches
    loss = huber_loss(net.huber_gradient(x, torch.nn.functional.one_hot(actions, 2).float(), targets))
    leaves = [w.detach().clone().requires_grad_(True) for w in net.weights]
    q = net.forward(x, leaves).gather(1, actions[:, None]).squeeze(1)
    reference = torch.nn.functional.smooth_l1_loss(q, targets)
    reference.backward()
    assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
    for grad, leaf in zip(net.grads, leaves):
        torch.testing.assert_close(grad, leaf.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "in-place-ops"])
def test_adam_equals_torch_optim_adam(fused):
    """Both code paths, on a list of two flat tensors (as the batched seeds use it)."""
    rng = np.random.default_rng(1)
    flats = [torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in (50, 7)]
    grads = [torch.zeros_like(flat) for flat in flats]
    mine = Adam(flats, grads, learning_rate=1e-2)
    if not fused:
        mine._fused = None
    references = [torch.nn.Parameter(flat.clone()) for flat in flats]
    optimizer = torch.optim.Adam(references, lr=1e-2, foreach=False)
    for _ in range(20):
        for grad, reference in zip(grads, references):
            g = torch.from_numpy(rng.standard_normal(len(grad)).astype(np.float32))
            grad.copy_(g)
            reference.grad = g.clone()
        mine.step()
        optimizer.step()
    for flat, reference in zip(flats, references):
        torch.testing.assert_close(flat, reference.detach(), rtol=1e-5, atol=1e-6)
    assert mine.steps == 20


def test_td_target_bootstraps_on_terminated_only():
    config = DQNConfig(hidden=(8,), gamma=0.5)
    learner = FastTorchLearner(config, 4, 2, seed=0)
    next_obs = torch.ones(1, 2, 4)
    max_q = float(learner.target.forward(next_obs[0]).max(1).values[0])
    targets = learner.td_targets(torch.ones(1, 2), next_obs, torch.tensor([[1.0, 0.0]]))
    assert float(targets[0, 0]) == 1.0  # terminated: the reward alone
    assert float(targets[0, 1]) == pytest.approx(1.0 + 0.5 * max_q)  # truncated or running: bootstrap


def test_double_dqn_picks_with_online_and_values_with_target():
    learner = FastTorchLearner(DQNConfig(hidden=(8,), double_dqn=True, gamma=1.0), 4, 2, seed=0)
    learner.target.flat.mul_(-1.0)  # make the two networks disagree
    next_obs = torch.randn(1, 16, 4)
    chosen = learner.online.forward(next_obs[0]).argmax(1)
    expected = learner.target.forward(next_obs[0]).gather(1, chosen[:, None]).squeeze(1)
    targets = learner.td_targets(torch.zeros(1, 16), next_obs, torch.zeros(1, 16))
    torch.testing.assert_close(targets[0], expected)


def test_numpy_acting_reads_the_trained_weights():
    learner = FastTorchLearner(DQNConfig(hidden=(16, 16)), 4, 2, seed=0)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    before = mlp_forward(learner.acting_weights(), x)
    rng = np.random.default_rng(3)
    batch = {"observations": rng.standard_normal((3, 8, 4)).astype(np.float32), "actions": rng.integers(0, 2, (3, 8)),
             "rewards": np.ones((3, 8), np.float32), "next_observations": rng.standard_normal((3, 8, 4)).astype(np.float32),
             "terminated": np.zeros((3, 8), np.float32)}
    learner.train_phase(batch)
    after = mlp_forward(learner.acting_weights(), x)
    np.testing.assert_allclose(after, learner.online.forward(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after)


def test_replay_buffer_wraps_around():
    buffer = ReplayBuffer(3, (2,))
    for i in range(5):
        buffer.add(np.full(2, i), i % 2, float(i), np.full(2, i + 1), i == 4)
    assert buffer.size == 3 and buffer.position == 2
    assert sorted(buffer.rewards.tolist()) == [2.0, 3.0, 4.0]
    batch = buffer.sample(np.random.default_rng(0), 4, 5)
    assert batch["observations"].shape == (4, 5, 2) and set(batch["rewards"].ravel()) <= {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(batch["next_observations"], batch["observations"] + 1)


def test_linear_schedule_matches_sb3():
    assert linear_schedule(1.0, 0.04, 0.16, 0, 50_000) == 1.0
    assert linear_schedule(1.0, 0.04, 0.16, 4000, 50_000) == pytest.approx(0.52)
    assert linear_schedule(1.0, 0.04, 0.16, 8000, 50_000) == 0.04
    assert linear_schedule(1.0, 0.04, 0.16, 40_000, 50_000) == 0.04


def test_bad_configuration_is_a_value_error():
    with pytest.raises(ValueError, match="exploration_fraction"):
        DQNConfig(exploration_fraction=0.0)
    with pytest.raises(ValueError, match="no 'zoo' DQN configuration"):
        train_config("Pong-v5", "zoo")


def test_same_seed_same_run_other_seed_other_run():
    config = replace(DEFAULT_CONFIGS["CartPole-v1"], total_steps=1600, learning_starts=500, train_freq=128,
                     gradient_steps=16, hidden=(16, 16), eval_episodes=3)
    first, again, other = train(config, 0), train(config, 0), train(config, 1)
    assert np.array_equal(first.eval_returns, again.eval_returns) and first.losses == again.losses
    assert first.losses != other.losses


def test_batched_seeds_follow_the_separate_runs():
    """Same initial weights and random streams: the first evaluations agree with separate runs
    (batched matmuls round differently, so later ones may drift apart)."""
    from dllab.rl.dqn_batched import train_batched

    config = replace(DEFAULT_CONFIGS["CartPole-v1"], total_steps=1400, learning_starts=1000, train_freq=200,
                     gradient_steps=8, hidden=(16, 16), eval_episodes=3, eval_interval=1000)
    batched = train_batched(config, [0, 1])
    for seed, result in zip([0, 1], batched.results):
        single = train(config, seed)
        assert result.curve[0][1] == single.curve[0][1]  # before training: identical policies
        assert abs(result.eval_returns.mean() - single.eval_returns.mean()) <= 0.2 * single.eval_returns.mean() + 5


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_batched_seeds_store_the_separate_runs_transitions(env_id, monkeypatch):
    """Before any gradient step, each seed's replay buffer in the batched run holds exactly the
    separate run's transitions: same env resets, actions, rewards, terminations (CartPole steps
    side by side in numpy, other envs as K Gymnasium envs; 600 steps pass Acrobot's time limit)."""
    from dllab.rl import common, dqn_batched

    buffers = []

    def recording(buffer_class):
        class Recording(buffer_class):
            def __init__(self, *args):
                super().__init__(*args)
                buffers.append(self)
        return Recording

    monkeypatch.setattr(common, "ReplayBuffer", recording(common.ReplayBuffer))
    monkeypatch.setattr(dqn_batched, "BatchedReplayBuffer", recording(dqn_batched.BatchedReplayBuffer))
    config = replace(train_config(env_id, "zoo"), total_steps=600, learning_starts=600, hidden=(8,),
                     buffer_size=1000, eval_episodes=1)
    dqn_batched.train_batched(config, [0, 1])
    batched = buffers.pop()
    for k, seed in enumerate([0, 1]):
        train(config, seed)
        single = buffers.pop()
        assert single.size == batched.size == 600
        for field in ["observations", "next_observations", "actions", "rewards", "terminated"]:
            np.testing.assert_array_equal(getattr(batched, field)[k], getattr(single, field))
    if env_id == "CartPole-v1":
        assert batched.terminated.sum() > 0  # episodes ended inside the 600 steps


def test_batched_gradient_is_each_seeds_clipped_autograd_gradient():
    """One batched step for 3 seeds equals, seed by seed, autograd's gradient of the mean Huber
    loss against the seed's own target network, then clip_grad_norm_ (with a bound between the
    seeds' gradient norms, so that one seed clips and another does not)."""
    from dllab.rl.dqn_batched import BatchedLearner

    rng = np.random.default_rng(3)
    config = replace(DEFAULT_CONFIGS["CartPole-v1"], hidden=(32, 16), batch_size=64)
    learner = BatchedLearner(config, SIZES, seeds=[0, 1, 2])
    for block in learner.target:  # target networks different from the online ones
        block.add_(torch.from_numpy(rng.normal(0, 0.1, block.shape).astype(np.float32)))
    count, batch = 3, config.batch_size
    observations = rng.standard_normal((count, batch, 4)).astype(np.float32)
    next_observations = rng.standard_normal((count, batch, 4)).astype(np.float32)
    actions = rng.integers(0, 2, (count, batch))
    rewards = (rng.standard_normal((count, batch)) * np.array([[0.1], [3.0], [30.0]])).astype(np.float32)
    terminated = (rng.random((count, batch)) < 0.2).astype(np.float32)
    online = [w.clone() for w in learner.online]
    target = [w.clone() for w in learner.target]
    discounts = torch.from_numpy((1 - terminated) * np.float32(config.gamma)).unsqueeze(2)
    expected = []
    for k in range(count):  # autograd on each seed's own networks
        leaves = [w[k].squeeze(0).clone().requires_grad_(True) for w in online]
        net = QNetwork(SIZES, [w.detach().numpy() for w in leaves])
        next_q = QNetwork(SIZES, [w[k].squeeze(0).numpy() for w in target]).forward(torch.from_numpy(next_observations[k]))
        td_target = torch.from_numpy(rewards[k]) + discounts[k, :, 0] * next_q.max(1).values
        q = net.forward(torch.from_numpy(observations[k]), leaves).gather(1, torch.from_numpy(actions[k])[:, None])
        torch.nn.functional.smooth_l1_loss(q.squeeze(1), td_target).backward()
        expected.append(leaves)
    norms = [float(torch.linalg.vector_norm(torch.cat([leaf.grad.reshape(-1) for leaf in leaves]))) for leaves in expected]
    learner.config = replace(config, max_grad_norm=float(np.median(norms)))  # one seed clips, one does not
    for leaves in expected:
        torch.nn.utils.clip_grad_norm_(leaves, learner.config.max_grad_norm)
    inputs = torch.from_numpy(np.concatenate([observations, next_observations]))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(actions), 2).float() / batch
    with torch.no_grad():
        learner.gradient_step(inputs, inputs[:count].transpose(1, 2).contiguous(), one_hot,
                              torch.from_numpy(rewards).unsqueeze(2), discounts)
    assert min(norms) < learner.config.max_grad_norm < max(norms)
    for k, leaves in enumerate(expected):
        for grad, leaf in zip(learner.grads, leaves):
            torch.testing.assert_close(grad[k].reshape(leaf.shape), leaf.grad, rtol=1e-4, atol=1e-6)


def test_cartpole_side_by_side_equals_gymnasium_envs():
    """Vectorized CartPole: the same observations, terminations, truncations and resets as one
    gym.make("CartPole-v1") per seed, bit for bit, over episodes ended both ways."""
    gym = pytest.importorskip("gymnasium")
    from dllab.rl.cartpole_side_by_side import CartPoleSideBySide

    seeds = [0, 7, 42]
    envs = [gym.make("CartPole-v1") for _ in seeds]
    expected = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)])
    together = CartPoleSideBySide(seeds)
    np.testing.assert_array_equal(together.observations(), expected)
    rng, endings = np.random.default_rng(0), {"terminated": 0, "truncated": 0}
    for step in range(4000):  # random actions, then a balancing rule that reaches the time limit
        actions = rng.integers(0, 2, len(seeds)) if step < 1000 else (together.state[2] + together.state[3] > 0).astype(int)
        observations, terminated, truncated = together.step(actions)
        for k, env in enumerate(envs):
            observation, reward, env_terminated, env_truncated, _ = env.step(int(actions[k]))
            np.testing.assert_array_equal(observations[k], observation)
            assert (terminated[k], truncated[k], reward) == (env_terminated, env_truncated, 1.0)
            if env_terminated or env_truncated:
                endings["terminated" if env_terminated else "truncated"] += 1
                np.testing.assert_array_equal(together.reset(k), env.reset()[0])
    assert min(endings.values()) > 0


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, engine):
    """Save at step 1200 (weights, Adam, buffer, RNG and env states), stop, restore into a fresh
    learner through dllab's checkpoint files, continue: the same losses and returns as one run."""
    from dllab import checkpoint as files
    from dllab.rl.common import train_loop
    from dllab.rl.dqn_scenario import checkpoint, restore
    from dllab.rl.dqn_torch import DQNLearner

    learner_class = {"reference": DQNLearner, "fast": FastTorchLearner}[engine]
    config = replace(DEFAULT_CONFIGS["CartPole-v1"], total_steps=2000, learning_starts=500, train_freq=100,
                     gradient_steps=8, hidden=(16, 16), eval_episodes=3, eval_interval=400)
    whole = train_loop(config, learner_class(config, 4, 2, seed=5), seed=5)

    class Stop(Exception):
        pass

    learner = learner_class(config, 4, 2, seed=5)

    def save(step, loop_state):
        files.save(tmp_path / "checkpoint", *checkpoint(learner, loop_state))
        raise Stop

    with pytest.raises(Stop):
        train_loop(config, learner, seed=5, checkpoint_every=1200, save=save)
    fresh = learner_class(config, 4, 2, seed=5)
    state = restore(fresh, *files.load(tmp_path / "checkpoint"))
    resumed = train_loop(config, fresh, seed=5, state=state)
    assert resumed.losses == whole.losses
    assert [p[:2] for p in resumed.curve] == [p[:2] for p in whole.curve]
    np.testing.assert_array_equal(resumed.eval_returns, whole.eval_returns)


def test_dqn_object_learns_and_predicts_greedy_actions():
    from dllab.rl.dqn_torch import DQN

    agent = DQN(replace(DEFAULT_CONFIGS["CartPole-v1"], total_steps=600, learning_starts=300, train_freq=100,
                        gradient_steps=4, hidden=(8,), eval_episodes=2))
    with pytest.raises(ValueError, match="learn"):
        agent.predict(np.zeros(4))
    agent.learn(seed=0)
    observations = np.random.default_rng(0).standard_normal((6, 4))
    q = agent.learner.online.forward(torch.from_numpy(observations.astype(np.float32)))
    np.testing.assert_array_equal(agent.predict(observations), q.argmax(1).numpy())
