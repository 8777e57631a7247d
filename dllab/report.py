"""`python -m dllab report [RUNS_DIR] [--out report.html]`: one static page of every result.

Every `result.json` under the runs folder becomes a row group: the scenario, its seed questions,
framework, device, seed, profile, status, the metrics, each expectation met or not, and the PNG
artifacts of the run (learning curves, GAN grids, bench plots) shown inline. A Markdown twin
(`report.md`) is written beside the HTML. Image paths are relative, so the folder can be moved.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from dllab.errors import UsageError

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.ok{color:#17803d}.bad{color:#b3261e}.skip{color:#777}img{max-width:480px;margin:4px;border:1px solid #eee}
.meta{color:#555;font-size:90%}
"""

# After loading, the page counts the images that decoded; a headless browser test reads it.
_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', loaded + '/' + images.length);
});
"""


def collect(runs_dir: Path) -> list[dict]:
    """Every readable result.json under `runs_dir`, with the run folder and its PNG files."""
    results = []
    for path in sorted(runs_dir.rglob("result.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a run being written elsewhere, or a foreign file: not ours to report
        if not isinstance(data, dict) or "scenario" not in data:
            continue
        data["_folder"] = path.parent
        data["_images"] = sorted(path.parent.rglob("*.png"))
        results.append(data)
    return results


def _mark(ok) -> tuple[str, str]:
    return {True: ("\u2713", "ok"), False: ("\u2717", "bad"), None: ("-", "skip")}[ok]


def _framework(result: dict) -> str:
    backend = result.get("keras_backend")
    return f"{result.get('framework')}/{backend}" if backend else str(result.get("framework"))


def render_html(results: list[dict], out: Path, benches: list[Path]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dllab report</title>"
             f"<style>{_STYLE}</style></head><body><h1>dllab report</h1>"
             f"<p class='meta'>{len(results)} runs of {len({r['scenario'] for r in results})} scenarios</p>"]
    for result in results:
        met = result.get("expectations_met")
        symbol, css = _mark(met if result.get("status") == "ok" else False)
        questions = ", ".join(f"Q{q}" for q in result.get("questions", []))
        parts.append(f"<h2><span class='{css}'>{symbol}</span> {esc(result['scenario'])}</h2>"
                     f"<p class='meta'>{esc(questions)} &middot; {esc(_framework(result))} &middot; "
                     f"{esc(str(result.get('device')))} &middot; seed {esc(str(result.get('seed')))} &middot; "
                     f"{esc(str(result.get('profile')))} &middot; {esc(str(result.get('status')))} in "
                     f"{float(result.get('wall_s', 0)):.1f} s &middot; fingerprint "
                     f"{esc(str(result.get('fingerprint')))}</p>")
        if result.get("error"):
            parts.append(f"<p class='bad'>{esc(result['error'])}</p>")
        expect = result.get("expect", {})
        parts.append("<table><tr><th>metric</th><th>value</th><th>expectation</th></tr>")
        for name, value in result.get("metrics", {}).items():
            check = expect.get(name)
            cell = ""
            if check:
                symbol, css = _mark(check.get("ok"))
                cell = f"<span class='{css}'>{symbol} {esc(check['bound'])}</span>"
            parts.append(f"<tr><td>{esc(name)}</td><td>{value:.6g}</td><td>{cell}</td></tr>")
        for name, check in expect.items():
            if name not in result.get("metrics", {}):
                parts.append(f"<tr><td>{esc(name)}</td><td>missing</td><td class='bad'>\u2717 {esc(check['bound'])}</td></tr>")
        parts.append("</table>")
        for image in result["_images"]:
            source = Path(os.path.relpath(image, out.parent)).as_posix()
            parts.append(f"<img src='{esc(source)}' alt='{esc(image.name)}' title='{esc(image.name)}'>")
    for bench in benches:
        data = json.loads(bench.read_text())
        parts.append(f"<h2>bench: {esc(str(data.get('env')))}, {esc(str(data.get('steps')))} steps</h2><table>"
                     "<tr><th>impl</th><th>seed</th><th>eval return</th><th>wall s</th><th>time to solve s</th></tr>")
        for run in data.get("runs", []):
            parts.append("<tr>" + "".join(f"<td>{esc(str(run.get(k)))}</td>" for k in
                         ("impl", "seed", "eval_return_mean", "wall_s", "time_to_solve_s")) + "</tr>")
        parts.append("</table>")
        for key in ("ratio_wall_median", "ratio_solve_median"):
            parts.append(f"<p>{key}: {esc(str(data.get(key)))}</p>")
        for image in sorted(bench.parent.glob("*.png")):
            source = Path(os.path.relpath(image, out.parent)).as_posix()
            parts.append(f"<img src='{esc(source)}' alt='{esc(image.name)}'>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def render_markdown(results: list[dict], out: Path) -> str:
    lines = ["# dllab report", "", f"{len(results)} runs", ""]
    for result in results:
        questions = ", ".join(f"Q{q}" for q in result.get("questions", []))
        lines += [f"## {result['scenario']}", "",
                  f"{questions} · {_framework(result)} · {result.get('device')} · seed {result.get('seed')} · "
                  f"{result.get('profile')} · {result.get('status')} in {float(result.get('wall_s', 0)):.1f} s", "",
                  "| metric | value | expectation |", "|---|---|---|"]
        expect = result.get("expect", {})
        for name, value in result.get("metrics", {}).items():
            check = expect.get(name)
            cell = f"{_mark(check.get('ok'))[0]} {check['bound']}" if check else ""
            lines.append(f"| {name} | {value:.6g} | {cell} |")
        lines.append("")
        for image in result["_images"]:
            lines.append(f"![{image.name}]({Path(os.path.relpath(image, out.parent)).as_posix()})")
        lines.append("")
    return "\n".join(lines)


def write_report(runs_dir: Path, out: Path | None = None) -> tuple[Path, Path, int]:
    """Write the HTML page and its Markdown twin; returns (html, markdown, number of runs)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UsageError(f"report: {runs_dir} is not a folder (run a scenario first: python -m dllab run ID)")
    out = Path(out) if out else runs_dir / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"report: --out {out} must end in .html")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = collect(runs_dir)
    benches = sorted(runs_dir.rglob("bench.json"))
    markdown = out.with_suffix(".md")
    for path, text in ((out, render_html(results, out, benches)), (markdown, render_markdown(results, out))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return out, markdown, len(results)


def main(args) -> int:
    html_path, markdown_path, count = write_report(Path(args.runs_dir), args.out)
    print(f"report of {count} runs: {html_path} (and {markdown_path})")
    return 0
