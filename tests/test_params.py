"""The parameter schema: parsing scenario files, `--set` values, ranges, and the run's inputs."""

import math
from pathlib import Path

import pytest

from dllab import registry
from dllab.errors import ScenarioFileError, UsageError
from dllab.params import parse_param
from dllab.runner import apply_overrides, check_seed, resolve_params, resolve_threads

BASE = {"id": "x/y", "title": "t", "frameworks": ["numpy"], "entry": "m:f"}


def spec(**extra):
    return registry.parse_spec({**BASE, **extra}, Path("x.toml"))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "-1e-3", "2"])
def test_learning_rate_outside_its_range_is_refused(text):
    scenario = spec(params={"learning_rate": {"default": 0.1, "exclusive_min": 0.0, "max": 1.0}})
    with pytest.raises(UsageError, match=r"--set learning_rate: .*allowed: a finite number in \(0, 1\]"):
        apply_overrides(scenario, scenario.params, [f"learning_rate={text}"])


def test_values_inside_the_range_are_parsed_to_the_schema_type():
    scenario = spec(params={"episodes": {"default": 10, "min": 1, "max": 100},
                            "rate": {"default": 0.5, "min": 0.0, "max": 1.0},
                            "hidden": {"default": [4, 4], "min": 1, "max": 64, "max_length": 3}})
    params = apply_overrides(scenario, scenario.params, ["episodes=100", "rate=1", "hidden=[1, 64]"])
    assert params == {"episodes": 100, "rate": 1.0, "hidden": [1, 64]}
    assert isinstance(params["rate"], float)


@pytest.mark.parametrize("item, message", [
    ("episodes=0", "below the minimum"), ("episodes=10**12", "expected an integer"),
    ("episodes=1000000000000", "above the maximum"), ("episodes=1.5", "expected an integer"),
    ("hidden=[1, 65]", "above the maximum"), ("hidden=[1, 2, 3, 4]", "longer than 3"),
    ("hidden=[1.5]", "list of integers"), ("hidden={}", "expected a JSON list"),
    ("hidden=[[[[[]]]]]", "list of integers"), ("hidden=" + "[" * 100000, "expected a JSON list"),
    ("optimizer=rmsprop", "not one of the choices"), ("epsiodes=3", "did you mean 'episodes'"),
])
def test_bad_values_name_the_key_the_value_and_the_allowed_range(item, message):
    scenario = spec(params={"episodes": {"default": 10, "min": 1, "max": 100},
                            "hidden": {"default": [4, 4], "min": 1, "max": 64, "max_length": 3},
                            "optimizer": {"default": "adam", "choices": ["adam", "sgd"]}})
    with pytest.raises(UsageError, match=message):
        apply_overrides(scenario, scenario.params, [item])


@pytest.mark.parametrize("table, message", [
    ({"default": 0, "min": 1, "max": 5}, "default is not allowed"),
    ({"default": "a", "min": 1, "max": 5}, "limits apply to numbers"),
    ({"min": 1}, "missing required field 'default'"),
    ({"default": 1, "mni": 1}, "unknown field 'mni'"),
    ({"default": 1, "min": float("nan"), "max": 2}, "finite number"),
    ({"default": "x", "choices": []}, "non-empty list"),
    ({"default": "x", "kind": "anything"}, "field 'kind'"),
])
def test_malformed_schema_entries_name_the_file_and_field(table, message):
    with pytest.raises(ScenarioFileError, match=message):
        spec(params={"key": table})


def test_quick_and_control_values_are_checked_when_the_file_is_read():
    params = {"episodes": {"default": 10, "min": 1, "max": 100}}
    with pytest.raises(ScenarioFileError, match="quick.episodes"):
        spec(params=params, quick={"episodes": 0})
    with pytest.raises(ScenarioFileError, match=r"controls\[0\].*set.episodes"):
        spec(params=params, expect={"m": ">= 1"},
             controls=[{"name": "c", "mistake": "m", "set": {"episodes": -5}, "breaks": ["m"]}])


def test_gymnasium_ids_refuse_module_prefixes_and_unregistered_ids():
    pytest.importorskip("gymnasium")
    scenario = spec(params={"env_id": {"default": "CartPole-v1", "kind": "gymnasium-id"}})
    with pytest.raises(UsageError, match="not a Gymnasium id"):
        apply_overrides(scenario, scenario.params, ["env_id=os:System-v0"])
    with pytest.raises(UsageError, match="not registered"):
        resolve_params(scenario, False, ["env_id=NoSuchEnv-v9"])
    assert resolve_params(scenario, False, ["env_id=Acrobot-v1"])["env_id"] == "Acrobot-v1"


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.0])
def test_seed_outside_the_generators_range_is_refused(seed):
    with pytest.raises(UsageError, match=r"--seed .* must be an integer in \[0, 4294967295\]"):
        check_seed(seed)


@pytest.mark.parametrize("threads, env", [(0, None), (100000, None), (None, "abc"), (None, "0")])
def test_thread_counts_are_validated(threads, env, monkeypatch):
    if env is None:
        monkeypatch.delenv("DLLAB_THREADS", raising=False)
    else:
        monkeypatch.setenv("DLLAB_THREADS", env)
    with pytest.raises(UsageError, match="must be an integer in"):
        resolve_threads(threads)


def test_every_numeric_parameter_of_every_scenario_has_a_range():
    """The schema refuses nonsense only where a range exists: every number needs one."""
    unbounded = [f"{s.id}: {name}" for s in registry.load_all().values()
                 for name, param in s.schema.items() if param.numeric and not param.bounded]
    assert not unbounded, "numeric parameters without min and max:\n" + "\n".join(unbounded)


def test_an_infinite_or_nan_metric_fails_every_bound():
    for text in (">= 0.5", "<= 0.5", "!= 0", "-1e300 .. 1e300"):
        bound = registry.Bound.parse(text, "here")
        assert not bound.check(math.inf) and not bound.check(-math.inf) and not bound.check(math.nan)
