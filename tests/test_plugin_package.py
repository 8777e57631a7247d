"""A third-party scenario package, built and installed in a temporary folder, is listed, run and
tested by dllab's pytest plugin exactly like dllab's own scenarios."""

import os
import subprocess
import sys

import pytest

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "dllab-pi-plugin"
version = "0.1"

[project.entry-points."dllab.scenarios"]
pi = "dllab_pi_plugin:scenarios_dir"

[tool.setuptools]
packages = ["dllab_pi_plugin"]

[tool.setuptools.package-data]
dllab_pi_plugin = ["scenarios/*.toml"]
"""

MODULE = '''
"""Monte Carlo estimate of pi, checked against math.pi."""
import math
from pathlib import Path


def scenarios_dir():
    return Path(__file__).parent / "scenarios"


def estimate_pi(ctx, samples):
    points = ctx.rng().random((samples, 2))
    estimate = 4.0 * float(((points ** 2).sum(axis=1) <= 1.0).mean())
    return {"pi_estimate": estimate, "abs_error": abs(estimate - math.pi)}


def clock(ctx):
    import time
    return {"x": time.perf_counter()}
'''

SCENARIO = """
id = "pi-plugin/monte-carlo"
title = "Monte Carlo pi from a plugin package"
questions = [1]
frameworks = ["numpy"]
entry = "dllab_pi_plugin:estimate_pi"
[params]
samples = 400000
[quick]
samples = 100000
[expect]
abs_error = "< 0.03"
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    package = root / "src" / "dllab_pi_plugin"
    (package / "scenarios").mkdir(parents=True)
    (root / "src" / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text(MODULE)
    (package / "scenarios" / "monte-carlo.toml").write_text(SCENARIO)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(root / "src")], check=True, capture_output=True)
    return site


def _run(site, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_plugin_scenario_is_listed_and_runs(plugin_site, tmp_path):
    listed = _run(plugin_site, tmp_path, "-m", "dllab", "list")
    assert listed.returncode == 0 and "pi-plugin/monte-carlo" in listed.stdout
    ran = _run(plugin_site, tmp_path, "-m", "dllab", "run", "pi-plugin/monte-carlo", "--quick", "--out", "r")
    assert ran.returncode == 0, ran.stderr
    assert "\u2713 abs_error < 0.03" in ran.stdout


def test_plugin_scenario_is_tested_by_the_pytest_plugin(plugin_site, tmp_path):
    tested = _run(plugin_site, tmp_path, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                  "--dllab-scenarios", "--dllab-select", "pi-plugin/*")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def test_the_matrix_fails_an_unmet_expectation_and_a_nondeterministic_scenario(plugin_site, tmp_path):
    """The generated tests can fail: an impossible bound, and metrics that change between reruns."""
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "strict.toml").write_text(SCENARIO.replace("pi-plugin/monte-carlo", "pi-plugin/strict")
                                        .replace('"< 0.03"', '"< 1e-12"'))
    (folder / "clock.toml").write_text(
        'id = "pi-plugin/clock"\ntitle = "metrics from the clock"\nquestions = [1]\n'
        'frameworks = ["numpy"]\nentry = "dllab_pi_plugin:clock"\n[expect]\nx = ">= 0"\n')
    env = {**os.environ, "PYTHONPATH": str(plugin_site), "DLLAB_SCENARIO_PATH": str(folder)}
    tested = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--dllab-scenarios",
                             "--dllab-select", "pi-plugin/*"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert "2 failed, 1 passed" in tested.stdout, tested.stdout
    assert "expectations not met" in tested.stdout
    assert "same seed, different metrics" in tested.stdout
