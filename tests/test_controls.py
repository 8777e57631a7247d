"""Negative controls as scenario data: parsing, coverage, the CLI verdict, and bounds that can fail.

The matrix itself (dllab's pytest plugin) runs every control in the quick profile and asserts
that its promised expectations fail; these tests check the mechanism and the coverage rule."""

import json
import re
from pathlib import Path

import pytest

from dllab import registry
from dllab.cli import control_coverage, main
from dllab.errors import ScenarioFileError

BASE = {"id": "x/y", "title": "t", "frameworks": ["numpy", "torch"], "entry": "m:f",
        "params": {"fault": {"default": "none", "choices": ["none", "broken"]}},
        "expect": {"accuracy": ">= 0.9", "loss": "<= 1"}}
MAX_EXEMPT_FRACTION = 0.05


def spec(**extra):
    return registry.parse_spec({**BASE, **extra}, Path("x.toml"))


def control(**extra):
    return {"name": "broken", "mistake": "a bug", "set": {"fault": "broken"}, "breaks": ["accuracy"],
            **extra}


def test_controls_parse_with_their_frameworks():
    scenario = spec(controls=[control(), control(name="only-torch", frameworks=["torch"])])
    assert [c.name for c in scenario.controls] == ["broken", "only-torch"]
    assert scenario.controls[0].frameworks == ("numpy", "torch")
    assert scenario.control("only-torch").frameworks == ("torch",)


@pytest.mark.parametrize("raw, message", [
    (control(breaks=["nothing"]), "no expectation"),
    (control(breaks=[]), "must name an expectation"),
    (control(set={}), "must inject the mistake"),
    (control(set={"fault": "typo"}), "not one of the choices"),
    (control(set={"nokey": 1}), "overrides no key"),
    (control(name="Bad Name"), "lowercase"),
    (control(frameworks=["jax"]), "invalid entry 'jax'"),
    (control(extra=1), "unknown field 'extra'"),
])
def test_malformed_controls_name_the_field(raw, message):
    with pytest.raises(ScenarioFileError, match=message):
        spec(controls=[raw])


def test_duplicate_control_names_are_refused():
    with pytest.raises(ScenarioFileError, match="unique"):
        spec(controls=[control(), control()])


def test_exemptions_need_an_expectation_and_a_reason():
    with pytest.raises(ScenarioFileError, match="names no expectation"):
        spec(exempt={"other": "why"})
    with pytest.raises(ScenarioFileError, match="written reason"):
        spec(exempt={"loss": "  "})


def test_coverage_counts_broken_and_exempt_expectations():
    scenario = spec(controls=[control()], exempt={"loss": "a timing"})
    assert control_coverage([scenario])["coverage"] == 1.0
    assert control_coverage([spec(controls=[control()])])["coverage"] == 0.5


def test_every_expectation_of_every_scenario_is_broken_by_a_control_or_exempt():
    coverage = control_coverage(list(registry.load_all().values()))
    uncovered = {i: s["uncovered"] for i, s in coverage["scenarios"].items() if s["uncovered"]}
    assert not uncovered, f"expectations no control breaks and none exempts: {uncovered}"
    assert coverage["exempt"] / coverage["expectations"] < MAX_EXEMPT_FRACTION


def _one_sided(text):
    match = re.match(r"^\s*(>=|<=|>|<)\s*(\S+)\s*$", text)
    return (match.group(1)[0], float(match.group(2))) if match else None


def test_no_quick_bound_is_dominated_by_the_full_bound_it_replaces():
    """A quick bound replaces the full one in quick runs; it must be looser (a shorter run), never
    the same or stricter (then the full bound, or the quick one, is not what was measured)."""
    dominated = []
    for scenario in registry.load_all().values():
        for metric, quick in scenario.expect_quick.items():
            full = scenario.expect.get(metric)
            if full is None:
                continue
            if quick.text == full.text:
                dominated.append(f"{scenario.id}: {metric} {quick.text} (same as full)")
                continue
            quick_side, full_side = _one_sided(quick.text), _one_sided(full.text)
            if quick_side and full_side and quick_side[0] == full_side[0]:
                stricter = quick_side[1] > full_side[1] if quick_side[0] == ">" else quick_side[1] < full_side[1]
                if stricter:
                    dominated.append(f"{scenario.id}: {metric} quick {quick.text} vs full {full.text}")
    assert not dominated, "\n".join(dominated)


def test_list_controls_json_has_the_documented_shape(capsys):
    assert main(["list", "--controls", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"scenarios", "coverage"}
    entry = data["scenarios"]["rl/q-learning-frozenlake"]
    assert set(entry) >= {"expectations", "controls", "exempt"}
    for name, details in entry["controls"].items():
        assert details["mistake"] and details["breaks"], name


def test_an_unknown_control_is_refused_with_did_you_mean(capsys, tmp_path):
    assert main(["run", "rl/q-learning-frozenlake", "--control", "no-such-control", "--quick",
                 "--out", str(tmp_path / "run")]) == 2
    assert "has no control 'no-such-control'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_control_is_caught_exit_0_and_the_same_run_without_the_mistake_passes(capsys, tmp_path):
    """Both edges on the cheapest scenario: the correct run meets its bounds, the control fails them."""
    pytest.importorskip("gymnasium")
    scenario = registry.get("rl/q-learning-frozenlake")
    name = scenario.controls[0].name
    assert main(["run", scenario.id, "--quick", "--out", str(tmp_path / "good")]) == 0
    assert main(["run", scenario.id, "--quick", "--control", name, "--out", str(tmp_path / "bad")]) == 0
    out = capsys.readouterr().out
    assert f"control {name}: caught" in out
    record = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert record["control"] == name and not record["expectations_met"]


def test_a_full_only_bound_is_left_out_of_quick_runs_and_cannot_also_have_a_quick_bound():
    scenario = spec(expect={"accuracy": {"bound": ">= 0.9", "profile": "full", "measured": "5/5"},
                            "loss": "<= 1"})
    assert set(scenario.expectations(quick=True)) == {"loss"}
    assert set(scenario.expectations(quick=False)) == {"accuracy", "loss"}
    assert scenario.measured["expect.accuracy"] == "5/5"
    with pytest.raises(ScenarioFileError, match="full-only and has a quick bound"):
        spec(expect={"accuracy": {"bound": ">= 0.9", "profile": "full"}}, expect_quick={"accuracy": ">= 0.5"})
    with pytest.raises(ScenarioFileError, match="'profile' must be"):
        spec(expect={"accuracy": {"bound": ">= 0.9", "profile": "quick"}})
