"""`python -m dllab report [RUNS_DIR] [--out report.html]`: one static page of every result.

Every `result.json` under the runs folder becomes a row group: the scenario, its seed questions,
framework, device, seed, profile, status, the metrics, each expectation met or not, and the PNG
artifacts of the run (learning curves, GAN grids, bench plots) shown inline. A Markdown twin
(`report.md`) is written beside the HTML. Image paths are relative, so the folder can be moved.

A runs folder may hold files dllab did not write, or wrote long ago: a `result.json` or
`bench.json` that is not valid JSON, not an object, of the wrong types, or larger than
MAX_RESULT_BYTES is skipped, and named with the reason on the page and on stderr. Everything
copied into the page is escaped (HTML, and Markdown in `report.md`), and both files are written
through exclusively created temp files (`dllab.fileio`), never through a planted link.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote

from dllab.errors import UsageError
from dllab.fileio import write_text_atomic

MAX_RESULT_BYTES = 16 * 2**20  # a result.json or bench.json larger than this is skipped

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

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~&!$])")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_json(path: Path) -> tuple[object, str]:
    """(the parsed file, "") or (None, why it cannot be used)."""
    try:
        if not path.is_file():
            return None, "not a regular file"
        size = path.stat().st_size
        if size > MAX_RESULT_BYTES:
            return None, f"{size} bytes, above the limit of {MAX_RESULT_BYTES} (MAX_RESULT_BYTES)"
        return json.loads(path.read_bytes()), ""
    except (OSError, ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        return None, f"not readable JSON ({type(error).__name__}: {str(error)[:200]})"


def result_problem(data) -> str:
    """Why a parsed result.json cannot be reported ("" if it can): the types the page relies on."""
    if not isinstance(data, dict):
        return f"not a JSON object but {type(data).__name__}"
    if not isinstance(data.get("scenario"), str):
        return "field 'scenario' must be a string"
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict) or not all(v is None or _is_number(v) for v in metrics.values()):
        return "field 'metrics' must map names to numbers"
    expect = data.get("expect", {})
    if not isinstance(expect, dict) or not all(
            isinstance(c, dict) and isinstance(c.get("bound"), str) and c.get("ok") in (True, False, None)
            for c in expect.values()):
        return "field 'expect' must map names to {bound: text, ok: true/false/null}"
    questions = data.get("questions", [])
    if not isinstance(questions, list) or not all(isinstance(q, int) for q in questions):
        return "field 'questions' must be a list of integers"
    if data.get("wall_s") is not None and not _is_number(data["wall_s"]):
        return "field 'wall_s' must be a number"
    if data.get("expectations_met") not in (True, False, None):
        return "field 'expectations_met' must be true or false"
    if not isinstance(data.get("nonfinite", {}), dict):
        return "field 'nonfinite' must be a table"
    return ""


def bench_problem(data) -> str:
    if not isinstance(data, dict):
        return f"not a JSON object but {type(data).__name__}"
    runs = data.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        return "field 'runs' must be a list of objects"
    return ""


def collect_all(runs_dir: Path) -> tuple[list[dict], list[Path], list[tuple[Path, str]]]:
    """(usable results with their run folder and PNG files, usable bench.json files,
    (file, reason) for every file skipped)."""
    results, benches, skipped = [], [], []
    for path in sorted(runs_dir.rglob("result.json")):
        data, reason = read_json(path)
        reason = reason or result_problem(data)
        if reason:
            skipped.append((path, reason))
            continue
        data["_folder"] = path.parent
        data["_images"] = sorted(p for p in path.parent.rglob("*.png") if p.is_file())
        results.append(data)
    for path in sorted(runs_dir.rglob("bench.json")):
        data, reason = read_json(path)
        reason = reason or bench_problem(data)
        if reason:
            skipped.append((path, reason))
        else:
            benches.append((path, data))
    return results, benches, skipped


def collect(runs_dir: Path) -> list[dict]:
    """Every usable result.json under `runs_dir`, with the run folder and its PNG files."""
    return collect_all(runs_dir)[0]


def _mark(ok) -> tuple[str, str]:
    return {True: ("\u2713", "ok"), False: ("\u2717", "bad"), None: ("-", "skip")}[ok]


def _framework(result: dict) -> str:
    backend = result.get("keras_backend")
    return f"{result.get('framework')}/{backend}" if backend else str(result.get("framework"))


def _value(result: dict, name: str) -> str:
    value = result.get("metrics", {}).get(name)
    if value is None:  # strict JSON writes a NaN or infinite metric as null, named in `nonfinite`
        return str(result.get("nonfinite", {}).get(name, "null"))
    return f"{value:.6g}"


def _meta(result: dict) -> str:
    wall = result.get("wall_s") or 0
    return (f"{_framework(result)} \u00b7 {result.get('device')} \u00b7 seed {result.get('seed')} \u00b7 "
            f"{result.get('profile')} \u00b7 {result.get('status')} in {wall:.1f} s")


def _source(image: Path, out: Path) -> str:
    """A relative URL for an image (percent-encoded: a name may hold '#', '?', quotes)."""
    return quote(Path(os.path.relpath(image, out.parent)).as_posix())


def _html_result(result: dict, out: Path) -> list[str]:
    esc = html.escape
    symbol, css = _mark(result.get("expectations_met") if result.get("status") == "ok" else False)
    questions = ", ".join(f"Q{q}" for q in result.get("questions", []))
    parts = [f"<h2><span class='{css}'>{symbol}</span> {esc(result['scenario'])}</h2>"
             f"<p class='meta'>{esc(questions)} &middot; {esc(_meta(result))} &middot; fingerprint "
             f"{esc(str(result.get('fingerprint')))}</p>"]
    if result.get("error"):
        parts.append(f"<p class='bad'>{esc(str(result['error']))}</p>")
    expect = result.get("expect", {})
    parts.append("<table><tr><th>metric</th><th>value</th><th>expectation</th></tr>")
    for name in result.get("metrics", {}):
        check = expect.get(name)
        cell = ""
        if check:
            symbol, css = _mark(check.get("ok"))
            cell = f"<span class='{css}'>{symbol} {esc(check['bound'])}</span>"
        parts.append(f"<tr><td>{esc(name)}</td><td>{esc(_value(result, name))}</td><td>{cell}</td></tr>")
    for name, check in expect.items():
        if name not in result.get("metrics", {}):
            parts.append(f"<tr><td>{esc(name)}</td><td>missing</td>"
                         f"<td class='bad'>\u2717 {esc(check['bound'])}</td></tr>")
    parts.append("</table>")
    for image in result["_images"]:
        parts.append(f"<img src='{esc(_source(image, out))}' alt='{esc(image.name)}' title='{esc(image.name)}'>")
    return parts


def _html_bench(path: Path, data: dict, out: Path) -> list[str]:
    esc = html.escape
    parts = [f"<h2>bench: {esc(str(data.get('env')))}, {esc(str(data.get('steps')))} steps</h2><table>"
             "<tr><th>impl</th><th>seed</th><th>eval return</th><th>wall s</th><th>time to solve s</th></tr>"]
    for run in data.get("runs", []):
        parts.append("<tr>" + "".join(f"<td>{esc(str(run.get(k)))}</td>" for k in
                     ("impl", "seed", "eval_return_mean", "wall_s", "time_to_solve_s")) + "</tr>")
    parts.append("</table>")
    for key in ("ratio_wall_median", "ratio_solve_median"):
        parts.append(f"<p>{key}: {esc(str(data.get(key)))}</p>")
    for image in sorted(p for p in path.parent.glob("*.png") if p.is_file()):
        parts.append(f"<img src='{esc(_source(image, out))}' alt='{esc(image.name)}'>")
    return parts


def render_html(results: list[dict], out: Path, benches: list, skipped: list = (),
                runs_dir: Path | None = None) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dllab report</title>"
             f"<style>{_STYLE}</style></head><body><h1>dllab report</h1>"
             f"<p class='meta'>{len(results)} runs of {len({r['scenario'] for r in results})} scenarios</p>"]
    for result in results:
        parts += _html_result(result, out)
    for bench in benches:
        path, data = bench if isinstance(bench, tuple) else (bench, json.loads(bench.read_text()))
        parts += _html_bench(path, data, out)
    if skipped:
        parts.append(f"<h2>Skipped files</h2><p class='meta'>{len(skipped)} files could not be used</p><ul>")
        for path, reason in skipped:
            parts.append(f"<li class='skip'>{esc(_shown(path, runs_dir))}: {esc(reason)}</li>")
        parts.append("</ul>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _shown(path: Path, runs_dir: Path | None) -> str:
    return os.path.relpath(path, runs_dir) if runs_dir else str(path)


def md(text) -> str:
    """`text` as one line of Markdown that renders literally: no markup, links, HTML or tables."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def render_markdown(results: list[dict], out: Path, skipped: list = (), runs_dir: Path | None = None) -> str:
    lines = ["# dllab report", "", f"{len(results)} runs", ""]
    for result in results:
        questions = ", ".join(f"Q{q}" for q in result.get("questions", []))
        lines += [f"## {md(result['scenario'])}", "", md(f"{questions} \u00b7 {_meta(result)}"), "",
                  "| metric | value | expectation |", "|---|---|---|"]
        expect = result.get("expect", {})
        for name in result.get("metrics", {}):
            check = expect.get(name)
            cell = f"{_mark(check.get('ok'))[0]} {md(check['bound'])}" if check else ""
            lines.append(f"| {md(name)} | {md(_value(result, name))} | {cell} |")
        lines.append("")
        for image in result["_images"]:
            lines.append(f"![{md(image.name)}]({_source(image, out)})")
        lines.append("")
    if skipped:
        lines += ["## Skipped files", ""]
        lines += [f"- {md(_shown(path, runs_dir))}: {md(reason)}" for path, reason in skipped]
        lines.append("")
    return "\n".join(lines)


def _check_out(runs_dir: Path, out: Path | None) -> Path:
    """The HTML path, refused with a UsageError before anything is written if it cannot be one."""
    if not runs_dir.is_dir():
        raise UsageError(f"report: {runs_dir} is not a folder (run a scenario first: python -m dllab run ID)")
    out = Path(out) if out else runs_dir / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"report: --out {out} must end in .html")
    for path in (out, out.with_suffix(".md")):
        if path.is_dir() or (path.exists() and not path.is_file()):
            raise UsageError(f"report: {path} exists and is not a file")
    for parent in (out.parent, *out.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"report: --out {out}: {parent} is not a folder")
            break
    return out


def write_report(runs_dir: Path, out: Path | None = None) -> tuple[Path, Path, int]:
    """Write the HTML page and its Markdown twin; returns (html, markdown, number of runs)."""
    html_path, markdown, count, _ = write_report_checked(runs_dir, out)
    return html_path, markdown, count


def write_report_checked(runs_dir: Path, out: Path | None = None) -> tuple[Path, Path, int, list]:
    """`write_report`, also returning the (file, reason) pairs of the files skipped."""
    runs_dir = Path(runs_dir)
    out = _check_out(runs_dir, out)
    results, benches, skipped = collect_all(runs_dir)
    markdown = out.with_suffix(".md")
    pages = ((out, render_html(results, out, benches, skipped, runs_dir)),
             (markdown, render_markdown(results, out, skipped, runs_dir)))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path, text in pages:
            write_text_atomic(path, text)
    except OSError as error:
        raise UsageError(f"report: cannot write {out}: {error.strerror or error}") from None
    return out, markdown, len(results), skipped


def _line(text: str) -> str:
    """One printable line (a folder name may hold a newline or a terminal escape)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))


def main(args) -> int:
    html_path, markdown_path, count, skipped = write_report_checked(Path(args.runs_dir), args.out)
    for path, reason in skipped:
        print(_line(f"dllab: warning: report skipped {path}: {reason}"), file=sys.stderr)
    extra = f", {len(skipped)} files skipped" if skipped else ""
    print(f"report of {count} runs{extra}: {html_path} (and {markdown_path})")
    return 0
