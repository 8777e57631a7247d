"""`python -m dllab` (or `dllab`): list | describe | run | sweep | bench | report.

Exit status: 0 ok, 1 an expectation failed or the scenario raised, 2 bad input (one line on
stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from dllab.errors import DllabError, SkipScenario


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the whole usage)
        self.exit(2, f"dllab: error: {message} (see `python -m dllab {self.prog.split()[-1]} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dllab", description="Runnable, seeded, checked deep-learning scenarios.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    listing = sub.add_parser("list", help="list the scenarios")
    listing.add_argument("--tag", help="only scenarios with this tag")
    listing.add_argument("--framework", help="only scenarios that run on this framework")
    listing.add_argument("--by-question", action="store_true", help="map every seed question 1-45 to its scenarios")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--markdown", action="store_true", help="a Markdown table (as in the README)")
    listing.add_argument("--controls", action="store_true",
                         help="which negative control breaks each expectation (coverage per scenario)")

    describe = sub.add_parser("describe", help="what a scenario measures and where the seed is wrong")
    describe.add_argument("id")

    run = sub.add_parser("run", help="run a scenario and check its expectations")
    run.add_argument("id")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--framework", help="numpy, torch, tensorflow or keras (default: first installed)")
    run.add_argument("--device", help="cpu or cuda (default: $DLLAB_DEVICE or cpu)")
    run.add_argument("--quick", action="store_true", help="the quick profile of the test matrix")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter (repeatable)")
    run.add_argument("--out", help="run folder (default: runs/<id>/<framework>-<device>-s<seed>-<time>)")
    run.add_argument("--threads", type=int, help="CPU threads for the framework (default 1: repeatable)")
    run.add_argument("--resume", metavar="DIR", help="continue an interrupted run from its checkpoint")
    run.add_argument("--control", metavar="NAME",
                     help="run a negative control: exit 0 if every expectation it must break failed")
    run.add_argument("--verbose", action="store_true", help="print the traceback of a failed scenario")
    run.add_argument("--json", action="store_true", help="print result.json instead of the table")

    bench = sub.add_parser("bench", help="benchmark dllab against a reference implementation, or "
                           "the sweep engine's throughput (bench sweep)")
    bench.add_argument("target", choices=["dqn", "sweep"])
    bench.add_argument("--against", choices=["sb3"], default="sb3")
    bench.add_argument("--env", default=None,
                       help="dqn: comma-separated env ids (default: CartPole-v1,Acrobot-v1,MountainCar-v0)")
    bench.add_argument("--seeds", type=int, default=None, help="seeds per env (default: dqn 10, sweep 20)")
    bench.add_argument("--seeds-from", type=int, default=0, metavar="N", help="first seed (default 0)")
    bench.add_argument("--steps", type=int, default=None, help="dqn: env steps (default: the zoo's per env)")
    bench.add_argument("--impl", default=None, help="dqn: comma-separated implementations among "
                       "sb3, dllab, dllab-default, keras (default: sb3,dllab,dllab-default)")
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--seeds-batched", type=int, default=0, metavar="K",
                       help="also train K seeds of dllab's DQN as one batched computation")
    bench.add_argument("--workers", type=int, default=None, help="Dask workers (default: the CPU count)")
    bench.add_argument("--scheduler", default=None, help="dqn: a Dask scheduler address (default: embedded)")
    bench.add_argument("--scenario", default="rl/q-learning-frozenlake", help="sweep: the scenario timed")
    bench.add_argument("--out", default="runs/bench")

    sweep = sub.add_parser("sweep", help="many seeds and settings of a scenario on Dask, with IQM and "
                           "bootstrap intervals")
    sweep.add_argument("id")
    sweep.add_argument("--seeds", default="0-9", help="seeds such as 0-99 or 0,3,5 (default 0-9)")
    sweep.add_argument("--set", dest="grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a parameter and its values; the grid is every combination (repeatable)")
    sweep.add_argument("--framework", help="the scenario's framework (default: first installed)")
    sweep.add_argument("--quick", action="store_true", help="the quick profile of the test matrix")
    sweep.add_argument("--workers", type=int, help="local worker processes (default: the CPU count)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="a Dask scheduler, e.g. tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS, "
                            "else an embedded local cluster)")
    sweep.add_argument("--out", metavar="DIR", help="sweep folder; give it again to resume "
                       "(default: runs/sweeps/<id>/<time>)")
    sweep.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")

    check = sub.add_parser("check", help="check every scenario source (dllab's, plugins', "
                           "$DLLAB_SCENARIO_PATH, PATHs): exit 2 on any problem")
    check.add_argument("paths", nargs="*", metavar="PATH", help="more scenario folders or files to check")

    report = sub.add_parser("report", help="an HTML and Markdown page of every result under runs/")
    report.add_argument("runs_dir", nargs="?", default="runs")
    report.add_argument("--out", default=None, help="HTML file (default: RUNS_DIR/report.html)")
    return parser


def _list(args) -> int:
    from dllab import registry
    from dllab.devices import missing_reason

    specs = list(registry.load_all().values())
    if args.tag:
        specs = [s for s in specs if args.tag in s.tags]
    if args.framework:
        specs = [s for s in specs if args.framework in s.frameworks]
    if args.controls:
        return _list_controls(specs, args.json)
    if args.by_question:
        questions = registry.load_questions()
        by_question = {q: [s.id for s in specs if q in s.questions] for q in questions}
        if args.json:
            print(json.dumps({str(q): ids for q, ids in by_question.items()}, indent=2))
            return 0
        for q, title in questions.items():
            ids = ", ".join(by_question[q]) or "(no scenario)"
            print(f"Q{q:<3} {title[:58]:<58}  {ids}")
        covered = sum(1 for ids in by_question.values() if ids)
        print(f"\n{covered} of {len(questions)} questions covered")
        return 0
    if args.json:
        print(json.dumps([{"id": s.id, "title": s.title, "questions": list(s.questions),
                           "frameworks": list(s.frameworks), "tags": list(s.tags)} for s in specs], indent=2))
        return 0
    if args.markdown:
        print("| id | questions | frameworks | what it measures |\n|---|---|---|---|")
        for spec in specs:
            print(f"| `{spec.id}` | {', '.join(map(str, spec.questions))} | {', '.join(spec.frameworks)} | {spec.title} |")
        return 0
    width = max((len(s.id) for s in specs), default=10)
    for spec in specs:
        frameworks = " ".join(f if missing_reason(f, spec.requires) is None else f"({f})" for f in spec.frameworks)
        questions = ",".join(map(str, spec.questions))
        print(f"{spec.id:<{width}}  Q{questions:<10} {frameworks:<32} {spec.title}")
    print(f"\n{len(specs)} scenarios; (framework) = not installed here")
    return 0


def control_coverage(specs) -> dict:
    """Per scenario: its expectations, its controls and exemptions; overall, the fraction of
    expectations that a control breaks or an exemption explains."""
    scenarios, total, covered = {}, 0, 0
    for spec in specs:
        expectations = sorted({*spec.expect, *spec.expect_quick})
        broken = {metric for control in spec.controls for metric in control.breaks}
        total += len(expectations)
        covered += sum(1 for m in expectations if m in broken or m in spec.exempt)
        scenarios[spec.id] = {
            "expectations": expectations,
            "controls": {c.name: {"mistake": c.mistake, "breaks": list(c.breaks), "set": c.set,
                                  "frameworks": list(c.frameworks)} for c in spec.controls},
            "exempt": dict(spec.exempt),
            "uncovered": [m for m in expectations if m not in broken and m not in spec.exempt],
        }
    return {"scenarios": scenarios, "coverage": covered / total if total else 1.0,
            "expectations": total, "exempt": sum(len(s.exempt) for s in specs)}


def _list_controls(specs, as_json: bool) -> int:
    from dllab.fileio import dumps

    coverage = control_coverage(specs)
    if as_json:
        print(dumps(coverage, indent=2))
        return 0
    width = max((len(s.id) for s in specs), default=10)
    for scenario_id, entry in coverage["scenarios"].items():
        count = len(entry["expectations"])
        done = count - len(entry["uncovered"])
        missing = f"  uncovered: {', '.join(entry['uncovered'])}" if entry["uncovered"] else ""
        print(f"{scenario_id:<{width}}  {done}/{count} expectations, {len(entry['controls'])} controls, "
              f"{len(entry['exempt'])} exempt{missing}")
    print(f"\ncoverage {coverage['coverage']:.1%} of {coverage['expectations']} expectations "
          f"({coverage['exempt']} exempt)")
    return 0


def _describe(args) -> int:
    from dllab import registry
    from dllab.devices import missing_reason

    spec = registry.get(args.id)
    questions = registry.load_questions()
    wrap = lambda text: textwrap.fill(" ".join(text.split()), 96, initial_indent="  ", subsequent_indent="  ")
    print(f"{spec.id}: {spec.title}")
    for q in spec.questions:
        print(f"  Q{q}: {questions.get(q, '?')}")
    installed = [f if missing_reason(f, spec.requires) is None else f"{f} (not installed)" for f in spec.frameworks]
    print(f"frameworks: {', '.join(installed)}   devices: {', '.join(spec.devices)}   file: {spec.source}")
    if spec.summary:
        print("\nWhat it measures:")
        for paragraph in spec.summary.split("\n\n"):
            print(wrap(paragraph))
    if spec.claims:
        print("\nThe seed says, and what dllab measures:")
        for claim in spec.claims:
            print(f"  Q{claim.question} seed: {' '.join(claim.claim.split())}")
            print(wrap(f"  measured: {claim.truth}" + (f" (metric `{claim.metric}`)" if claim.metric else "")))
    if spec.notes:
        print("\nNotes:")
        for paragraph in spec.notes.split("\n\n"):
            print(wrap(paragraph))
    print("\nParameters (full profile; quick overrides in brackets; allowed values in parentheses):")
    for key, param in spec.schema.items():
        quick = f"  [quick: {spec.quick[key]!r}]" if key in spec.quick else ""
        print(f"  {param.describe()}{quick}")
    print("\nExpectations (quick bounds replace full ones in quick runs):")
    for key, bound in spec.expect.items():
        quick = f"  [quick: {spec.expect_quick[key].text}]" if key in spec.expect_quick else ""
        quick = "  (full profile only)" if key in spec.full_only else quick
        print(f"  {key} {bound.text}{quick}")
        _print_measured(spec, key)
    for key, bound in spec.expect_quick.items():
        if key not in spec.expect:
            print(f"  {key} {bound.text}  (quick only)")
            _print_measured(spec, key)
    if spec.controls:
        print("\nNegative controls (`run ID --control NAME --quick`: each mistake must break these):")
        for control in spec.controls:
            where = "" if control.frameworks == spec.frameworks else f" [{', '.join(control.frameworks)}]"
            print(f"  {control.name}{where}: {control.mistake}")
            print(f"    set {control.set}; breaks {', '.join(control.breaks)}")
    for metric, reason in spec.exempt.items():
        print(f"  exempt {metric}: {reason}")
    return 0


def _print_measured(spec, key: str) -> None:
    for table in ("expect", "expect_quick"):
        if spec.measured.get(f"{table}.{key}"):
            print(f"      measured: {spec.measured[f'{table}.{key}']}")


def _print_result(result) -> None:
    print(f"{result.scenario}  [{result.framework}"
          f"{'/' + result.keras_backend if result.keras_backend else ''}, {result.device}, seed {result.seed}, "
          f"{result.profile}]  {result.status} in {result.wall_s:.1f} s")
    if result.error:
        print(f"  error: {result.error}")
    width = max((len(k) for k in result.metrics), default=10)
    for name, value in result.metrics.items():
        print(f"  {name:<{width}}  {value:.6g}")
    if result.expect:
        print("expectations:")
    for name, check in result.expect.items():
        mark = {True: "\u2713", False: "\u2717", None: "-"}[check["ok"]]
        value = "missing" if check["value"] is None else f"{check['value']:.6g}"
        extra = f"  (skipped: {check['skipped']})" if "skipped" in check else ""
        print(f"  {mark} {name} {check['bound']}  (measured {value}){extra}")
    print(f"result: {Path(result.out_dir) / 'result.json'}  fingerprint {result.fingerprint}")


def _run(args) -> int:
    from dllab import registry
    from dllab.runner import run_scenario

    spec = registry.get(args.id)
    try:  # the runner checks --out and --resume folders (owner record, lock, checkpoint)
        result = run_scenario(spec, seed=args.seed, framework=args.framework, device=args.device,
                              quick=args.quick, overrides=args.overrides,
                              out_dir=args.out or args.resume, threads=args.threads, resume_from=args.resume,
                              control=args.control)
    except SkipScenario as skip:
        print(f"dllab: {spec.id} cannot run here: {skip}", file=sys.stderr)
        return 2
    if args.json:
        from dllab.fileio import dumps

        print(dumps(result.to_json(), indent=2))
    else:
        _print_result(result)
    if result.status == "failed" and args.verbose:
        print((Path(result.out_dir) / "traceback.txt").read_text(), file=sys.stderr)
    if result.status == "interrupted":
        return 130
    if args.control:
        return _control_verdict(spec, args.control, result)
    return 0 if result.expectations_met else 1


def control_verdict(spec, name: str, result) -> tuple[bool, str]:
    """Whether a control run was caught: it ran to the end and every expectation it promises to
    break failed. A crash is not a catch (the bounds never saw the mistake)."""
    control = spec.control(name)
    if result.status != "ok":
        return False, f"the run {result.status} ({result.error}); a control must run to the end"
    checked = [m for m in control.breaks if m in result.expect]
    if not checked:
        return False, (f"none of {', '.join(control.breaks)} is checked in the {result.profile} "
                       "profile (full-only bounds: run the control without --quick)")
    held = [m for m in checked if result.expect[m].get("ok") is not False]
    if held:
        return False, f"still held: {', '.join(held)} (these checks are blind to: {control.mistake})"
    unchecked = [m for m in control.breaks if m not in checked]
    later = f"; {', '.join(unchecked)} only checked in the full profile" if unchecked else ""
    return True, f"broke {', '.join(checked)}{later}"


def _control_verdict(spec, name: str, result) -> int:
    caught, detail = control_verdict(spec, name, result)
    print(f"control {name}: {'caught' if caught else 'MISSED'} ({detail})")
    return 0 if caught else 1


def _sweep(args) -> int:
    from dllab.sweep import main as sweep_main

    return sweep_main(args)


def _check(args) -> int:
    """Every scenario source parsed: one line per problem on stderr, exit 2 if there is any."""
    from dllab import registry

    specs, problems = registry.load_sources([Path(p) for p in args.paths])
    for problem in problems:
        print(f"dllab: {problem}", file=sys.stderr)
    print(f"{len(specs)} scenarios; {len(problems)} problems")
    return 2 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list(args)
        if args.command == "describe":
            return _describe(args)
        if args.command == "run":
            return _run(args)
        if args.command == "bench":
            if args.target == "sweep":
                from dllab.sweep_bench import main as sweep_bench_main

                return sweep_bench_main(args)
            from dllab.rl.bench import main as bench_main

            return bench_main(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "check":
            return _check(args)
        if args.command == "report":
            from dllab.report import main as report_main

            return report_main(args)
    except DllabError as error:
        print(f"dllab: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dllab: interrupted", file=sys.stderr)
        return 130
    return 2
