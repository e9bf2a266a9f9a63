"""Command line: ``python -m adaqpacknet run [--out DIR] key=value ...`` (and ``runs``, ``check-data``, ``verify-packed``).

``runs PROFILE`` lists the runs a parameter profile needs (one job each, ``adaqpacknet.grid``), and
``run --profile PROFILE --job ID`` trains exactly one of them into its run folder: the command the
workflow engine (workflow/Snakefile) runs for every job. Values of ``key=value`` are parsed by the type of the ``Config`` field they set (``none`` for an optional
field), so ``lr=1e-3`` is a float and ``download=true`` a bool; an unknown key or a bad value
fails before any data is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import grid
from .config import Config, parse_override
from .experiments import verify_packed_run
from .methods import run
from .results import PACKAGE_ROOT, CorruptFileError


def default_out_dir(config: Config) -> Path:
    """``runs/<scenario>/<method>-seed<seed>`` under the current directory."""
    return Path("runs") / config.scenario / f"{config.label}-seed{config.seed}"


def check_profile_data(profile_dir: Path) -> int:
    """Fail (exit 1, naming every missing dataset) before a profile trains anything."""
    import yaml

    from .data import DatasetNotFoundError, check_data_available

    files = sorted(profile_dir.glob("*.yaml"))
    if not files:
        print(f"error: no parameter files in {profile_dir}", file=sys.stderr)
        return 1
    problems, checked = [], set()
    for path in files:
        params = yaml.safe_load(path.read_text()) or {}
        if "scenario" not in params:
            continue
        root = params.get("data_root", "data")
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
    """Print the per-task check of ``experiments.verify_packed_run``; exit 1 on any mismatch."""
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


def list_runs(profile: str, params_root: str, as_json: bool) -> int:
    """Print every run of a profile: its job id, method, seed and the notebooks that read it."""
    plan = grid.plan(profile, params_root)
    if as_json:
        rows = [
            {"id": r.id, "folder": str(plan.runs_root / r.id), "scenario": r.config.scenario, "method": r.config.label,
             "seed": r.config.seed, "notebooks": list(r.notebooks), "config": r.config.to_dict()}
            for r in plan.runs.values()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for r in plan.runs.values():
        print(f"{r.id}\t{r.config.label}\tseed {r.config.seed}\t{','.join(r.notebooks)}")
    print(f"{len(plan.runs)} runs in profile {profile!r}, read by {len(plan.notebooks)} notebooks", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaqpacknet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="learn every task of a scenario and write results.json")
    run_parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<scenario>/<method>-seed<seed>)")
    run_parser.add_argument("overrides", nargs="*", metavar="key=value", help="Config fields, e.g. epochs=3 seed=1")
    run_parser.add_argument("--profile", default=None, help="with --job: the parameter profile that plans the run")
    run_parser.add_argument("--job", default=None, help="a run id from `runs PROFILE`: train exactly that run, into runs/<profile>/<id>")
    run_parser.add_argument("--params-root", default=grid.PARAMS_ROOT, help=f"folder of profile folders (default {grid.PARAMS_ROOT})")
    runs_parser = sub.add_parser("runs", help="list the runs a parameter profile needs, one job each")
    runs_parser.add_argument("profile", help="a profile name: a folder of parameter files under --params-root")
    runs_parser.add_argument("--params-root", default=grid.PARAMS_ROOT, help=f"folder of profile folders (default {grid.PARAMS_ROOT})")
    runs_parser.add_argument("--json", action="store_true", help="one JSON record per run, with its full config")
    check_parser = sub.add_parser("check-data", help="check that every scenario of a parameter profile has its data")
    check_parser.add_argument("profile_dir", type=Path, help="a folder of notebook parameter files, e.g. notebooks/params/paper")
    verify_parser = sub.add_parser(
        "verify-packed", help="reload a finished run from its packed file and check every task against its results"
    )
    verify_parser.add_argument("run_dir", type=Path, help="a run folder holding results.json and packed.safetensors")
    verify_parser.add_argument("--data-root", default=None, help="data folder (default: the repository's data/); nothing is downloaded")
    args = parser.parse_args(argv)
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
            return list_runs(args.profile, args.params_root, args.json)
        except ValueError as error:
            parser.error(str(error))
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
    summary = {k: results.get(k) for k in ("method", "scenario", "seed", "acc", "bwt", "forgetting", "model_bytes", "bit_widths")}
    summary["capacity_used"] = results.get("capacity_used", {}).get("total")  # methods with owners or masks
    summary["results"] = str(Path(out_dir) / "results.json")
    print(json.dumps(summary, indent=2))
    return 0
