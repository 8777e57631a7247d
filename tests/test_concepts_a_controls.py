"""The measurements that replaced fixed values in the framework-mechanics scenarios: each is
shown to give the other answer when the concept is broken, directly on the helper functions."""

import numpy as np
import pytest


def test_eager_probe_reads_values_only_without_capture():
    torch = pytest.importorskip("torch")
    import torch.fx

    from dllab.concepts.framework_performance_worker import reads_value_during_call

    read = lambda t: None if isinstance(t, torch.fx.Proxy) else t.tolist()  # noqa: E731
    assert reads_value_during_call(None, torch.ones(2), read)
    assert not reads_value_during_call(torch.fx.symbolic_trace, torch.ones(2), read)


def test_loss_gaps_refuse_a_different_number_of_steps():
    from dllab.concepts.framework_performance import loss_gaps

    reference = np.array([2.0, 1.5, 1.0])
    gaps = loss_gaps({"same": {"losses": [2.0, 1.5, 1.0]}, "short": {"losses": [2.0, 1.5]},
                      "off": {"losses": [2.0, 1.5, 1.2]}}, reference)
    assert gaps == {"same": 0.0, "short": float("inf"), "off": pytest.approx(0.1)}


def test_implementations_filter_keeps_only_the_named_framework():
    from dllab.concepts.framework_performance import available

    assert all(label == "torch" for label in available("all", "torch"))
    assert all(label.startswith("keras_") for label in available("all", "keras"))


def test_torch_graph_reading_and_default_mode_follow_the_mode():
    torch = pytest.importorskip("torch")
    from dllab.concepts import graph_modes_torch as modes

    inputs = torch.ones(2, 3)
    assert modes.measure_default_mode(inputs.numpy(), "none") == {
        "eager_by_default": 1.0, "intermediate_value_readable_eager": 1.0, "python_body_runs_eager": 3}
    assert modes.measure_default_mode(inputs.numpy(), "deferred-default") == {
        "eager_by_default": 0.0, "intermediate_value_readable_eager": 0.0, "python_body_runs_eager": 0}
    graph = modes.measure_graph_reading(inputs, "eager", "none")
    assert graph == {"intermediate_value_readable_graph": 0.0, "python_body_runs_graph": 1}
    assert modes.measure_graph_reading(inputs, "eager", "graph-breaks-allowed")[
        "intermediate_value_readable_graph"] == 1.0


def test_no_grad_saves_no_tensor_for_backward():
    torch = pytest.importorskip("torch")
    from dllab.concepts.autograd import measure_no_grad

    weights = torch.ones(3, dtype=torch.float64, requires_grad=True)
    inputs = torch.ones(4, 3, dtype=torch.float64)
    assert measure_no_grad(weights, inputs, 0.1, "none") == {
        "no_grad_output_has_grad_fn": 0.0, "no_grad_backward_failed": 1.0, "no_grad_saved_tensors": 0}
    missing = measure_no_grad(weights, inputs, 0.1, "no-grad-missing")
    assert missing["no_grad_saved_tensors"] >= 1 and missing["no_grad_backward_failed"] == 0


def test_merge_refusal_is_the_concatenate_one():
    pytest.importorskip("keras")
    from dllab.concepts.keras_model_apis import measure_sequential_merge

    assert measure_sequential_merge(12, "none") == {"sequential_merge_failed": 1.0}
    assert measure_sequential_merge(12, "refused-for-another-reason") == {"sequential_merge_failed": 0.0}
