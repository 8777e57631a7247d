"""`dllab report`: every result under runs/ on one page, with its PNG artifacts loading."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

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


HOSTILE_NAME = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"


@pytest.fixture(scope="module")
def malformed(runs, tmp_path_factory):
    """A runs folder holding one good run (its PNG renamed to a name that needs URL quoting)
    beside files dllab cannot use, and a valid result whose strings are HTML and Markdown."""
    root = tmp_path_factory.mktemp("malformed") / "runs"
    good = next(runs.rglob("result.json")).parent
    shutil.copytree(good, root / "good")
    png = next((root / "good").rglob("*.png"))
    png.rename(png.with_name("odd #1's [curve].png"))
    bad = {
        "types": json.dumps({"scenario": "x", "metrics": {"a": "high"}, "wall_s": "slow"}),
        "list": "[1, 2, 3]",
        "nested": "[" * 100_000 + "]" * 100_000,
        "binary": b"\xff\xfe{not json",
        "huge": json.dumps({"scenario": "huge", "error": "x" * (17 * 2**20)}),
        "expect": json.dumps({"scenario": "x", "expect": {"m": {"bound": 3, "ok": "yes"}}}),
    }
    for name, content in bad.items():
        (root / name).mkdir()
        path = root / name / "result.json"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    (root / "folder" / "result.json").mkdir(parents=True)
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "result.json")
    (root / "bench").mkdir()
    (root / "bench" / "bench.json").write_text(json.dumps({"env": "CartPole-v1", "runs": "none"}))
    (root / "hostile").mkdir()
    (root / "hostile" / "result.json").write_text(json.dumps({
        "scenario": HOSTILE_NAME, "status": "ok", "seed": "<b>0</b>", "framework": "numpy | torch",
        "metrics": {"a|b": 1.0, "[link](javascript:alert(1))": 2.0, "nan_metric": None},
        "nonfinite": {"nan_metric": "nan"},
        "expect": {"a|b": {"bound": "<script>alert(1)</script>", "ok": True}},
        "error": "<script>document.body.setAttribute('data-pwned','2')</script>",
    }))
    return root, ["types", "list", "nested", "binary", "huge", "expect", "folder", "fifo", "bench"]


def test_report_skips_and_names_each_file_it_cannot_use(malformed):
    root, names = malformed
    status, out, err = run_cli("report", str(root), timeout=60)
    assert status == 0, err
    assert "Traceback" not in err and f"{len(names)} files skipped" in out
    warnings = [line for line in err.splitlines() if line.startswith("dllab: warning: report skipped")]
    assert len(warnings) == len(names), err
    page, markdown = (root / "report.html").read_text(), (root / "report.md").read_text()
    for name in names:
        assert sum(f"/{name}/" in line for line in warnings) == 1, name
        assert f"{name}{os.sep}" in page and f"{name}{os.sep}" in markdown
    assert "above the limit" in page and "not a JSON object but list" in page
    assert page.count("</h2>") == 3  # the good run, the hostile run, the skipped files


def test_report_escapes_what_it_copies(malformed):
    root, _ = malformed
    assert run_cli("report", str(root), timeout=60)[0] == 0
    page, markdown = (root / "report.html").read_text(), (root / "report.md").read_text()
    assert "<img src=x" not in page and "<script>alert" not in page and "<b>0</b>" not in page
    assert "&lt;img src=x onerror=" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert re.search(r"(?<!\\)[<>]", markdown) is None  # every < and > is escaped: no raw HTML
    assert re.search(r"(?<!\\)\]\(javascript", markdown) is None  # no link
    assert "\\[link\\](javascript:alert(1))" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert all(line.replace("\\|", "").count("|") == 4 for line in table_rows), table_rows
    assert "| a\\|b | 1 |" in markdown and "| nan\\_metric | nan |" in markdown
    assert "odd%20%231%27s%20%5Bcurve%5D.png" in page and "odd%20%231%27s%20%5Bcurve%5D.png" in markdown


def test_report_temp_files_never_follow_a_planted_link(runs, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    for name in (".report.html.tmp", ".report.md.tmp"):
        (work / name).unlink(missing_ok=True)
        (work / name).symlink_to(target)
    status, _, err = run_cli("report", str(work))
    assert status == 0, err
    assert target.read_text() == "keep me"
    assert (work / "report.html").is_file() and not (work / "report.html").is_symlink()


@pytest.mark.parametrize("make, message", [
    (lambda out: out.mkdir(), "is not a file"),
    (lambda out: out.with_suffix(".md").mkdir(), "is not a file"),
])
def test_report_out_that_cannot_be_a_file_is_exit_2(runs, tmp_path, make, message):
    out = tmp_path / "page.html"
    make(out)
    before = sorted(tmp_path.rglob("*"))
    status, _, err = run_cli("report", str(runs), "--out", str(out))
    assert status == 2 and message in err and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


def test_report_out_below_a_file_is_exit_2(runs, tmp_path):
    (tmp_path / "file").write_text("x")
    status, _, err = run_cli("report", str(runs), "--out", str(tmp_path / "file" / "page.html"))
    assert status == 2 and "is not a folder" in err


def _chromium_dom(browser: str, page: Path, profile: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run([browser, *flags, "--dump-dom", page.resolve().as_uri()], capture_output=True,
                          text=True, timeout=120).stdout


def test_report_images_load_in_headless_chromium(runs, malformed, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("DLLAB_REQUIRE_BROWSER"):  # set by .ci/run, which installs Chromium
            pytest.fail("headless Chromium not installed, and DLLAB_REQUIRE_BROWSER is set")
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    dom = _chromium_dom(browser, runs / "report.html", tmp_path / "profile")
    assert 'data-images-loaded="2/2"' in dom, dom[-500:]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'p2'}"]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                    (runs / "report.html").resolve().as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    root, _ = malformed  # a report of a malformed runs folder opens, its image loads, no script runs
    assert run_cli("report", str(root), timeout=60)[0] == 0
    dom = _chromium_dom(browser, root / "report.html", tmp_path / "profile-malformed")
    assert 'data-images-loaded="1/1"' in dom, dom[-800:]
    assert 'data-pwned="' not in dom and "Skipped files" in dom  # no attribute set by a script


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse does."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_nonfinite_metric_fails_its_bounds_and_is_strict_json_end_to_end(tmp_path):
    """A scenario returning NaN and inf: both fail their bounds (inf used to pass >= 0.5), the
    printed and written JSON parse under a strict parser (null, reason in `nonfinite`), and the
    report shows what was measured."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "nonfinite_entry.py").write_text(
        "def run(ctx):\n    return {'a': float('nan'), 'b': float('inf'), 'c': -float('inf'), 'd': 1.0}\n")
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "nonfinite.toml").write_text(
        'id = "test/nonfinite"\ntitle = "nonfinite metrics"\nquestions = [1]\nframeworks = ["numpy"]\n'
        'entry = "nonfinite_entry:run"\n[expect]\na = ">= 0"\nb = ">= 0.5"\nc = "<= 0"\nd = ">= 0"\n'
        '[exempt]\na = "fixture"\nb = "fixture"\nc = "fixture"\nd = "fixture"\n')
    env = {"DLLAB_SCENARIO_PATH": str(tmp_path / "scenarios"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "code"), os.environ.get("PYTHONPATH")]))}
    status, out, err = run_cli("run", "test/nonfinite", "--json", "--out", "runs/r", cwd=tmp_path, env=env)
    assert status == 1, err
    printed, written = _strict(out), _strict((tmp_path / "runs" / "r" / "result.json").read_text())
    for result in (printed, written):
        assert result["metrics"] == {"a": None, "b": None, "c": None, "d": 1.0}
        assert result["nonfinite"] == {"a": "nan", "b": "inf", "c": "-inf"}
        assert {k: v["ok"] for k, v in result["expect"].items()} == {"a": False, "b": False, "c": False, "d": True}
        assert result["expectations_met"] is False
    status, _, err = run_cli("report", cwd=tmp_path, env=env)
    assert status == 0 and "skipped" not in err, err
    page = (tmp_path / "runs" / "report.html").read_text()
    assert "<td>b</td><td>inf</td>" in page and "<td>c</td><td>-inf</td>" in page
    assert "| a | nan |" in (tmp_path / "runs" / "report.md").read_text()
