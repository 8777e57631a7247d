"""Property tests over the whole command line, run in-process through `dllab.cli.main`.

Hypothesis draws commands, scenario ids, options, `--set` keys and values (NaN, inf, huge,
negative, empty, unicode), environment variables and `--out` targets (a file, a symlink, a
read-only folder, another run's folder), and generated malformed scenario files. Whatever is
drawn: no traceback, an exit status in {0, 1, 2, 130}, an exit 2 leaves the folder exactly as it
was (no new file or folder) after one line on stderr, and no file that existed before changes.
Draws that would start a real run are limited to the tabular scenarios with tiny budgets, and a
costly scenario is always drawn with a bad `--set` key, so the whole file runs in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllab import registry
from dllab.cli import main
from dllab.errors import ScenarioFileError

CHEAP = ("rl/q-learning-frozenlake", "rl/q-learning-cliffwalking", "rl/q-learning-frozenlake8x8")
COSTLY = ("supervised/cnn", "rl/dqn-cartpole", "gan/gan", "supervised/keras-mlp", "concepts/autograd")
UNKNOWN = ("rl/no-such", "", "q-learning-taxi", "../../etc/passwd", "rl/q-learning-frozenlake/", "é/ü")
TINY = ["--set", "episodes=20", "--set", "eval_episodes=2", "--set", "checkpoint_every=0",
        "--set", "max_episode_steps=100"]  # last, so any valid drawn budget is replaced by a tiny one
NASTY = ["nan", "NaN", "inf", "-inf", "1e309", "-1e309", "-5", "0", "-0", "", " ", "1" * 5000,
         "10**12", "1e12", "999999999999999999999", "[1, 2]", "[" * 3000, "true", "\u0661\u0662",
         "\x00", "  3  ", "0x10", "1_000", "None", "null", "'", "\u00e9", "\U0001F600", "a=b",
         "--quick", "module:Env", "gymnasium.envs:CartPole", "CartPole-v1", "FrozenLake-v1"]
SEEDS = ["0", "1", "-1", str(2**32 - 1), str(2**32), str(2**64), "abc", "1.5", "", "\u0663", "1_0"]
THREADS = ["1", "2", "0", "-1", "100000", "abc", "", "1.0", "\u0661"]
OUT_TARGETS = ["file.txt", "link", "dangling", "link-dir", "readonly", "readonly/sub", "other-run",
               "fresh", "fresh/deeper", "dir.html"]
ENV_CHOICES = {
    "DLLAB_THREADS": [None, *THREADS],
    "DLLAB_DEVICE": [None, "cpu", "cuda", "tpu", "", "CPU"],
    "DLLAB_SCENARIO_PATH": [None] * 6 + ["no-such-folder", "bad-scenarios", "file.txt", "", "bad-scenarios:no-such"],
    "DLLAB_RUNS_DIR": [None, "file.txt", "readonly", "link", "deep/runs"],
    "KERAS_BACKEND": [None, "torch", "tensorflow", "theano", ""],
}
BAD_SCENARIOS = {"syntax.toml": "id = [\n", "types.toml": 'id = "x/y"\ntitle = 3\n', "empty.toml": ""}


def examples(count: int) -> settings:
    """Derandomized (the same draws on every machine), no deadline: a draw may start a tiny run.
    DLLAB_PROPERTY_SCALE=K draws K times as many, at random, for a longer search."""
    scale = int(os.environ.get("DLLAB_PROPERTY_SCALE", "0") or 0)
    return settings(max_examples=count * max(scale, 1), deadline=None, derandomize=scale == 0,
                    database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def clean_registry():
    """The registry cache follows the drawn DLLAB_SCENARIO_PATH; leave it as it was found."""
    yield
    with _quiet():
        registry.load_all(refresh=True)
    _LOADED_FOR[0] = ...


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """A finished run folder of a cheap scenario, copied into every sandbox as `other-run`."""
    base = tmp_path_factory.mktemp("other-run")
    with _quiet(), _cwd(base):
        status = main(["run", "rl/q-learning-frozenlake", "--quick", "--out", "run", *TINY])
    assert status in (0, 1) and (base / "run" / "result.json").is_file()
    return base / "run"


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def _cwd(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _environment(values: dict):
    saved = dict(os.environ)
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def sandbox(other_run: Path):
    """root/work (the cwd) with every kind of --out target, root/outside with a precious file."""
    root = Path(tempfile.mkdtemp(prefix="dllab-prop-"))
    work, outside = root / "work", root / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "precious.txt").write_text("precious")
    (work / "file.txt").write_text("a file")
    (work / "link").symlink_to(outside / "precious.txt")
    (work / "dangling").symlink_to(outside / "missing")
    (work / "link-dir").symlink_to(outside)
    (work / "dir.html").mkdir()
    shutil.copytree(other_run, work / "other-run", symlinks=True)
    (work / "bad-scenarios").mkdir()
    for name, text in BAD_SCENARIOS.items():
        (work / "bad-scenarios" / name).write_text(text)
    (work / "readonly").mkdir()
    (work / "readonly" / "kept.txt").write_text("kept")
    os.chmod(work / "readonly", 0o555)
    try:
        yield root, work
    finally:
        for folder, _, _ in os.walk(root):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o755)
        shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: a folder's mode, a file's mode and content hash, a link's target."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                entries[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[key] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                entries[key] = ("file", stat.S_IMODE(info.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def call(argv: list[str], work: Path, env: dict) -> tuple[int, str, str]:
    """`main(argv)` in `work` under `env`: (status, stdout, stderr); an exception escaping main
    is returned as status -1 with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    with _environment(env), _cwd(work), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            _registry_for(os.environ.get("DLLAB_SCENARIO_PATH"), work)
            status = main(argv)
        except SystemExit as done:  # argparse
            status = done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
        except BaseException:  # noqa: BLE001 - anything escaping main is the bug under test
            status = -1
            err.write(traceback.format_exc())
    return status, out.getvalue(), err.getvalue()


_LOADED_FOR = [...]  # the (DLLAB_SCENARIO_PATH, cwd) the registry cache was loaded under


def _registry_for(scenario_path: str | None, work: Path) -> None:
    """Reload the registry (0.1 s) only when the drawn scenario path differs from the last."""
    if _LOADED_FOR[0] != (scenario_path, work):
        registry.load_all(refresh=True)
        _LOADED_FOR[0] = (scenario_path, work)


def check_properties(root: Path, before: dict, status: int, out: str, err: str, argv, env,
                     must_fail: bool) -> None:
    after = snapshot(root)
    where = f"argv={argv!r} env={env!r}\nstatus={status}\nstderr={err[-2000:]}"
    _log(argv, env, status, err, sorted(set(after) - set(before)))
    assert status in (0, 1, 2, 130), where
    assert "Traceback" not in err and "Traceback" not in out, where
    changed = [key for key, value in before.items() if after.get(key) != value]
    assert not changed, f"pre-existing entries changed: {changed}\n{where}"
    if status == 2:  # `check` prints one line per problem it found
        assert after == before, f"exit 2 left new entries {sorted(set(after) - set(before))}\n{where}"
        errors = [line for line in err.splitlines() if not line.startswith("dllab: warning:")]
        assert len(errors) == 1 or argv[:1] == ["check"], f"exit 2 must print one line\n{where}"
    if must_fail:
        assert status == 2, f"bad input must be exit 2\n{where}"


def _log(argv, env, status, err, new_entries) -> None:
    """With DLLAB_PROPERTY_LOG=FILE, one JSON line per case tried (to tabulate the cases)."""
    log = os.environ.get("DLLAB_PROPERTY_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps({"argv": argv, "env": {k: v for k, v in env.items() if v is not None},
                                     "status": status, "stderr": err.strip().splitlines()[-1:],
                                     "new": new_entries}) + "\n")


def _int_in(text: str | None, low: int, high: int) -> bool:
    try:
        return low <= int(text) <= high
    except (TypeError, ValueError):
        return False


def valid_value(param) -> st.SearchStrategy[str]:
    """A `--set` value inside the parameter's schema (budgets are replaced by TINY anyway)."""
    if param.choices is not None:
        return st.sampled_from([str(c) for c in param.choices])
    if param.type is bool:
        return st.sampled_from(["true", "false", "1", "0"])
    low = param.min if param.min is not None else param.exclusive_min
    high = param.max if param.max is not None else param.exclusive_max
    if param.type is int:
        low = int(low if low is not None else 0) + (param.exclusive_min is not None)
        return st.integers(low, max(low, int(high if high is not None else low + 100))).map(str)
    if param.type is float and low is not None and high is not None:
        return st.floats(low, high, exclude_min=param.exclusive_min is not None,
                         exclude_max=param.exclusive_max is not None).map(repr)
    return st.just(repr(param.default))


@st.composite
def valid_run_commands(draw):
    """A `run` of a cheap scenario that should run: valid options, values inside the schema."""
    scenario = draw(st.sampled_from(CHEAP))
    spec = registry.load_all()[scenario]
    argv = ["run", scenario, "--seed", str(draw(st.integers(0, 2**32 - 1)))]
    keys = [k for k, p in spec.schema.items() if p.kind != "gymnasium-id"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        argv += ["--set", f"{key}={draw(valid_value(spec.schema[key]))}"]
    if draw(st.booleans()) and spec.controls:
        argv += ["--control", draw(st.sampled_from([c.name for c in spec.controls]))]
    out = draw(st.sampled_from([None, "fresh", "fresh/deeper", "readonly/sub", "link-dir/run", "dir.html"]))
    argv += (["--out", out] if out else []) + draw(st.sampled_from([[], ["--quick"], ["--json"]])) + TINY
    env = {"DLLAB_THREADS": draw(st.sampled_from([None, "1"])), "DLLAB_DEVICE": draw(st.sampled_from([None, "cpu"])),
           "DLLAB_RUNS_DIR": draw(st.sampled_from([None, "deep/runs", "link-dir"]))}
    return argv, env, False


@st.composite
def run_commands(draw):
    """A `run` command line, its environment, and whether the input is certainly bad."""
    scenario = draw(st.sampled_from(CHEAP + COSTLY + UNKNOWN))
    specs = registry.load_all()
    keys = list(specs[scenario].schema) if scenario in specs else ["episodes"]
    argv, bad = ["run", scenario], scenario not in specs
    if draw(st.booleans()):
        seed = draw(st.sampled_from(SEEDS))
        argv += ["--seed", seed]
        bad |= not _int_in(seed, 0, 2**32 - 1)
    if draw(st.booleans()):
        threads = draw(st.sampled_from(THREADS))
        argv += ["--threads", threads]
        bad |= not _int_in(threads, 1, os.cpu_count() or 1)
    for option, choices in (("--framework", ["numpy", "torch", "jax", "", "NUMPY"]),
                            ("--device", ["cpu", "cuda", "gpu", ""]),
                            ("--control", ["no-such", "learning-rate-zero", "reward-only-target", ""]),
                            ("--resume", ["missing", "file.txt", "other-run", "fresh"])):
        if draw(st.integers(0, 3)) == 0:
            value = draw(st.sampled_from(choices))
            argv += [option, value]
            bad |= option == "--framework" and value != "numpy"
            bad |= option == "--device" and value != "cpu"
            bad |= option in ("--control", "--resume") and value in ("no-such", "", "missing", "file.txt")
            if option == "--resume" and value == "other-run":  # another seed than its owner's
                argv = [a for i, a in enumerate(argv) if "--seed" not in argv[max(i - 1, 0):i + 1]]
                argv += ["--seed", "7"]
                bad = True
    out = draw(st.sampled_from([None, *OUT_TARGETS]))
    if out is not None:
        argv += ["--out", out]
        bad |= out in ("file.txt", "link", "other-run")
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.sampled_from(keys + ["", " ", "EPISODES", "no_such", "\u00e9", "a b"]),
                             st.text(max_size=8)))
        value = draw(st.one_of(st.sampled_from(NASTY), st.integers(-2**70, 2**70).map(str),
                               st.floats().map(repr), st.text(max_size=12)))
        argv += ["--set", f"{key}={value}"]
        bad |= key.strip() not in keys
    argv += draw(st.sampled_from([[], ["--quick"], ["--json"], ["--quick", "--json"]]))
    if scenario in COSTLY:
        argv += ["--set", "no_such_parameter=1"]  # never trains: the bad key is refused first
        bad = True
    elif scenario in CHEAP:
        argv += TINY
    env = {key: draw(st.sampled_from(choices)) for key, choices in ENV_CHOICES.items()}
    if "--threads" not in argv and env["DLLAB_THREADS"] is not None:
        bad |= not _int_in(env["DLLAB_THREADS"], 1, os.cpu_count() or 1)
    if "--device" not in argv and env["DLLAB_DEVICE"] not in (None, "cpu", ""):
        bad |= scenario in CHEAP
    if out is None and "--resume" not in argv and env["DLLAB_RUNS_DIR"] in ("file.txt", "link"):
        bad = True
    return argv, env, bad


@examples(30)
@given(run_commands())
def test_any_run_command_line_is_refused_cleanly_or_runs(other_run, drawn):
    argv, env, bad = drawn
    with sandbox(other_run) as (root, work):
        before = snapshot(root)
        status, out, err = call(argv, work, env)
        check_properties(root, before, status, out, err, argv, env, bad)


@examples(6)
@given(valid_run_commands())
def test_valid_runs_finish_and_touch_nothing_that_existed(other_run, drawn):
    argv, env, _ = drawn
    with sandbox(other_run) as (root, work):
        before = snapshot(root)
        status, out, err = call(argv, work, env)
        check_properties(root, before, status, out, err, argv, env, False)
        assert status in (0, 1), err[-1500:]
        assert any(key.endswith("result.json") for key in set(snapshot(root)) - set(before))


TOKENS = ["list", "describe", "run", "check", "report", "bench", "--json", "--quick", "--seed", "--set",
          "--out", "--tag", "--framework", "--by-question", "--markdown", "--controls", "--help-me", "-x",
          "rl/no-such", "x", "file.txt", "other-run", "dir.html", "link", "x.html",
          "bad-scenarios", "readonly", "nan", "--", "=", "\u00e9", ""]


@st.composite
def other_commands(draw):
    """list, describe, check and report with drawn arguments, or a random token soup."""
    command = draw(st.sampled_from(["list", "describe", "check", "report", "soup"]))
    if command == "list":
        argv = ["list", *draw(st.lists(st.sampled_from(["--json", "--by-question", "--markdown", "--controls",
                                                        "--tag", "rl", "--framework", "torch", "nope"]),
                                       max_size=4))]
    elif command == "describe":
        argv = ["describe", draw(st.sampled_from(CHEAP + COSTLY + UNKNOWN))]
    elif command == "check":
        argv = ["check", *draw(st.lists(st.sampled_from(["bad-scenarios", "file.txt", "no-such", "other-run",
                                                         "link-dir", "readonly"]), max_size=2))]
    elif command == "report":
        argv = ["report", draw(st.sampled_from(["other-run", "file.txt", "missing", "link", "link-dir",
                                                "readonly", "."]))]
        out = draw(st.sampled_from([None, "new.html", "file.txt", "dir.html", "link/x.html", "fresh/r.html"]))
        argv += ["--out", out] if out else []
    else:
        argv = draw(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=6))
    env = {key: draw(st.sampled_from(choices)) for key, choices in ENV_CHOICES.items()}
    return argv, env


@examples(30)
@given(other_commands())
def test_any_other_command_line_is_refused_cleanly_or_works(other_run, drawn):
    argv, env = drawn
    with sandbox(other_run) as (root, work):
        before = snapshot(root)
        status, out, err = call(argv, work, env)
        bad = argv[:1] == ["describe"] and argv[1] in UNKNOWN
        check_properties(root, before, status, out, err, argv, env, bad)


# Generated scenario files: a valid toy scenario, mutated field by field, then maybe cut or spliced.
TOY = {"id": "fuzz/toy", "title": "a toy", "questions": [1], "frameworks": ["numpy"], "entry": "math:sqrt",
       "params": {"n": {"default": 3, "min": 1, "max": 10}, "flag": False,
                  "name": {"default": "a", "choices": ["a", "b"]}},
       "quick": {"n": 2}, "expect": {"m": ">= 0"}, "exempt": {"m": "a fixture of the property test"}}
FIELDS = ["id", "title", "questions", "frameworks", "entry", "params", "quick", "expect", "expect_quick",
          "exempt", "controls", "devices", "tags", "requires", "volatile", "summary", "claims", "default",
          "min", "max", "exclusive_min", "choices", "kind", "max_length", "bound", "name", "set", "breaks",
          "n", "m"]
LEAVES = st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
                   st.sampled_from([">= 0", "0.1 .. 0.2", "< nan", "", "numpy", "torch", "math:sqrt",
                                    "gymnasium-id", "cuda", "fuzz/toy", "n", "m"]))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner,
                                                 max_size=3)), max_leaves=8)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")) if not math.isfinite(value) \
            else repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value) if isinstance(value, str) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict) -> str:
    return "".join(f"{json.dumps(str(key))} = {toml_value(value)}\n" for key, value in data.items())


@st.composite
def scenario_files(draw):
    """(the mutated table, the file text, whether the text was cut or spliced)."""
    data = json.loads(json.dumps(TOY))
    for _ in range(draw(st.integers(1, 4))):
        target, path = data, draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3))
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                break
            target = target[key]
        if draw(st.booleans()) and path[-1] in target:
            del target[path[-1]]
        else:
            target[path[-1]] = draw(VALUES)
    text = toml_document(data)
    damaged = draw(st.integers(0, 3)) == 0
    if damaged:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "[", "\x00", "= =", "\n[params]\n", "\u00e9"]))
    return data, text, damaged


@examples(120)
@given(scenario_files())
def test_the_parser_raises_only_scenario_file_errors(drawn):
    data, _, _ = drawn
    try:
        registry.parse_spec(data, Path("fuzz.toml"))
    except ScenarioFileError as error:
        assert "fuzz.toml" in str(error) and "\n" not in str(error)


@examples(15)
@given(scenario_files(), st.sampled_from([None, "1", "abc"]))
def test_malformed_plugin_files_never_break_the_command_line(other_run, drawn, threads):
    _, text, _ = drawn
    with sandbox(other_run) as (root, work):
        (work / "fuzz").mkdir()
        (work / "fuzz" / "fuzz.toml").write_text(text)
        env = {"DLLAB_SCENARIO_PATH": str(work / "fuzz"), "DLLAB_THREADS": threads}
        before = snapshot(root)
        status, out, err = call(["list"], work, env)
        check_properties(root, before, status, out, err, ["list"], env, False)
        assert status == 0
        loaded = re.search(r"^fuzz/toy\s", out, re.MULTILINE) is not None
        status, out, err = call(["check"], work, env)
        check_properties(root, before, status, out, err, ["check"], env, False)
        assert status == (0 if " 0 problems" in out else 2)
        for argv in (["describe", "fuzz/toy"], ["run", "fuzz/toy", "--seed", "-1"],
                     ["run", "fuzz/toy", "--quick", "--framework", "numpy", "--out", "fresh"]):
            before = snapshot(root)
            status, out, err = call(argv, work, env)
            check_properties(root, before, status, out, err, argv, env, "-1" in argv or not loaded)
            if argv[0] == "describe":
                assert status == (0 if loaded else 2), err
