"""Shared helpers for dllab's own tests (the scenario matrix comes from dllab's pytest plugin)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """`python -m dllab ARGS` in a subprocess: (exit status, stdout, stderr)."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "dllab", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def cli(tmp_path):
    """Run the CLI inside a temporary folder (so `runs/` lands there)."""
    def _cli(*args, env=None, timeout=300):
        return run_cli(*args, cwd=tmp_path, env=env, timeout=timeout)
    return _cli
