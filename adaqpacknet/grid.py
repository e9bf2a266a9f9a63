"""The runs a parameter profile needs, listed without executing a notebook: one job per run.

A profile is a folder of parameter files, one per notebook (``notebooks/params/<profile>/<nb>.yaml``).
Each experiment notebook turns its parameters (the notebook's defaults, overridden by the file)
into runs, and a run's folder is named by its config (``experiments.run_dir``). This module makes
the same configs from the same parameters, so that a workflow engine (``workflow/Snakefile``) can
train every run as an independent job, in parallel or on a cluster, before the notebooks execute:
the notebooks then find their runs finished in the run cache, and only aggregate, tabulate and
plot. A notebook asked for a run that no job trained (one this module does not know how to plan)
still trains it itself, as it always did.

A notebook parameter whose name is a ``Config`` field is a setting of every run of that notebook
(``num_tasks: 0`` means the scenario's own number); ``overrides`` adds any other field. The
notebooks build their settings the same way, and ``tests/test_notebooks.py`` checks that the runs
the smoke profile's notebooks read are exactly the runs listed here.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from . import experiments
from .ablations import sparsity_configs
from .config import Config, field_names

NOTEBOOKS_DIR = experiments.resolve("notebooks")
PARAMS_ROOT = "notebooks/params"
REPORT_PREFIX = "9"  # 90_tables, 91_figures: they read every experiment notebook's results


@dataclass(frozen=True)
class Run:
    """One run of a profile: its config and the folder it trains into (``runs/<profile>/<id>``)."""

    id: str  # "<scenario>/<method label>/<config hash>-seed<seed>", a path under runs/<profile>
    config: Config
    notebooks: tuple[str, ...]  # the notebooks that read it


@dataclass(frozen=True)
class Plan:
    """Every run of a profile and which notebook reads which run."""

    profile: str
    params_dir: Path
    notebooks: dict[str, tuple[str, ...]]  # notebook stem -> ids of the runs it reads (reports: none)
    runs: dict[str, Run]  # run id -> run

    @property
    def runs_root(self) -> Path:
        return runs_root(self.profile)

    def experiments(self) -> list[str]:
        """Notebooks that produce results (everything but the reports)."""
        return [stem for stem in self.notebooks if not stem.startswith(REPORT_PREFIX)]

    def reports(self) -> list[str]:
        """Notebooks that read every experiment notebook's results (tables, figures)."""
        return [stem for stem in self.notebooks if stem.startswith(REPORT_PREFIX)]


def runs_root(profile: str) -> Path:
    """Where a profile's runs live: ``runs/<profile>`` under the repository root (as the notebooks have it)."""
    return experiments.profile_folder("runs", profile)


def notebook_defaults(stem: str) -> dict[str, Any]:
    """The values of a notebook's ``parameters`` cell (the one papermill executes), by name."""
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not path.is_file():
        raise ValueError(f"no notebook {path} for parameter file {stem}.yaml")
    cells = [c for c in json.loads(path.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    defaults = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defaults[node.target.id] = ast.literal_eval(node.value)
    return defaults


def notebook_parameters(stem: str, params_dir: Path) -> dict[str, Any]:
    """A notebook's defaults overridden by its parameter file; unknown names are an error."""
    defaults = notebook_defaults(stem)
    path = params_dir / f"{stem}.yaml"
    given = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{path}: {unknown} are not parameters of notebooks/{stem}.ipynb (it has {sorted(defaults)})")
    return {**defaults, **given}


def run_settings(parameters: dict[str, Any]) -> dict[str, Any]:
    """The Config fields a notebook's parameters set for all its runs (see the module docstring)."""
    fields = {name: value for name, value in parameters.items() if name in field_names()}
    if "num_tasks" in fields:
        fields["num_tasks"] = fields["num_tasks"] or None
    return experiments.settings(parameters.get("overrides"), **fields)


def _methods_over_seeds(p: dict[str, Any]) -> list[Config]:
    # 10-13 (scenario notebooks): every method, every seed, every point of a classic strategy's grid.
    return experiments.method_configs(p["methods"], p["seeds"], run_settings(p), p.get("classic_epochs") or None, p.get("tune"))


def _class_incremental(p: dict[str, Any]) -> list[Config]:
    # 14: every method, every seed, on each scenario with its own settings.
    return [
        config
        for settings, classic_epochs, methods in experiments.per_scenario(run_settings(p), p["scenarios"], p["methods"])
        for config in experiments.method_configs(methods, p["seeds"], settings, classic_epochs)
    ]


def _float_runs(p: dict[str, Any]) -> list[Config]:
    # 20: the quantisation sweep re-quantises float runs.
    return experiments.method_configs(["ada_qpacknet_float"], p["seeds"], run_settings(p))


def _sparsity_variants(p: dict[str, Any]) -> list[Config]:
    # 21: Ada-QPacknet under each search and capacity variant, on each scenario.
    return [config for _, config in sparsity_configs(p["scenarios"], p["variants"], p["seeds"], run_settings(p))]


# How each experiment notebook turns its parameters into runs. A notebook that is not listed
# (00_method_tour trains one task inline; a notebook of your own) gets no jobs: it runs as one job.
PLANNERS: dict[str, Callable[[dict[str, Any]], list[Config]]] = {
    "10_permuted": _methods_over_seeds,
    "11_split": _methods_over_seeds,
    "12_five_datasets": _methods_over_seeds,
    "13_tinyimagenet": _methods_over_seeds,
    "14_class_incremental": _class_incremental,
    "20_ablation_quantization": _float_runs,
    "21_ablation_sparsity": _sparsity_variants,
}


def plan(profile: str, params_root: str | Path = PARAMS_ROOT) -> Plan:
    """Every run of ``profile`` (each config validated), and the runs each notebook reads.

    Raises ValueError naming the profile folder, the parameter file or the bad value.
    """
    root = experiments.resolve(params_root)
    params_dir = root / profile
    if not params_dir.is_dir():
        choices = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise ValueError(f"no profile {profile!r}: {params_dir} does not exist (profiles: {', '.join(choices) or 'none'})")
    stems = sorted(p.stem for p in params_dir.glob("*.yaml"))
    if not stems:
        raise ValueError(f"profile {profile!r} has no parameter files in {params_dir}")
    readers: dict[str, list[str]] = {}
    configs: dict[str, Config] = {}
    notebooks: dict[str, tuple[str, ...]] = {}
    for stem in stems:
        parameters = notebook_parameters(stem, params_dir)
        planner = PLANNERS.get(stem)
        try:
            planned = planner(parameters) if planner else []
        except (ValueError, KeyError) as error:
            raise ValueError(f"{params_dir / stem}.yaml: {error}") from None
        ids = []
        for config in planned:
            run_id = experiments.run_dir(config, runs_root(profile)).relative_to(runs_root(profile)).as_posix()
            if run_id not in configs:
                configs[run_id] = config
                readers[run_id] = []
            if stem not in readers[run_id]:
                readers[run_id].append(stem)
                ids.append(run_id)
        notebooks[stem] = tuple(ids)
    runs = {run_id: Run(run_id, configs[run_id], tuple(readers[run_id])) for run_id in configs}
    return Plan(profile=profile, params_dir=params_dir, notebooks=notebooks, runs=runs)


def find_run(profile: str, run_id: str, params_root: str | Path = PARAMS_ROOT) -> Run:
    """The run ``run_id`` of ``profile``; an id the profile does not plan is an error."""
    runs = plan(profile, params_root).runs
    if run_id not in runs:
        shown = ", ".join(list(runs)[:5]) + (" ..." if len(runs) > 5 else "")
        raise ValueError(
            f"profile {profile!r} has no run {run_id!r} ({len(runs)} runs: {shown}); "
            f"list them with `python -m adaqpacknet runs {profile}`"
        )
    return runs[run_id]
