"""The registry: every shipped file parses; malformed files name file and field; bounds work."""

from pathlib import Path

import pytest

from dllab import registry
from dllab.errors import ScenarioFileError, UsageError
from dllab.registry import Bound, parse_spec

MINIMAL = {"id": "demo/x", "title": "t", "frameworks": ["numpy"], "entry": "m:f"}


def test_every_shipped_scenario_parses_and_names_a_question():
    specs = registry.load_all(refresh=True)
    assert "rl/q-learning-frozenlake" in specs
    for spec in specs.values():
        assert spec.questions, f"{spec.id} claims no seed question"
        assert spec.expect, f"{spec.id} checks nothing"
        for key in spec.expect_quick:
            assert key in spec.expect or key in spec.expect_quick


@pytest.mark.parametrize("text,value,ok", [
    (">= 0.7", 0.7, True), (">= 0.7", 0.69, False), ("< 5", 4.9, True), ("< 5", 5, False),
    ("== 10", 10.0, True), ("!= 0", 0.0, False), ("0.1 .. 0.2", 0.15, True), ("0.1 .. 0.2", 0.25, False),
    ("> 1e-3", 0.01, True), (">= 0.5", float("nan"), False), (">= 0.5", None, False),
])
def test_bounds(text, value, ok):
    assert Bound.parse(text, "here").check(value) is ok


@pytest.mark.parametrize("change,field", [
    ({"frameworks": ["mxnet"]}, "frameworks"),
    ({"entry": "not a target"}, "entry"),
    ({"expect": {"acc": "about 0.9"}}, "expect.acc"),
    ({"expect": {"acc": "0.9 .. 0.1"}}, "expect.acc"),
    ({"expect": {"acc": "1-2 .. 3"}}, "expect.acc"),
    ({"questions": [46]}, "questions"),
    ({"quick": {"epochs": 1}}, "quick.epochs"),
    ({"colour": "red"}, "colour"),
    ({"id": "Bad Id"}, "id"),
])
def test_malformed_fields_name_file_and_field(change, field):
    with pytest.raises(ScenarioFileError) as error:
        parse_spec({**MINIMAL, **change}, Path("x/bad.toml"))
    assert "x/bad.toml" in str(error.value) and field.split(".")[0] in str(error.value)


def test_missing_required_field():
    data = dict(MINIMAL)
    del data["title"]
    with pytest.raises(ScenarioFileError, match="missing required field 'title'"):
        parse_spec(data, Path("y.toml"))


def test_id_clash_names_both_files(tmp_path, monkeypatch, capsys):
    """A plugin file reusing a built-in id is skipped with a warning naming both files."""
    shipped = registry.load_all(refresh=True)["rl/q-learning-taxi"].source
    (tmp_path / "clash.toml").write_text(shipped.read_text())
    monkeypatch.setenv("DLLAB_SCENARIO_PATH", str(tmp_path))
    try:
        capsys.readouterr()
        assert registry.load_all(refresh=True)["rl/q-learning-taxi"].source == shipped
        warning = capsys.readouterr().err
        assert str(shipped) in warning and "clash.toml" in warning and "defined twice" in warning
    finally:
        monkeypatch.delenv("DLLAB_SCENARIO_PATH")
        registry.load_all(refresh=True)


def test_unknown_id_suggests_the_closest():
    with pytest.raises(UsageError, match="did you mean 'rl/q-learning-frozenlake'"):
        registry.get("rl/q-learning-frozenlak")
    with pytest.raises(UsageError, match="rl/q-learning-taxi"):
        registry.get("q-learning-taxi")


def test_all_45_questions_have_a_text():
    assert sorted(registry.load_questions()) == list(range(1, 46))
