"""dllab's pytest plugin (registered under `pytest11`): fixtures and the scenario matrix.

`pytest --dllab-scenarios` adds one test per registered scenario x framework x device, dllab's
own and every plugin package's alike. Each test runs the scenario (quick profile unless
`--dllab-profile full`), asserts every expectation, runs it again with the same seed and asserts
the same fingerprint. Each negative control of a scenario (`[[controls]]`) is one more test, on
the CPU in the quick profile: the run with the control's mistake must end normally and fail every
expectation the control names. A framework that is not installed, or a device that is not
present, makes the case skip with the reason (and the extra to install).

Options: `--dllab-select GLOB` (ids to include, repeatable), `--dllab-profile quick|full`,
`--dllab-devices cpu,cuda` (default `$DLLAB_DEVICE` or cpu), `--dllab-no-repeat` (skip the
determinism rerun), `--dllab-controls all|one|none` (controls in each of their frameworks, in the
first installed one, or none).
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("dllab")
    group.addoption("--dllab-scenarios", action="store_true", help="test every registered dllab scenario")
    group.addoption("--dllab-select", action="append", default=[], metavar="GLOB",
                    help="only scenario ids matching this glob (repeatable)")
    group.addoption("--dllab-profile", default="quick", choices=["quick", "full"])
    group.addoption("--dllab-devices", default=None, help="comma-separated devices (default $DLLAB_DEVICE or cpu)")
    group.addoption("--dllab-no-repeat", action="store_true", help="skip the same-seed determinism rerun")
    group.addoption("--dllab-controls", default="all", choices=["all", "one", "none"],
                    help="negative controls: in each of their frameworks (all), in the first installed "
                         "one (one), or not at all (none)")


def _devices(config) -> list[str]:
    text = config.getoption("--dllab-devices") or os.environ.get("DLLAB_DEVICE", "cpu")
    return [d.strip() for d in text.split(",") if d.strip()]


def matrix(config) -> list[tuple]:
    """(spec, framework, device) for every selected scenario, in a stable order (xdist needs it)."""
    from dllab import registry

    patterns = config.getoption("--dllab-select") or ["*"]
    cases = []
    for spec in registry.load_all().values():
        if not any(fnmatch.fnmatch(spec.id, p) for p in patterns):
            continue
        for framework in spec.frameworks:
            for device in _devices(config):
                if device in spec.devices:
                    cases.append((spec, framework, device))
    return cases


class ScenarioItem(pytest.Item):
    """One case of the matrix: run, check expectations, rerun, compare fingerprints."""

    def __init__(self, *, spec, framework, device, profile, repeat, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.framework, self.device = spec, framework, device
        self.profile, self.repeat = profile, repeat

    def runtest(self):
        import tempfile

        from dllab.devices import cuda_present, missing_reason
        from dllab.errors import SkipScenario
        from dllab.runner import run_scenario

        reason = missing_reason(self.framework, self.spec.requires)
        if reason:
            pytest.skip(reason)
        if self.device == "cuda" and not cuda_present(self.framework):
            pytest.skip(f"no CUDA device for {self.framework} on this machine")
        quick = self.profile == "quick"
        with tempfile.TemporaryDirectory(prefix="dllab-") as tmp:
            runs = []
            for attempt in range(2 if self.repeat else 1):
                try:
                    result = run_scenario(self.spec, seed=0, framework=self.framework, device=self.device,
                                          quick=quick, out_dir=Path(tmp) / f"run{attempt}")
                except SkipScenario as skip:
                    pytest.skip(str(skip))
                if result.status != "ok":
                    trace = Path(result.out_dir) / "traceback.txt"
                    detail = trace.read_text() if trace.exists() else ""
                    pytest.fail(f"{self.spec.id} [{self.framework}] {result.status}: {result.error}\n{detail}")
                failed = {k: v for k, v in result.expect.items() if v["ok"] is False}
                if failed:
                    pytest.fail(f"{self.spec.id} [{self.framework}/{self.profile}] expectations not met: {failed}"
                                f"\nmetrics: {result.metrics}", pytrace=False)
                runs.append(result)
            if len(runs) == 2 and runs[0].fingerprint != runs[1].fingerprint:
                changed = {k: (v, runs[1].metrics.get(k)) for k, v in runs[0].metrics.items()
                           if runs[1].metrics.get(k) != v and k not in self.spec.volatile}
                pytest.fail(f"{self.spec.id} [{self.framework}] same seed, different metrics: {changed}", pytrace=False)

    def reportinfo(self):
        return self.spec.source, 0, f"dllab scenario {self.name}"

    def repr_failure(self, excinfo):
        return str(excinfo.value)


class ControlItem(pytest.Item):
    """One negative control: the scenario run with its mistake (quick profile) must fail every
    expectation the control promises to break, and must run to the end (a crash is no catch)."""

    def __init__(self, *, spec, control, framework, device, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.control, self.framework, self.device = spec, control, framework, device

    def runtest(self):
        import tempfile

        from dllab.cli import control_verdict
        from dllab.devices import missing_reason
        from dllab.errors import SkipScenario
        from dllab.runner import run_scenario

        reason = missing_reason(self.framework, self.spec.requires)
        if reason:
            pytest.skip(reason)
        with tempfile.TemporaryDirectory(prefix="dllab-control-") as tmp:
            try:
                result = run_scenario(self.spec, seed=0, framework=self.framework, device=self.device,
                                      quick=True, out_dir=Path(tmp) / "run", control=self.control.name)
            except SkipScenario as skip:
                pytest.skip(str(skip))
            checked = [m for m in self.control.breaks if m in result.expect]
            if not checked:
                pytest.skip(f"{', '.join(self.control.breaks)}: full-profile bounds only")
            skipped = [m for m in checked if result.expect[m].get("ok") is None and "skipped" in result.expect[m]]
            if len(skipped) == len(checked):
                pytest.skip(f"every expectation of this control is skipped here: {skipped}")
            caught, detail = control_verdict(self.spec, self.control.name, result)
            if not caught:
                pytest.fail(f"{self.spec.id} [{self.framework}] control {self.control.name!r} "
                            f"({self.control.mistake}) not caught: {detail}\nmetrics: {result.metrics}",
                            pytrace=False)

    def reportinfo(self):
        return self.spec.source, 0, f"dllab control {self.name}"

    def repr_failure(self, excinfo):
        return str(excinfo.value)


def _control_frameworks(config, spec, control) -> tuple[str, ...]:
    """The frameworks a control runs in under `--dllab-controls`."""
    from dllab.devices import missing_reason

    mode = config.getoption("--dllab-controls")
    if mode == "none":
        return ()
    if mode == "one":
        installed = [f for f in control.frameworks if missing_reason(f, spec.requires) is None]
        return tuple(installed[:1])
    return control.frameworks


@pytest.hookimpl(tryfirst=True)  # before pytest's own -k/-m selection, which then applies to these too
def pytest_collection_modifyitems(session, config, items):
    if not config.getoption("--dllab-scenarios"):
        return
    profile = config.getoption("--dllab-profile")
    repeat = not config.getoption("--dllab-no-repeat")
    scenario_items = []
    for spec, framework, device in matrix(config):
        name = f"scenario[{spec.id}-{framework}-{device}]"
        scenario_items.append(ScenarioItem.from_parent(session, name=name, spec=spec, framework=framework,
                                                       device=device, profile=profile, repeat=repeat))
        if device != "cpu" or profile != "quick":
            continue
        for control in spec.controls:
            if framework in _control_frameworks(config, spec, control):
                name = f"control[{spec.id}-{framework}-{control.name}]"
                scenario_items.append(ControlItem.from_parent(
                    session, name=name, spec=spec, control=control, framework=framework, device=device))
    # The scenarios are the longest tests: first in line, so parallel workers finish together.
    items[:0] = scenario_items


@pytest.fixture
def seeded():
    """Seed Python and numpy, and torch, TensorFlow and Keras where imported, with 0 for a test's
    own code (`dllab.seeding.seed_imported`, the runner's seeding for each framework)."""
    from dllab.seeding import seed_imported

    seed_imported(0)
    return 0


@pytest.fixture
def device(request):
    """The device of this test run: `--dllab-devices`'s first, `$DLLAB_DEVICE`, or cpu."""
    return _devices(request.config)[0]


@pytest.fixture
def run_scenario(tmp_path, device):
    """`run_scenario(id, **kwargs)` runs a scenario (quick by default) in a temporary folder."""
    from dllab import registry
    from dllab.runner import run_scenario as run

    counter = iter(range(10_000))

    def _run(scenario_id: str, *, quick: bool = True, **kwargs):
        kwargs.setdefault("device", device)
        kwargs.setdefault("out_dir", tmp_path / f"run{next(counter)}")
        return run(registry.get(scenario_id), quick=quick, **kwargs)

    return _run
