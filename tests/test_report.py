"""`dllab report`: every result under runs/ on one page, with its PNG artifacts loading."""

import re
import shutil
import subprocess

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for seed in ("0", "1"):
        run_cli("run", "rl/q-learning-cliffwalking", "--quick", "--seed", seed, "--set", "episodes=200",
                "--set", "eval_episodes=10", cwd=root)
    status, out, err = run_cli("report", cwd=root)
    assert status == 0, err
    return root / "runs"


def test_report_lists_every_run_with_metrics_and_images(runs):
    page = (runs / "report.html").read_text()
    assert page.count("rl/q-learning-cliffwalking</h2>") == 2
    assert "ratio_to_optimal" in page and "Q20" in page
    sources = re.findall(r"<img src='([^']+)'", page)
    assert len(sources) == 2
    assert all((runs / source).is_file() for source in sources)
    markdown = (runs / "report.md").read_text()
    assert markdown.count("## rl/q-learning-cliffwalking") == 2 and "learning_curve.png" in markdown


def test_report_of_a_missing_folder_is_exit_2(tmp_path):
    status, _, err = run_cli("report", "no-such-runs", cwd=tmp_path)
    assert status == 2 and "is not a folder" in err


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="headless Chromium not installed (apt-get install chromium)")
def test_report_images_load_in_headless_chromium(runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    page = (runs / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-loaded="2/2"' in dom, dom[-500:]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
