"""A bad plugin source (a broken `dllab.scenarios` entry point, a malformed scenario file in a
plugin folder, a missing `DLLAB_SCENARIO_PATH` folder) is skipped with one warning line naming
it; dllab's own scenarios keep working, and `python -m dllab check` exits 2 on it."""

import os

import pytest

from conftest import run_cli
from dllab import registry
from dllab.cli import main
from dllab.errors import ScenarioFileError

GOOD = ('id = "fake-plugin/constant"\ntitle = "a constant"\nquestions = [1]\nframeworks = ["numpy"]\n'
        'entry = "dllab_fake_plugin:constant"\n[expect]\nvalue = "== 1"\n'
        '[exempt]\nvalue = "a fixture of the plugin tests"\n')

PLUGIN = '''
import sys
from pathlib import Path

def good():
    return Path(__file__).parent / "fake_scenarios"

def raises():
    raise RuntimeError("plugin bug\\nsecond line")

def exits():
    sys.exit(3)

def not_a_folder():
    return "/no/such/dllab/folder"

def constant(ctx):
    return {"value": 1.0}
'''

ENTRY_POINTS = """[dllab.scenarios]
good = dllab_fake_plugin:good
missing = no_such_module_dllab_xyz:folder
raises = dllab_fake_plugin:raises
exits = dllab_fake_plugin:exits
not-a-folder = dllab_fake_plugin:not_a_folder
"""


def fake_site(root, entry_points: str = ENTRY_POINTS):
    """A folder for PYTHONPATH holding a plugin module and a dist-info with entry points
    (importlib.metadata finds it there, no install needed)."""
    site = root / "site"
    (site / "fake_scenarios").mkdir(parents=True)
    (site / "fake_scenarios" / "constant.toml").write_text(GOOD)
    (site / "dllab_fake_plugin.py").write_text(PLUGIN)
    info = site / "dllab_fake_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dllab-fake-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


def with_site(site) -> dict:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("dllab: warning:")]


def test_broken_entry_points_are_skipped_with_one_warning_each(tmp_path):
    env = with_site(fake_site(tmp_path))
    status, out, err = run_cli("list", cwd=tmp_path, env=env)
    assert status == 0, err
    assert "rl/q-learning-taxi" in out and "fake-plugin/constant" in out
    warnings = warnings_of(err)
    assert len(warnings) == 4 and len(err.strip().splitlines()) == 4, err
    for name in ("'missing'", "'raises'", "'exits'", "'not-a-folder'"):
        assert sum(name in line for line in warnings) == 1, (name, warnings)
    assert "Traceback" not in err
    status, out, err = run_cli("describe", "rl/q-learning-taxi", cwd=tmp_path, env=env)
    assert status == 0 and "Parameters" in out
    status, out, err = run_cli("run", "fake-plugin/constant", "--out", "r", cwd=tmp_path, env=env)
    assert status == 0, err
    status, out, err = run_cli("check", cwd=tmp_path, env=env)
    assert status == 2 and len(err.strip().splitlines()) == 4 and "'raises'" in err


def test_check_exits_0_when_every_source_is_good(tmp_path):
    site = fake_site(tmp_path, "[dllab.scenarios]\ngood = dllab_fake_plugin:good\n")
    status, out, err = run_cli("check", cwd=tmp_path, env=with_site(site))
    assert status == 0 and err == "", err
    assert f"{len(registry.load_all(refresh=True)) + 1} scenarios; 0 problems" in out


def malformed_files(folder):
    """One bad scenario file per way of being bad; returns the names that must be reported."""
    taxi = (registry.BUILTIN_DIR / "rl" / "q-learning-taxi.toml").read_text()
    files = {
        "syntax.toml": "id = [\n",
        "field.toml": GOOD.replace('["numpy"]', '["jax"]').replace("constant", "field"),
        "binary.toml": b"id = \"x\"\n\xff\xfe\x00garbage",
        "nested.toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "huge.toml": GOOD.replace("constant", "huge") + "# " + "x" * 2**21 + "\n",
        "clash.toml": taxi,
        "params.toml": GOOD.replace("constant", "params") + '[params]\nn = { default = 5, min = 10, max = 1 }\n',
    }
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    os.mkfifo(folder / "fifo.toml")
    (folder / "folder.toml").mkdir()
    return [*files, "fifo.toml", "folder.toml"]


def test_malformed_plugin_files_are_skipped_and_dllab_keeps_working(tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    names = malformed_files(folder)
    (folder / "good.toml").write_text(GOOD.replace("constant", "fine"))
    env = {"DLLAB_SCENARIO_PATH": str(folder)}
    status, out, err = run_cli("list", cwd=tmp_path, env=env, timeout=60)
    assert status == 0, err
    assert "rl/q-learning-taxi" in out and "fake-plugin/fine" in out
    warnings = warnings_of(err)
    assert len(warnings) == len(names) == len(err.strip().splitlines()), err
    for name in names:
        assert sum(name in line for line in warnings) == 1, (name, warnings)
    assert "defined twice" in err and "q-learning-taxi.toml" in err  # the clash names both files
    status, out, err = run_cli("describe", "rl/q-learning-cliffwalking", cwd=tmp_path, env=env, timeout=60)
    assert status == 0, err
    status, _, err = run_cli("check", cwd=tmp_path, env=env, timeout=60)
    assert status == 2 and len(err.strip().splitlines()) == len(names)


def test_a_missing_scenario_path_folder_is_a_warning_and_fails_check(tmp_path):
    env = {"DLLAB_SCENARIO_PATH": str(tmp_path / "no-such-folder")}
    status, out, err = run_cli("list", cwd=tmp_path, env=env)
    assert status == 0 and "rl/q-learning-taxi" in out
    assert warnings_of(err) == [f"dllab: warning: skipped DLLAB_SCENARIO_PATH: "
                                f"{str(tmp_path / 'no-such-folder')!r} is not a folder"]
    status, _, err = run_cli("check", cwd=tmp_path, env=env)
    assert status == 2 and "no-such-folder" in err


def test_check_takes_folders_and_files_to_check(tmp_path, capsys):
    (tmp_path / "good.toml").write_text(GOOD)
    assert main(["check", str(tmp_path / "good.toml")]) == 0
    (tmp_path / "bad.toml").write_text(GOOD.replace("title", "titel"))
    assert main(["check", str(tmp_path)]) == 2
    assert "bad.toml: unknown field 'titel'" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "absent")]) == 2


def test_a_broken_builtin_file_still_fails_loudly(tmp_path, monkeypatch, capsys):
    """dllab's own files are not plugins: a broken one is a bug of dllab, never skipped."""
    (tmp_path / "broken.toml").write_text("id = [\n")
    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path)
    try:
        with pytest.raises(ScenarioFileError, match="broken.toml: not valid TOML"):
            registry.load_all(refresh=True)
        assert main(["list"]) == 2 and main(["check"]) == 2
        assert "broken.toml" in capsys.readouterr().err
    finally:
        monkeypatch.undo()
        registry.load_all(refresh=True)
