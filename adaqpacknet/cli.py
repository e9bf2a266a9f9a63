"""Command line: ``python -m adaqpacknet run [--out DIR] key=value ...`` (and ``check-data``, ``verify-packed``).

Values are parsed by the type of the ``Config`` field they set (``none`` for an optional
field), so ``lr=1e-3`` is a float and ``download=true`` a bool; an unknown key or a bad value
fails before any data is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .config import Config
from .methods import run
from .results import PACKAGE_ROOT

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, typed value)`` using the type of the Config field."""
    if "=" not in text:
        raise ValueError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    fields = {f.name: str(f.type) for f in dataclasses.fields(Config)}
    if key not in fields:
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(fields)}")
    kind = fields[key]
    if kind.endswith("| None") and raw.lower() == "none":
        return key, None
    kind = kind.replace(" | None", "")
    try:
        if kind == "int":
            return key, int(raw)
        if kind == "float":
            return key, float(raw)
        if kind == "bool":
            return key, _BOOLS[raw.lower()]
        if kind == "list":  # comma-separated numbers, e.g. prune_ratios=0.75,0.5
            return key, [float(v) for v in raw.split(",")]
    except (ValueError, KeyError):
        raise ValueError(f"{key}={raw!r} is not a valid {kind}") from None
    return key, raw


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
    from .experiments import verify_packed_run  # experiments imports this module

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaqpacknet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="learn every task of a scenario and write results.json")
    run_parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<scenario>/<method>-seed<seed>)")
    run_parser.add_argument("overrides", nargs="*", metavar="key=value", help="Config fields, e.g. epochs=3 seed=1")
    check_parser = sub.add_parser("check-data", help="check that every scenario of a parameter profile has its data")
    check_parser.add_argument("profile_dir", type=Path, help="a folder of notebook parameter files, e.g. notebooks/params/paper")
    verify_parser = sub.add_parser(
        "verify-packed", help="reload a finished run from its packed file and check every task against its results"
    )
    verify_parser.add_argument("run_dir", type=Path, help="a run folder holding results.json and packed.safetensors")
    verify_parser.add_argument("--data-root", default=None, help="data folder, if not the one the run used")
    args = parser.parse_args(argv)
    if args.command == "check-data":
        return check_profile_data(args.profile_dir)
    if args.command == "verify-packed":
        return verify_packed(args.run_dir, args.data_root)
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
