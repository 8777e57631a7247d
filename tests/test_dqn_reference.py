"""The torch DQN reference against the fast engine (the same update on the same batch and weights,
in float64) and against its Keras twin (the same public names with the same meanings)."""

import inspect
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dllab.rl import dqn_torch, dqn_torch_fast
from dllab.rl.common import DQNConfig, mlp_forward, uniform_init

SIZES = [4, 32, 16, 2]
CONFIG = DQNConfig(hidden=(32, 16), gamma=0.9, learning_rate=1e-2, batch_size=64)


def one_batch(steps: int, dtype=np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    """Minibatches (steps, 64, ...) with rewards large enough for both branches of the Huber loss
    and some terminal transitions."""
    rng = np.random.default_rng(seed)
    shape = (steps, CONFIG.batch_size)
    return {"observations": rng.standard_normal((*shape, 4)).astype(dtype),
            "actions": rng.integers(0, 2, shape),
            "rewards": (3 * rng.standard_normal(shape)).astype(dtype),
            "next_observations": rng.standard_normal((*shape, 4)).astype(dtype),
            "terminated": (rng.random(shape) < 0.2).astype(dtype)}


def float64_learners(config: DQNConfig):
    """The reference learner and the fast engine, in float64, with the same online weights and
    the same target weights (different from the online ones, so that double DQN matters)."""
    rng = np.random.default_rng(7)
    online = [w.astype(np.float64) for w in uniform_init(rng, SIZES)]
    target = [w + rng.normal(0, 0.3, w.shape) for w in online]
    reference = dqn_torch.DQNLearner(config, 4, 2, seed=0)
    for network, weights in ((reference.online, online), (reference.target, target)):
        with torch.no_grad():  # .double() keeps the Parameter objects that Adam holds
            for parameter, array in zip(network.double().parameters(), weights):
                parameter.copy_(torch.from_numpy(array.T if array.ndim == 2 else array))
    fast = dqn_torch_fast.FastTorchLearner(config, 4, 2, seed=0)
    fast.online = dqn_torch_fast.QNetwork(SIZES, online)
    fast.target = dqn_torch_fast.QNetwork(SIZES, target)
    fast.optimizer = dqn_torch_fast.Adam(fast.online.flat, fast.online.grad, config.learning_rate)
    return reference, fast, online


def pre_clip_gradient_norm(reference, batch) -> float:
    """The unclipped gradient norm of the reference's loss on the batch (autograd)."""
    data = {name: torch.from_numpy(array[0]) for name, array in batch.items()}
    target = reference.td_target(data["rewards"], data["next_observations"], data["terminated"])
    q = reference.online(data["observations"]).gather(1, data["actions"].unsqueeze(1)).squeeze(1)
    gradients = torch.autograd.grad(torch.nn.functional.smooth_l1_loss(q, target),
                                    list(reference.online.parameters()))
    return float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in gradients])))


@pytest.mark.parametrize("double_dqn, max_grad_norm", [(False, 1e3), (True, 1e3), (True, 0.1)],
                         ids=["dqn", "double-dqn", "double-dqn-clipped"])
def test_reference_and_fast_engine_compute_the_same_update(double_dqn, max_grad_norm):
    """One gradient step (float64): the same loss, gradient (after clipping) and parameters after
    Adam, within 1e-12, whether or not the gradient is clipped."""
    config = replace(CONFIG, double_dqn=double_dqn, max_grad_norm=max_grad_norm)
    reference, fast, initial = float64_learners(config)
    batch = one_batch(steps=1)
    clipped = pre_clip_gradient_norm(reference, batch) > max_grad_norm
    assert clipped == (max_grad_norm < 1)  # the clipping branch is exercised in one case only
    reference_loss, fast_loss = reference.train_phase(batch), fast.train_phase(batch)
    assert abs(reference_loss - fast_loss) <= 1e-12 and reference_loss > 0.1
    for parameter, fast_gradient in zip(reference.online.parameters(), fast.online.grads):
        np.testing.assert_allclose(parameter.grad.numpy().T, fast_gradient.numpy(),
                                   rtol=0, atol=1e-12)
    after = reference.online_weights()
    for weight, fast_weight, start in zip(after, [w.numpy() for w in fast.online.weights], initial):
        np.testing.assert_allclose(weight, fast_weight, rtol=0, atol=1e-12)
        assert np.abs(weight - start).max() > 1e-3  # a real step, not two unchanged copies


def test_double_dqn_branch_changes_the_target():
    """The batch of the update test: double DQN's target (online picks, target values) differs
    from plain DQN's (target picks and values), so both cases above test different code."""
    batch = {name: torch.from_numpy(array[0]) for name, array in one_batch(steps=1).items()}
    targets = []
    for double_dqn in (False, True):
        reference, _, _ = float64_learners(replace(CONFIG, double_dqn=double_dqn))
        targets.append(reference.td_target(batch["rewards"], batch["next_observations"],
                                           batch["terminated"]))
    assert (targets[0] > targets[1] + 1e-6).any()  # the target net's max bounds any other choice
    assert torch.all(targets[0] >= targets[1] - 1e-12)


def public_surface(module) -> dict[str, object]:
    """Each name of `__all__`: a function's parameters, or a class's own public methods and their
    parameters (framework hooks such as `forward` and `call` left out)."""
    surface = {}
    for name in module.__all__:
        item = getattr(module, name)
        if inspect.isclass(item) and item.__module__ == module.__name__:
            methods = {key: list(inspect.signature(value).parameters)
                       for key, value in vars(item).items()
                       if callable(value) and (not key.startswith("_") or key == "__init__")
                       and key not in ("forward", "call")}
            surface[name] = ("class", methods)
        elif inspect.isclass(item):
            surface[name] = ("shared class", item)  # e.g. DQNConfig from dllab.rl.common
        else:
            surface[name] = ("function", list(inspect.signature(item).parameters))
    return surface


@pytest.fixture(scope="module")
def dqn_keras():
    pytest.importorskip("keras")
    from dllab.rl import dqn_keras

    return dqn_keras


def test_torch_and_keras_twins_expose_the_same_names(dqn_keras):
    assert dqn_torch.__all__ == dqn_keras.__all__
    assert public_surface(dqn_torch) == public_surface(dqn_keras)


def numpy_values(tensor) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(keras.ops.stop_gradient(tensor))


def test_twins_build_the_same_q_network(dqn_keras):
    """build_q_network: a network computing the Q-values of the given [W1, b1, ...]."""
    weights = uniform_init(np.random.default_rng(3), SIZES)
    x = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    torch_q = dqn_torch.build_q_network(SIZES, weights)(torch.from_numpy(x)).detach().numpy()
    keras_q = numpy_values(dqn_keras.build_q_network(SIZES, weights)(x))
    for q in (torch_q, keras_q):
        np.testing.assert_allclose(q, mlp_forward(weights, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("double_dqn", [False, True], ids=["dqn", "double-dqn"])
def test_twins_compute_the_same_td_target(dqn_keras, double_dqn):
    """td_target: r + gamma * (1 - terminated) * Q_target(s', a'), a' picked by the target
    network, or with double DQN by the online one (computed here in numpy)."""
    config = replace(CONFIG, double_dqn=double_dqn)
    online = uniform_init(np.random.default_rng(5), SIZES)
    target = uniform_init(np.random.default_rng(6), SIZES)
    batch = {name: array[0] for name, array in one_batch(steps=1, dtype=np.float32).items()}
    next_q = mlp_forward(target, batch["next_observations"])
    picks = mlp_forward(online if double_dqn else target, batch["next_observations"]).argmax(axis=1)
    next_value = next_q[np.arange(len(picks)), picks]
    expected = batch["rewards"] + config.gamma * (1 - batch["terminated"]) * next_value
    arrays = [batch["rewards"], batch["next_observations"], batch["terminated"]]
    twins = ((dqn_torch, torch.from_numpy), (dqn_keras, dqn_keras.ops.convert_to_tensor))
    for module, convert in twins:
        learner = module.DQNLearner(config, 4, 2, seed=0)
        learner.online = module.build_q_network(SIZES, online)
        learner.target = module.build_q_network(SIZES, target)
        targets = numpy_values(learner.td_target(*(convert(a) for a in arrays)))
        np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-5)


def test_train_phase_returns_the_mean_loss_of_its_steps(dqn_keras):
    """train_phase: the MEAN Huber loss of its steps, in all three learners (a learning rate of
    1e-12 keeps the weights put, so each step's loss is computed here in numpy)."""
    config = replace(CONFIG, learning_rate=1e-12, max_grad_norm=1e3)
    learners = [learner_class(config, 4, 2, seed=0) for learner_class in
                (dqn_torch.DQNLearner, dqn_torch_fast.FastTorchLearner, dqn_keras.DQNLearner)]
    weights, batch = learners[0].acting_weights(), one_batch(steps=3, dtype=np.float32)
    losses = []
    for k in range(3):
        next_q = mlp_forward(weights, batch["next_observations"][k]).max(axis=1)
        target = batch["rewards"][k] + config.gamma * (1 - batch["terminated"][k]) * next_q
        q_values = mlp_forward(weights, batch["observations"][k])
        q = q_values[np.arange(config.batch_size), batch["actions"][k]]
        error = np.abs(q - target)
        losses.append(np.where(error < 1, 0.5 * error ** 2, error - 0.5).mean())
    assert abs(losses[-1] - np.mean(losses)) > 0.01  # far beyond the tolerance: not the last loss
    for learner in learners:
        assert learner.train_phase(batch) == pytest.approx(np.mean(losses), rel=1e-5)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_state_round_trip_continues_exactly(framework, request):
    """state() into a fresh learner: the next phase gives the same loss and weights."""
    module = dqn_torch if framework == "torch" else request.getfixturevalue("dqn_keras")
    first, batch = module.DQNLearner(CONFIG, 4, 2, seed=1), one_batch(steps=2, dtype=np.float32)
    first.train_phase(batch)
    second = module.DQNLearner(CONFIG, 4, 2, seed=2)
    second.load_state({name: np.array(value) for name, value in first.state().items()})
    assert first.train_phase(batch) == second.train_phase(batch)
    for a, b in zip(first.acting_weights(), second.acting_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_entry_refuses_the_fast_engine(dqn_keras):
    from types import SimpleNamespace

    from dllab.errors import UsageError

    ctx = SimpleNamespace(spec=SimpleNamespace(id="rl/dqn-cartpole"))
    with pytest.raises(UsageError, match="engine 'fast' is torch only"):
        dqn_keras.run(ctx, engine="fast", env_id="CartPole-v1")
