"""Experiment drivers: what the notebooks (and the grid, ``grid.PLANNERS``) call to turn their
parameters into configs, run them (``runs``), tune the classic strategies (``tuning``) and write
the notebook's results JSON."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable, Mapping

from .config import Config, parse_override
from .methods import variant
from .results import profile_folder, read_json, resolve, write_json
from .runs import on_shared_scenarios, load_learner, run_configs
from .task_inference import CRITERIA, check_class_incremental, class_incremental_report, parse_inference
from .tuning import NO_TUNING, at_point, select_on_validation, tuning_grid

NOTEBOOK_SCHEMA_VERSION = 4  # 4: 14 records its single-head tuning, tuning records say "edge"; 3: scenario notebooks record their classic strategies' tuning; 2: class-incremental inference names


def method_config(method: str, settings: dict[str, Any], seed: int) -> Config:
    """The Config of variant ``method`` (``methods.VARIANTS``) on ``settings`` with ``seed``; bad
    names and values fail here.

    Every method trains ``epochs + finetune_epochs`` epochs per task (``Config.epochs_per_task``).
    """
    changes = variant(method)
    settings = dict(settings)
    if settings.get("data_root"):
        settings["data_root"] = str(resolve(settings["data_root"]))
    return Config.from_dict({**settings, **changes, "seed": seed})


def method_configs(
    methods: list[str], seeds: list[int], settings: dict[str, Any], tune: Mapping[str, dict[str, list]] | None = NO_TUNING,
) -> list[Config]:
    """The Config of every (method, seed), methods outermost; every one is validated here. A method
    that ``tune`` names (``tuning_grid``) has one config per point of its grid and seed."""
    grid = tuning_grid(tune, methods)
    configs = []
    for method in methods:
        for point in grid.get(method, [{}]):
            for seed in seeds:
                configs.append(at_point(method_config(method, settings, seed), point))
    return configs


def per_scenario(
    settings: dict[str, Any], scenarios: dict[str, dict[str, Any]], methods: list[str] | None = None
) -> list[tuple[dict[str, Any], list[str] | None]]:
    """``(settings, methods)`` of each scenario of a notebook that runs several: ``settings`` with
    the scenario and the scenario's own Config changes (its network, its batch size); a scenario's
    ``methods`` entry replaces ``methods`` for that scenario."""
    if not scenarios:
        raise ValueError("scenarios={}: give at least one scenario and its Config changes")
    found = []
    for scenario, changes in scenarios.items():
        changes = dict(changes or {})
        own_methods = changes.pop("methods", methods)
        found.append(({**settings, "scenario": scenario, **changes}, own_methods))
    return found


def settings(overrides: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """Config fields from a notebook's parameters, plus ``"key=value"`` overrides for any other field."""
    return {**fields, **dict(parse_override(o) for o in overrides or [])}


def results_file(results_path: str, profile: str, notebook: str) -> Path:
    """Where a notebook writes its results: ``results_path``, or results/<profile>/<notebook>.json."""
    return resolve(results_path) if results_path else profile_folder("results", profile) / f"{notebook}.json"


def run_methods(
    methods: list[str], seeds: list[int], settings: dict[str, Any], runs_root: str | Path,
    tune: Mapping[str, dict[str, list]] | None = NO_TUNING,
) -> list[dict[str, Any]]:
    """Results of every (method, seed) and tuning point, each run resumed from its folder when it exists.

    Every config is built (and so validated) before the first run starts.
    """
    return run_configs(method_configs(methods, seeds, settings, tune), runs_root)


def scenario_notebook(
    notebook: str, profile: str, results_path: str, methods: list[str], seeds: list[int], settings: dict[str, Any],
    tune: dict[str, dict[str, list]] | None = None,
) -> dict[str, Any]:
    """The body of every scenario notebook: run the methods over the seeds (the classic strategies
    over their grid, ``tuning_grid``), keep each tuned strategy's best point per seed on validation,
    write the results JSON (``runs``: one per method and seed; ``tuning``: every point tried)."""
    tried = run_methods(methods, seeds, settings, profile_folder("runs", profile), tune)
    runs, tuning = select_on_validation(tried, tune)
    parameters = {"methods": methods, "seeds": seeds, "settings": settings, "tune": tune}
    results = notebook_results(notebook, profile, parameters, runs=runs, tuning=tuning)
    write_notebook_results(results_file(results_path, profile, notebook), results)
    return results


def class_incremental_runs(
    methods: list[str], seeds: list[int], settings: dict[str, Any], runs_root: str | Path, inference: list[str],
    tune: Mapping[str, dict[str, list]] | None = NO_TUNING,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Class-incremental results (``task_inference.class_incremental_report``) of every (method,
    seed), one record per way of inferring the task, and the tuning records of the single-head
    strategies (``select_on_validation``: chosen per seed on validation over ``tune``'s grid, as in
    T1); runs are loaded from their folders (trained first if missing).

    Sub-network methods infer the task by each of ``inference`` (``"entropy"`` per sample,
    ``"supsup@16"`` once per test batch of 16 samples of one task); single-head methods
    (``<classic>_single_head``) have one record, criterion ``"one_head"``.
    """
    if not inference:
        raise ValueError(f"inference=[]: give one or more of {', '.join(CRITERIA)}, each alone or as <criterion>@<batch size>")
    for name in inference:
        parse_inference(name)
    configs = method_configs(methods, seeds, settings, tune)
    for config in configs:
        check_class_incremental(config.method, config.heads)
    tried = run_configs(configs, runs_root)
    chosen, tuning = select_on_validation(tried, tune)
    chosen_ids = {id(run) for run in chosen}
    kept = [config for config, run in zip(configs, tried) if id(run) in chosen_ids]
    by_config: list[list[dict[str, Any]]] = [[] for _ in kept]
    for index, config, scenario in on_shared_scenarios(kept):
        learner = load_learner(config, runs_root, scenario)
        for name, report in class_incremental_report(learner, inference).items():
            by_config[index].append({
                "method": config.label, "scenario": config.scenario, "model": learner.model_name, "seed": config.seed,
                "num_tasks": len(learner.per_task), "inference": name, "config": config.to_dict(), **report,
            })
        cycles, learner = learner.holds_cycles, None
        if cycles:
            gc.collect()  # as in run_configs
    records = [record for found in by_config for record in found]
    return records, tuning


def notebook_results(notebook: str, profile: str, parameters: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """The results JSON every notebook writes: what ran, with which parameters, and its data."""
    return {
        "schema_version": NOTEBOOK_SCHEMA_VERSION,
        "notebook": notebook,
        "profile": profile,
        "parameters": parameters,
        **sections,
    }


def write_notebook_results(path: str | Path, data: dict[str, Any]) -> Path:
    """Write a notebook's results atomically; it is the make target, so it is written last."""
    path = resolve(path)
    write_json(path, data)
    print(f"results written to {path}")
    return path


def read_notebook_results(folder: str | Path, keep: Callable[[dict[str, Any]], bool] = lambda d: True) -> list[dict[str, Any]]:
    """Every notebook results JSON in ``folder`` (sorted by name) that ``keep`` accepts."""
    found = [read_json(p) for p in sorted(resolve(folder).glob("*.json"))]
    return [d for d in found if keep(d)]


