"""Cross-checks of the framework-mechanics scenarios beyond the matrix: each check is shown to
fail on a deliberately wrong input, the references are checked against other references, and the
modules import only their own framework."""

import math
import subprocess
import sys

import numpy as np
import pytest

from dllab.concepts.dropout import dropout_statistics


def _fake_dropout(rate, scale_survivors=True, same_mask_in_backward=True, seed=0, units=20_000):
    """A numpy dropout with switchable mistakes, to show the statistics catch each one."""
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(0.5, 1.5, size=units).astype(np.float32)
    upstream = rng.normal(size=units).astype(np.float32)
    keep = rng.random(units) >= rate
    scale = 1 / (1 - rate) if scale_survivors else 1.0
    output = inputs * keep * scale
    backward_keep = keep if same_mask_in_backward else rng.random(units) >= rate
    gradient = upstream * backward_keep * scale
    second = inputs * (rng.random(units) >= rate) * scale
    return dropout_statistics(inputs, upstream, rate, output, gradient, second, inputs.copy())


def test_dropout_statistics_accept_a_correct_dropout():
    figures = _fake_dropout(0.3)
    assert figures["mask_rate_z"] < 4.5 and figures["expectation_z"] < 4.5
    assert figures["gradient_where_dropped_max_abs"] == 0
    assert figures["kept_scale_relative_error"] < 1e-6


def test_dropout_statistics_catch_missing_scaling_and_a_different_backward_mask():
    assert _fake_dropout(0.3, scale_survivors=False)["expectation_z"] > 20
    assert _fake_dropout(0.3, scale_survivors=False)["kept_scale_relative_error"] > 0.2
    assert _fake_dropout(0.3, same_mask_in_backward=False)["gradient_where_dropped_max_abs"] > 0.1


def test_pseudo_huber_formula_matches_numpy_finite_differences():
    pytest.importorskip("keras")
    from dllab.concepts.custom_loss_layer import pseudo_huber_gradient

    rng = np.random.default_rng(1)
    targets, predictions, delta, step = rng.normal(size=20), rng.normal(scale=3, size=20), 0.7, 1e-6
    loss = lambda p: np.mean(delta**2 * (np.sqrt(1 + ((p - targets) / delta) ** 2) - 1))
    finite = np.array([(loss(predictions + step * e) - loss(predictions - step * e)) / (2 * step)
                       for e in np.eye(20)])
    np.testing.assert_allclose(pseudo_huber_gradient(targets, predictions, delta), finite, atol=1e-9)


def test_gradcheck_rejects_a_wrong_custom_backward():
    torch = pytest.importorskip("torch")
    from dllab.concepts.autograd import SmoothReLU

    class WrongBackward(SmoothReLU):
        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output * torch.sigmoid(x) * 1.01

    point = torch.randn(10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SmoothReLU.apply, (point,), eps=1e-6, atol=1e-7)
    assert not torch.autograd.gradcheck(WrongBackward.apply, (point,), eps=1e-6, atol=1e-7, raise_exception=False)


def test_torch_hessian_matches_finite_differences_of_the_gradient():
    pytest.importorskip("torch")
    from dllab.concepts.autograd import mlp_loss_derivatives

    rng = np.random.default_rng(2)
    weights, inputs, targets = rng.normal(size=10), rng.normal(size=(16, 4)), np.sign(rng.normal(size=16))
    _, gradient, hessian = mlp_loss_derivatives(weights, inputs, targets, hidden=2)
    step = 1e-6
    columns = [(mlp_loss_derivatives(weights + step * e, inputs, targets, 2)[1]
                - mlp_loss_derivatives(weights - step * e, inputs, targets, 2)[1]) / (2 * step) for e in np.eye(10)]
    np.testing.assert_allclose(hessian, np.array(columns).T, atol=1e-7)
    assert np.linalg.norm(gradient) > 1e-3


def test_tf_and_torch_parity_detects_a_different_function():
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from dllab.concepts import autograd, gradient_tape

    rng = np.random.default_rng(3)
    weights, inputs, targets = rng.normal(size=15), rng.normal(size=(8, 4)), np.sign(rng.normal(size=8))
    tf_figures = gradient_tape.mlp_loss_derivatives(weights, inputs, targets, hidden=3)
    torch_figures = autograd.mlp_loss_derivatives(weights, inputs, targets, hidden=3)
    for tf_value, torch_value in zip(tf_figures, torch_figures):
        np.testing.assert_allclose(tf_value, torch_value, atol=1e-12)
    flipped = autograd.mlp_loss_derivatives(weights, inputs, -targets, hidden=3)
    assert np.max(np.abs(flipped[1] - tf_figures[1])) > 1e-3


def test_gradient_tape_skips_parity_without_torch(run_scenario, monkeypatch):
    pytest.importorskip("tensorflow")
    monkeypatch.setitem(sys.modules, "dllab.concepts.autograd", None)  # import now raises ImportError
    result = run_scenario("concepts/gradient-tape")
    assert result.status == "ok", result.error
    for name in ("parity_loss_abs_diff", "parity_gradient_max_abs", "parity_hessian_max_abs"):
        assert result.expect[name]["ok"] is None and "PyTorch is not installed" in result.expect[name]["skipped"]
    assert result.expect["tape_vs_analytic_max_abs"]["ok"] is True


def test_hand_written_torch_optimizers_follow_numpy_on_a_quadratic():
    torch = pytest.importorskip("torch")
    from dllab.concepts.optimizers_torch import MomentumSGD, warmup_cosine

    curvature = np.array([1.0, 3.0, 0.5])
    parameter = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = MomentumSGD([parameter], lr=0.1, momentum=0.9)
    weights, velocity = np.ones(3), np.zeros(3)
    for step in range(30):
        optimizer.zero_grad()
        (0.5 * (torch.tensor(curvature) * parameter**2).sum()).backward()
        optimizer.step()
        velocity = 0.9 * velocity + curvature * weights if step else curvature * weights
        weights = weights - 0.1 * velocity
    np.testing.assert_allclose(parameter.detach().numpy(), weights, atol=1e-14)
    assert warmup_cosine(0, 1.0, 5, 50) == 0 and warmup_cosine(5, 1.0, 5, 50) == 1
    assert math.isclose(warmup_cosine(50, 1.0, 5, 50), 0, abs_tol=1e-15)


def test_python_list_hides_layers_from_parameters():
    pytest.importorskip("torch")
    from dllab.concepts.nn_module import StackWithModuleList, StackWithPythonList, parameter_count

    sizes = [3, 5, 4, 2]
    hidden = 3 * 5 + 5 + 5 * 4 + 4
    assert parameter_count([StackWithPythonList(sizes)]) == 4 * 2 + 2
    assert parameter_count([StackWithModuleList(sizes)]) == hidden + 4 * 2 + 2


def test_estimator_status_follows_the_version():
    tf = pytest.importorskip("tensorflow")
    from dllab.concepts.estimators import estimator_status

    present, expected = estimator_status()
    assert expected == (tuple(int(p) for p in tf.__version__.split(".")[:2]) < (2, 16))
    assert present == expected


@pytest.mark.parametrize("blocked, modules", [
    ("tensorflow", ["autograd", "nn_module", "dropout", "optimizers_torch"]),
    ("torch", ["gradient_tape", "tf1_session", "estimators", "dropout"]),
])
def test_modules_import_without_the_other_framework(blocked, modules):
    """A torch-only install can import the torch scenarios' modules, and a TF-only one the TF ones."""
    pytest.importorskip("torch" if blocked == "tensorflow" else "tensorflow")
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            + "".join(f"import dllab.concepts.{name}\n" for name in modules)
            + f"assert sys.modules[{blocked!r}] is None")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_importing_the_concepts_package_imports_no_framework():
    code = ("import sys, dllab, dllab.concepts\n"
            "loaded = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]\n"
            "assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
