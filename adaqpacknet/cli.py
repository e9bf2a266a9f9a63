"""Command line: ``python -m adaqpacknet run [--out DIR] key=value ...`` (and ``runs``, ``check-data``, ``verify-packed``).

``runs PROFILE`` lists the runs a parameter profile needs and the batch of each (``adaqpacknet.grid``;
``--batches`` lists the batches). ``run --profile PROFILE --batch ID`` trains every run of a batch
in one process, in sequence, each into its own run folder; ``run --plan FILE --batch ID`` does the
same from a plan file (``grid.write_plan``): the command the workflow engine (workflow/Snakefile)
runs for every job, having planned once; ``run --profile PROFILE --job ID`` trains exactly one run
into its folder. Values of ``key=value`` are parsed by the type of the ``Config`` field they set
(``none`` for an optional field), so ``lr=1e-3`` is a float and ``download=true`` a bool; an
unknown key or a bad value fails before any data is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import grid, methods
from .config import Config, load_parameter_file, parse_override
from .errors import AdaQPacknetError, CorruptFileError, shorten
from .runs import run, run_configs, verify_packed_run
from .results import PACKAGE_ROOT, code_version


def default_out_dir(config: Config) -> Path:
    """``runs/<scenario>/<method>-seed<seed>`` under the current directory."""
    return Path("runs") / config.scenario / f"{config.label}-seed{config.seed}"


def check_profile_data(profile_dir: Path) -> int:
    """Fail (exit 1, naming every missing dataset) before a profile trains anything."""
    from .data import SCENARIOS, DatasetNotFoundError, check_data_available

    files = sorted(profile_dir.glob("*.yaml"))
    if not files:
        print(f"error: no parameter files in {profile_dir}", file=sys.stderr)
        return 1
    problems, checked = [], set()
    for path in files:
        try:
            params = load_parameter_file(path)
        except AdaQPacknetError as error:  # a special, oversized or malformed file, named
            problems.append(str(error))
            continue
        if "scenario" not in params:
            continue
        root = params.get("data_root", "data")
        if not isinstance(params["scenario"], str) or params["scenario"] not in SCENARIOS or not isinstance(root, str):
            problems.append(f"{path.name}: scenario={shorten(params['scenario'])} with data_root={shorten(root)} is no "
                            f"scenario and folder (scenarios: {', '.join(SCENARIOS)})")
            continue
        root = root if Path(root).is_absolute() else str(PACKAGE_ROOT / root)
        if (params["scenario"], root) in checked:  # several notebooks share a scenario: report it once
            continue
        checked.add((params["scenario"], root))
        try:
            check_data_available(params["scenario"], root)
        except DatasetNotFoundError as error:
            problems.append(f"{path.name}: {error}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"data found for every scenario in {profile_dir}")
    return 1 if problems else 0


def verify_packed(run_dir: Path, data_root: str | None) -> int:
    """Print the per-task check of ``runs.verify_packed_run``; exit 1 on any mismatch."""
    report = verify_packed_run(run_dir, data_root)
    print(f"{report['file']}: {report['packed_bytes']} bytes")
    for row in report["tasks"]:
        print(
            f"task {row['task']}: test accuracy {row['test_accuracy']:.2f}% (results: {row['results_accuracy']:.2f}%, "
            f"{'equal' if row['accuracy_equal'] else 'DIFFERENT'}), probe logits "
            f"{'bit-identical' if row['probe_logits_equal'] else 'DIFFERENT'}"
        )
    print("every task reproduced exactly" if report["ok"] else "MISMATCH: the packed file does not reproduce the run")
    return 0 if report["ok"] else 1


def list_runs(profile: str, params_root: str, as_json: bool, batches: bool = False, stale: bool = False) -> int:
    """Print every run of a profile: its id, method, seed, the notebooks that read it and its batch
    (the job that trains it); with ``batches``, every batch: its id, its number of runs, the SLURM
    runtime and memory it asks for (``grid.batch_resources``) and its runs' ids; with ``stale``, the
    finished runs that other code trained (``grid.stale_runs``) and the code version each recorded."""
    plan = grid.plan(profile, params_root)
    if stale:
        found = grid.stale_runs(plan)
        if as_json:
            print(json.dumps([{"id": i, "folder": str(plan.runs_root / i), "code_version": v} for i, v in found.items()], indent=2))
        else:
            for run_id, recorded in found.items():
                print(f"{run_id}\t{recorded}")
        print(f"{len(found)} finished runs of profile {profile!r} were trained by other code than this ({code_version()}); "
              f"delete a run's folder to retrain it", file=sys.stderr)
        return 0
    if batches:
        if as_json:
            print(json.dumps([{"batch": b, "runs": list(ids), **grid.batch_resources(plan, b)} for b, ids in plan.batches.items()], indent=2))
        else:
            for b, ids in plan.batches.items():
                asks = grid.batch_resources(plan, b)
                print(f"{b}\t{len(ids)}\t{asks['runtime']} min\t{asks['mem_mb']} MB\t{' '.join(ids)}")
        print(f"{len(plan.batches)} batches of {len(plan.runs)} runs in profile {profile!r}", file=sys.stderr)
        return 0
    if as_json:
        rows = [
            {"id": r.id, "folder": str(plan.runs_root / r.id), "scenario": r.config.scenario, "method": r.config.label,
             "seed": r.config.seed, "notebooks": list(r.notebooks), "batch": plan.batch_of[r.id], "config": r.config.to_dict()}
            for r in plan.runs.values()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for r in plan.runs.values():
        print(f"{r.id}\t{r.config.label}\tseed {r.config.seed}\t{','.join(r.notebooks)}\t{plan.batch_of[r.id]}")
    print(
        f"{len(plan.runs)} runs in profile {profile!r}, read by {len(plan.notebooks)} notebooks, trained in {len(plan.batches)} batches",
        file=sys.stderr,
    )
    return 0


def summary(results: dict, out_dir: Path) -> dict:
    """What ``run`` prints of a finished run."""
    shown = {k: results.get(k) for k in ("method", "scenario", "seed", "acc", "bwt", "forgetting", "model_bytes", "bit_widths")}
    shown["capacity_used"] = results.get("capacity_used", {}).get("total")  # methods with owners or masks
    shown["results"] = str(Path(out_dir) / "results.json")
    return shown


def list_methods() -> int:
    """Print the method registry (``methods.SPECS``): each method, its learner, its traits and what
    it is; then each variant a notebook may name (``methods.VARIANTS``) and its Config changes."""
    traits = ("owner_maps", "frozen_tasks", "searches", "prunes", "quantizes", "single_head")
    for name, spec in methods.SPECS.items():
        shown = ", ".join(t for t in traits if getattr(spec, t)) or "-"
        print(f"{name}\t{spec.learner.split(':')[1]}\t{spec.family}\t{shown}\t{spec.summary}")
    print()
    for name, changes in methods.VARIANTS.items():
        print(f"{name}\t{json.dumps(dict(changes))}")
    return 0


def run_batch(profile: str, batch_id: str, runs: list[grid.Run]) -> int:
    """Train the runs of a batch (``grid.find_batch``) in this process, in sequence, each into its run
    folder as ``--job`` would (its lock, resumed from its checkpoint: a finished run returns at once);
    the runs after a failed one still train. Exit 1 if any run failed."""
    root = grid.runs_root(profile)
    print(f"batch {batch_id}: {len(runs)} runs: {', '.join(r.id for r in runs)}", flush=True)
    results = run_configs([r.config for r in runs], root, keep_going=True)
    print(json.dumps([summary(res, root / r.id) if res is not None else {"failed": r.id} for r, res in zip(runs, results)], indent=2))
    failed = [r.id for r, res in zip(runs, results) if res is None]
    if failed:
        print(f"error: {len(failed)} of {len(runs)} runs of batch {batch_id} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaqpacknet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="learn every task of a scenario and write results.json")
    run_parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<scenario>/<method>-seed<seed>)")
    run_parser.add_argument("overrides", nargs="*", metavar="key=value", help="Config fields, e.g. epochs=3 seed=1")
    run_parser.add_argument("--profile", default=None, help="with --job or --batch: the parameter profile that plans the runs")
    run_parser.add_argument("--job", default=None, help="a run id from `runs PROFILE`: train exactly that run, into runs/<profile>/<id>")
    run_parser.add_argument(
        "--batch", default=None, help="a batch id from `runs PROFILE --batches`: train its runs in sequence, each into runs/<profile>/<id>"
    )
    run_parser.add_argument("--params-root", default=grid.PARAMS_ROOT, help=f"folder of profile folders (default {grid.PARAMS_ROOT})")
    run_parser.add_argument("--plan", default=None, help="with --batch: read its runs from this plan file (grid.write_plan) instead of planning --profile")
    runs_parser = sub.add_parser("runs", help="list the runs a parameter profile needs and their batches (one job each)")
    runs_parser.add_argument("profile", help="a profile name: a folder of parameter files under --params-root")
    runs_parser.add_argument("--params-root", default=grid.PARAMS_ROOT, help=f"folder of profile folders (default {grid.PARAMS_ROOT})")
    runs_parser.add_argument("--json", action="store_true", help="one JSON record per run, with its full config")
    runs_parser.add_argument("--batches", action="store_true", help="list the batches (one job each) instead: id, number of runs, run ids")
    runs_parser.add_argument("--stale", action="store_true", help="list the finished runs that other library code trained (results.code_version)")
    sub.add_parser("methods", help="list every method (Config.method), its learner and traits, and the variants notebooks name")
    check_parser = sub.add_parser("check-data", help="check that every scenario of a parameter profile has its data")
    check_parser.add_argument("profile_dir", type=Path, help="a folder of notebook parameter files, e.g. notebooks/params/paper")
    verify_parser = sub.add_parser(
        "verify-packed", help="reload a finished run from its packed file and check every task against its results"
    )
    verify_parser.add_argument("run_dir", type=Path, help="a run folder holding results.json and packed.safetensors")
    verify_parser.add_argument("--data-root", default=None, help="data folder (default: the repository's data/); nothing is downloaded")
    args = parser.parse_args(argv)
    if args.command == "methods":
        return list_methods()
    if args.command == "check-data":
        return check_profile_data(args.profile_dir)
    if args.command == "verify-packed":
        try:
            return verify_packed(args.run_dir, args.data_root)
        except CorruptFileError as error:  # PackedFileError too: the message names the file and the fault
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.command == "runs":
        try:
            return list_runs(args.profile, args.params_root, args.json, args.batches, args.stale)
        except ValueError as error:
            parser.error(str(error))
    if args.batch is not None:
        if args.job is not None or (args.profile is None) == (args.plan is None) or args.overrides or args.out:
            parser.error("run --batch ID needs --profile PROFILE or --plan FILE (one of them) and takes no --job, key=value or --out")
        try:
            if args.plan is not None:
                profile, runs = grid.read_batch(args.plan, args.batch)
            else:
                profile, runs = args.profile, grid.find_batch(args.profile, args.batch, args.params_root)
        except ValueError as error:  # CorruptFileError too: it names the plan file
            parser.error(str(error))
        return run_batch(profile, args.batch, runs)
    if args.job is not None or args.profile is not None:
        if args.job is None or args.profile is None or args.overrides or args.out:
            parser.error("run --job ID needs --profile PROFILE and takes no key=value or --out (the profile sets both)")
        try:
            job = grid.find_run(args.profile, args.job, args.params_root)
        except ValueError as error:
            parser.error(str(error))
        config, out_dir = job.config, grid.runs_root(args.profile) / job.id
    else:
        try:
            config = Config.from_dict(dict(parse_override(o) for o in args.overrides))
        except ValueError as error:
            parser.error(str(error))
        out_dir = args.out or default_out_dir(config)
    results = run(config, out_dir)
    print(json.dumps(summary(results, out_dir), indent=2))
    return 0
