"""The scenario registry: TOML files parsed into `ScenarioSpec`s, keyed by id.

Scenarios are data, not code (as in Gymnasium's registry): each file names its entry function as
`"module:function"` and is parsed without importing it. dllab's own files live in
`dllab/scenarios/` (shipped inside the wheel). Another package adds a folder of its own through
the entry-point group `dllab.scenarios`: the entry point names a callable that returns the path
of that folder, and `$DLLAB_SCENARIO_PATH` lists more folders. A malformed file or clash of ids
among dllab's own files is an error naming the file and the field; a bad plugin source (entry
point, folder or file) is skipped with one warning line, and `python -m dllab check` exits 2 on it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dllab.errors import ScenarioFileError, UsageError
from dllab.params import Param, check_values, parse_schema

FRAMEWORKS = ("numpy", "torch", "tensorflow", "keras")
DEVICES = ("cpu", "cuda")
ENTRY_POINT_GROUP = "dllab.scenarios"
BUILTIN_DIR = Path(__file__).parent / "scenarios"
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*$")
_BOUND = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")
_CONTROL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_RANGE = re.compile(r"^\s*([-+]?[\d.eE+-]+)\s*\.\.\s*([-+]?[\d.eE+-]+)\s*$")


@dataclass(frozen=True)
class Bound:
    """One expectation, such as `>= 0.97` or `0.1 .. 0.2` (inclusive), checked on a metric."""

    text: str

    def check(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):  # missing, NaN or infinite: never satisfies
            return False
        match = _BOUND.match(self.text)
        if match:
            op, limit = match.group(1), float(match.group(2))
            return {
                ">=": value >= limit, "<=": value <= limit, ">": value > limit,
                "<": value < limit, "==": value == limit, "!=": value != limit,
            }[op]
        low, high = (float(x) for x in _RANGE.match(self.text).groups())
        return low <= value <= high

    @staticmethod
    def parse(text: Any, where: str) -> Bound:
        valid = isinstance(text, str) and bool(_BOUND.match(text) or _RANGE.match(text))
        if valid and not _BOUND.match(text):
            try:
                low, high = (float(x) for x in _RANGE.match(text).groups())
                valid = low <= high
            except ValueError:
                valid = False
        if not valid:
            raise ScenarioFileError(
                f"{where}: expected a bound such as \">= 0.7\", \"< 5\" or \"0.1 .. 0.2\", got {text!r}"
            )
        return Bound(text.strip())


@dataclass(frozen=True)
class Claim:
    """What the seed document says on a question, and what dllab measures instead."""

    question: int
    claim: str
    truth: str
    metric: str = ""  # the metric of the run that shows it, if one does


@dataclass(frozen=True)
class Control:
    """A negative control: the scenario run with one mistake, which must break `breaks`."""

    name: str
    mistake: str  # what is broken, in a reader's words
    set: dict[str, Any]  # parameter overrides on top of the quick (or full) profile
    breaks: tuple[str, ...]  # expectations that must fail under the mistake
    frameworks: tuple[str, ...]  # where it applies (default: all of the scenario's)


@dataclass(frozen=True)
class ScenarioSpec:
    """A scenario as declared in its TOML file (see DESIGN.md, "The scenario contract")."""

    id: str
    title: str
    questions: tuple[int, ...]
    frameworks: tuple[str, ...]
    entry: dict[str, str]  # framework -> "module:function"
    source: Path
    devices: tuple[str, ...] = ("cpu",)
    tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # importable modules besides the framework, e.g. "gymnasium"
    params: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Bound] = field(default_factory=dict)
    expect_quick: dict[str, Bound] = field(default_factory=dict)
    volatile: tuple[str, ...] = ()  # metrics measured in seconds/bytes: kept out of the fingerprint
    summary: str = ""
    notes: str = ""
    claims: tuple[Claim, ...] = ()
    schema: dict[str, Param] = field(default_factory=dict)
    controls: tuple[Control, ...] = ()
    exempt: dict[str, str] = field(default_factory=dict)  # expectation -> why no control breaks it
    measured: dict[str, str] = field(default_factory=dict)  # "expect.x" / "expect_quick.x" -> pass rate
    full_only: frozenset[str] = frozenset()  # [expect] bounds a quick run cannot show (not checked there)

    def control(self, name: str) -> Control:
        """The control of that name, or a UsageError listing the controls."""
        for control in self.controls:
            if control.name == name:
                return control
        names = ", ".join(c.name for c in self.controls) or "none"
        close = difflib.get_close_matches(name, [c.name for c in self.controls], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{self.id} has no control {name!r}{hint} (controls: {names})")

    def resolved_params(self, quick: bool) -> dict[str, Any]:
        return {**self.params, **(self.quick if quick else {})}

    def expectations(self, quick: bool) -> dict[str, Bound]:
        """The bounds a run checks: `[expect]`, with `[expect_quick]` replacing the bound of the
        same metric (and full-only bounds left out) in quick runs."""
        if not quick:
            return dict(self.expect)
        kept = {k: v for k, v in self.expect.items() if k not in self.full_only}
        return {**kept, **self.expect_quick}


def _field(data: dict, name: str, kind: type | tuple, where: str, default: Any = ...) -> Any:
    if name not in data:
        if default is ...:
            raise ScenarioFileError(f"{where}: missing required field '{name}'")
        return default
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ScenarioFileError(f"{where}: field '{name}' must be {names}, got {value!r}")
    return value


def _str_list(data: dict, name: str, where: str, allowed: tuple = (), default=()) -> tuple:
    values = _field(data, name, list, where, list(default))
    for value in values:
        if not isinstance(value, str) or (allowed and value not in allowed):
            hint = f" (one of {', '.join(allowed)})" if allowed else ""
            raise ScenarioFileError(f"{where}: field '{name}' has invalid entry {value!r}{hint}")
    return tuple(values)


_KNOWN = {
    "id", "title", "questions", "frameworks", "entry", "devices", "tags", "requires", "params",
    "quick", "expect", "expect_quick", "volatile", "summary", "notes", "claims", "controls",
    "exempt",
}


def parse_spec(data: dict, source: Path) -> ScenarioSpec:
    """Validate one parsed TOML document; every error names the file and the field."""
    where = str(source)
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ScenarioFileError(f"{where}: unknown field '{unknown[0]}' (known: {', '.join(sorted(_KNOWN))})")
    scenario_id = _field(data, "id", str, where)
    if not _ID.match(scenario_id):
        raise ScenarioFileError(f"{where}: field 'id' {scenario_id!r} must be lowercase words joined by '/'")
    questions = _field(data, "questions", list, where, [])
    if not all(isinstance(q, int) and not isinstance(q, bool) and 1 <= q <= 45 for q in questions):
        raise ScenarioFileError(f"{where}: field 'questions' must list seed question numbers 1-45")
    frameworks = _str_list(data, "frameworks", where, FRAMEWORKS)
    if not frameworks:
        raise ScenarioFileError(f"{where}: field 'frameworks' must name at least one framework")
    raw_entry = data.get("entry")
    if isinstance(raw_entry, str):
        entry = {framework: raw_entry for framework in frameworks}
    elif isinstance(raw_entry, dict):
        entry = dict(raw_entry)
        missing = [f for f in frameworks if f not in entry]
        if missing:
            raise ScenarioFileError(f"{where}: field 'entry' has no function for framework '{missing[0]}'")
    else:
        raise ScenarioFileError(f"{where}: field 'entry' must be \"module:function\" or a table per framework")
    for framework, target in entry.items():
        if not isinstance(target, str) or not _ENTRY.match(target):
            raise ScenarioFileError(f"{where}: field 'entry' ({framework}) must be \"module:function\", got {target!r}")
    schema = parse_schema(_field(data, "params", dict, where, {}), where)
    quick = check_values(schema, _field(data, "quick", dict, where, {}), f"{where}: field 'quick")
    measured: dict[str, str] = {}
    full_only: set[str] = set()
    expect = _bounds(data, "expect", where, measured, full_only)
    expect_quick = _bounds(data, "expect_quick", where, measured, set())
    for metric in full_only & set(expect_quick):
        raise ScenarioFileError(f"{where}: field 'expect.{metric}' is full-only and has a quick bound")
    controls = _controls(data, where, frameworks, schema, {**expect, **expect_quick})
    exempt = _field(data, "exempt", dict, where, {})
    for metric, reason in exempt.items():
        if metric not in expect and metric not in expect_quick:
            raise ScenarioFileError(f"{where}: field 'exempt.{metric}' names no expectation")
        if not isinstance(reason, str) or not reason.strip():
            raise ScenarioFileError(f"{where}: field 'exempt.{metric}' must be a written reason")
    claims = []
    for index, claim in enumerate(_field(data, "claims", list, where, [])):
        claim_where = f"{where}: field 'claims[{index}]'"
        if not isinstance(claim, dict):
            raise ScenarioFileError(f"{claim_where} must be a table")
        claims.append(Claim(
            question=_field(claim, "question", int, claim_where),
            claim=_field(claim, "claim", str, claim_where),
            truth=_field(claim, "truth", str, claim_where),
            metric=_field(claim, "metric", str, claim_where, ""),
        ))
    return ScenarioSpec(
        id=scenario_id,
        title=_field(data, "title", str, where),
        questions=tuple(questions),
        frameworks=frameworks,
        entry=entry,
        source=source,
        devices=_str_list(data, "devices", where, DEVICES, ("cpu",)),
        tags=_str_list(data, "tags", where),
        requires=_str_list(data, "requires", where),
        params={name: param.default for name, param in schema.items()},
        quick=quick,
        expect=expect,
        expect_quick=expect_quick,
        volatile=_str_list(data, "volatile", where),
        summary=_field(data, "summary", str, where, "").strip(),
        notes=_field(data, "notes", str, where, "").strip(),
        claims=tuple(claims),
        schema=schema,
        controls=controls,
        exempt={k: " ".join(v.split()) for k, v in exempt.items()},
        measured=measured,
        full_only=frozenset(full_only),
    )


def _bounds(data: dict, table: str, where: str, measured: dict[str, str],
            full_only: set[str]) -> dict[str, Bound]:
    """`[expect]` or `[expect_quick]`: each entry a bound text, or a table `{bound, measured}`
    recording how the bound was measured (pass rate over seeds, worst margin); in `[expect]`,
    `profile = "full"` marks a bound that the quick profile's budget cannot show."""
    bounds = {}
    allowed = {"bound", "measured", "profile"} if table == "expect" else {"bound", "measured"}
    for key, value in _field(data, table, dict, where, {}).items():
        field_where = f"{where}: field '{table}.{key}'"
        if isinstance(value, dict):
            unknown = sorted(set(value) - allowed)
            if unknown or "bound" not in value:
                raise ScenarioFileError(f"{field_where} must be a bound or a table with 'bound' and "
                                        f"optionally {', '.join(repr(a) for a in sorted(allowed - {'bound'}))}")
            measured[f"{table}.{key}"] = _field(value, "measured", str, field_where, "")
            profile = _field(value, "profile", str, field_where, "")
            if profile not in ("", "full"):
                raise ScenarioFileError(f"{field_where}: field 'profile' must be \"full\" (or absent)")
            if profile == "full":
                full_only.add(key)
            value = value["bound"]
        bounds[key] = Bound.parse(value, field_where)
    return bounds


def _controls(data: dict, where: str, frameworks: tuple, schema: dict, expectations: dict) -> tuple:
    """The `[[controls]]` array: each names a mistake, how it is injected, what it must break."""
    controls, names = [], set()
    for index, raw in enumerate(_field(data, "controls", list, where, [])):
        control_where = f"{where}: field 'controls[{index}]'"
        if not isinstance(raw, dict):
            raise ScenarioFileError(f"{control_where} must be a table")
        unknown = sorted(set(raw) - {"name", "mistake", "set", "breaks", "frameworks"})
        if unknown:
            raise ScenarioFileError(f"{control_where}: unknown field '{unknown[0]}'")
        name = _field(raw, "name", str, control_where)
        if not _CONTROL_NAME.match(name) or name in names:
            raise ScenarioFileError(f"{control_where}: field 'name' {name!r} must be unique, "
                                    "lowercase words joined by '-'")
        names.add(name)
        overrides = check_values(schema, _field(raw, "set", dict, control_where, {}),
                                 f"{control_where}: field 'set")
        if not overrides:
            raise ScenarioFileError(f"{control_where}: field 'set' must inject the mistake")
        breaks = _str_list(raw, "breaks", control_where)
        if not breaks:
            raise ScenarioFileError(f"{control_where}: field 'breaks' must name an expectation")
        for metric in breaks:
            if metric not in expectations:
                raise ScenarioFileError(f"{control_where}: field 'breaks' names {metric!r}, "
                                        "which is no expectation of this scenario")
        controls.append(Control(
            name=name, mistake=" ".join(_field(raw, "mistake", str, control_where).split()),
            set=overrides, breaks=breaks,
            frameworks=_str_list(raw, "frameworks", control_where, frameworks, frameworks),
        ))
    return tuple(controls)


def load_file(path: Path) -> ScenarioSpec:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioFileError(f"{path}: not valid TOML: {error}") from None
    return parse_spec(data, path)


MAX_PLUGIN_FILE_BYTES = 2**20  # a scenario file of a plugin larger than this is skipped


def _entry_point_dirs(problems: list[str]) -> list[tuple[str, Path]]:
    """One folder per `dllab.scenarios` entry point; a broken one is described in `problems`."""
    from importlib.metadata import entry_points

    dirs = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {point.name!r} ({point.value}) of group {ENTRY_POINT_GROUP}"
        try:
            folder = Path(point.load()())
            is_folder = folder.is_dir()
        except (Exception, SystemExit) as error:  # a plugin's own code: it may raise anything
            problems.append(f"{where} failed: {type(error).__name__}: {error}")
            continue
        if not is_folder:
            problems.append(f"{where} returned {str(folder)!r}, not a folder")
            continue
        dirs.append((where, folder))
    return dirs


def scenario_dirs(problems: list[str] | None = None) -> list[tuple[str, Path]]:
    """dllab's own folder, then one per `dllab.scenarios` entry point, then each folder of
    `$DLLAB_SCENARIO_PATH`, as (origin, folder). A plugin source that cannot be used is left
    out and described in `problems` (a broken plugin must not hide dllab's own scenarios)."""
    problems = [] if problems is None else problems
    dirs = [("dllab", BUILTIN_DIR), *_entry_point_dirs(problems)]
    extra = os.environ.get("DLLAB_SCENARIO_PATH")
    for folder in filter(None, (extra or "").split(os.pathsep)):
        try:
            is_folder = Path(folder).is_dir()
        except (OSError, ValueError):
            is_folder = False
        if not is_folder:
            problems.append(f"DLLAB_SCENARIO_PATH: {folder!r} is not a folder")
            continue
        dirs.append(("DLLAB_SCENARIO_PATH", Path(folder)))
    return dirs


def _plugin_file(path: Path, problems: list[str]) -> ScenarioSpec | None:
    """One scenario file of a plugin, or None with the reason in `problems`: never an exception,
    whatever the file holds."""
    try:
        if not path.is_file():
            problems.append(f"{path}: not a regular file")
            return None
        if path.stat().st_size > MAX_PLUGIN_FILE_BYTES:
            problems.append(f"{path}: larger than {MAX_PLUGIN_FILE_BYTES} bytes (MAX_PLUGIN_FILE_BYTES)")
            return None
        return load_file(path)
    except ScenarioFileError as error:
        problems.append(str(error))
    except UnicodeDecodeError as error:
        problems.append(f"{path}: not valid TOML: not UTF-8 text ({error.reason} at byte {error.start})")
    except (OSError, RecursionError, MemoryError) as error:
        problems.append(f"{path}: cannot read it: {type(error).__name__}: {error}")
    except Exception as error:  # the file broke dllab's parser: skip it, but say so
        problems.append(f"{path}: not a valid scenario file ({type(error).__name__}: {error})")
    return None


def load_sources(extra: Iterable[Path] = ()) -> tuple[dict[str, ScenarioSpec], list[str]]:
    """Every scenario of every source, and one line per problem with a plugin source (a folder,
    a file, an entry point, an id clash). dllab's own files raise ScenarioFileError instead: a
    broken built-in file is a bug of dllab and must fail loudly. `extra` adds folders or files
    to check, as plugin sources."""
    problems: list[str] = []
    found: dict[str, ScenarioSpec] = {}
    sources = scenario_dirs(problems) + [("check", Path(p)) for p in extra]
    for origin, folder in sources:
        builtin = origin == "dllab"
        if not builtin and not (folder.is_dir() or folder.is_file()):
            problems.append(f"{folder}: no such file or folder")
            continue
        paths = [folder] if folder.is_file() else sorted(folder.rglob("*.toml"))
        for path in paths:
            spec = load_file(path) if builtin else _plugin_file(path, problems)
            if spec is None:
                continue
            if spec.id in found:
                clash = f"scenario id {spec.id!r} is defined twice: {found[spec.id].source} and {path}"
                if builtin:
                    raise ScenarioFileError(clash)
                problems.append(f"{clash} (the second is skipped)")
                continue
            found[spec.id] = spec
    return dict(sorted(found.items())), [_one_line(problem) for problem in problems]


def _one_line(text: str) -> str:
    """A problem as one printable line (a plugin's error may hold newlines or escapes)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))


_CACHE: dict[str, ScenarioSpec] | None = None


def load_all(refresh: bool = False) -> dict[str, ScenarioSpec]:
    """All registered scenarios, keyed by id, sorted; cached after the first call. A bad plugin
    source is skipped with one warning line on stderr (`python -m dllab check` exits 2 on it)."""
    global _CACHE
    if _CACHE is not None and not refresh:
        return _CACHE
    _CACHE = None  # a failed refresh must not leave the previous registry in place
    specs, problems = load_sources()
    for problem in problems:
        print(f"dllab: warning: skipped {problem}", file=sys.stderr)
    _CACHE = specs
    return _CACHE


def get(scenario_id: str) -> ScenarioSpec:
    """The spec for an id, or a UsageError with the closest ids ("did you mean")."""
    specs = load_all()
    if scenario_id in specs:
        return specs[scenario_id]
    ids = list(specs)
    close = difflib.get_close_matches(scenario_id, ids, n=3, cutoff=0.6)
    close += [i for i in ids if i.endswith("/" + scenario_id) and i not in close]
    hint = f"; did you mean {' or '.join(repr(c) for c in close[:3])}?" if close else "; see `python -m dllab list`"
    raise UsageError(f"unknown scenario {scenario_id!r}{hint}")


def load_questions() -> dict[int, str]:
    with open(Path(__file__).parent / "questions.toml", "rb") as handle:
        return {int(k): v for k, v in tomllib.load(handle).items()}
