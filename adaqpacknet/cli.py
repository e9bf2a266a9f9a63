"""Command line: ``python -m adaqpacknet run [--out DIR] key=value ...``.

Values are parsed by the type of the ``Config`` field they set (``none`` for an optional
field), so ``lr=1e-3`` is a float and ``download=true`` a bool; an unknown key or a bad value
fails before any data is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import Config
from .learner import run

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
    except (ValueError, KeyError):
        raise ValueError(f"{key}={raw!r} is not a valid {kind}") from None
    return key, raw


def default_out_dir(config: Config) -> Path:
    """``runs/<scenario>/<method>-seed<seed>`` under the current directory."""
    return Path("runs") / config.scenario / f"{config.method}-seed{config.seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaqpacknet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="learn every task of a scenario and write results.json")
    run_parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<scenario>/<method>-seed<seed>)")
    run_parser.add_argument("overrides", nargs="*", metavar="key=value", help="Config fields, e.g. epochs=3 seed=1")
    args = parser.parse_args(argv)
    try:
        config = Config.from_dict(dict(parse_override(o) for o in args.overrides))
    except ValueError as error:
        parser.error(str(error))
    out_dir = args.out or default_out_dir(config)
    results = run(config, out_dir)
    summary = {k: results[k] for k in ("method", "scenario", "seed", "acc", "bwt", "forgetting", "bit_widths")}
    summary["capacity_used"] = results["capacity_used"]["total"]
    summary["results"] = str(Path(out_dir) / "results.json")
    print(json.dumps(summary, indent=2))
    return 0
