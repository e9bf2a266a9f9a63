"""Experiment drivers: what the notebooks call to turn their parameters into configs (``PLANNERS``,
the very functions the grid plans with), run them (``runs``), keep the classic strategies' tuned
points (``tuning``) and write the notebook's results JSON."""

from __future__ import annotations

import ast
import gc
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import Config, field_names, parse_override
from .errors import ConfigError, shorten
from .methods import variant
from .results import profile_folder, read_json, resolve, write_json
from .runs import on_shared_scenarios, load_learner, run_configs
from .task_inference import CRITERIA, check_class_incremental, class_incremental_report, parse_inference
from .tuning import NO_TUNING, at_point, select_on_validation, tuning_grid

NOTEBOOKS_DIR = resolve("notebooks")
# Runs one notebook's parameters may ask for: the default profile has 201 in all, the paper's a few
# hundred; a list of thousands of seeds is a mistake, and each run is validated (and later trained).
MAX_NOTEBOOK_RUNS = 10_000
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
    for name, value in (("methods", methods), ("seeds", seeds)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={shorten(value)} must be a list")
    for method in methods:
        variant(method)  # each a known name, before any is looked up
    grid = tuning_grid(tune, methods)
    count = sum(len(grid.get(method, [{}])) for method in methods) * len(seeds)
    if count > MAX_NOTEBOOK_RUNS:
        raise ConfigError(f"{len(methods)} methods x {len(seeds)} seeds (and their tuning grids) make {count} runs; at most {MAX_NOTEBOOK_RUNS} are allowed")
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
    if not isinstance(scenarios, Mapping) or not scenarios:
        raise ConfigError(f"scenarios={shorten(scenarios)}: give at least one scenario and its Config changes")
    found = []
    for scenario, changes in scenarios.items():
        if changes is not None and not isinstance(changes, Mapping):
            raise ConfigError(f"scenarios[{shorten(scenario)}]={shorten(changes)} must map Config fields to values")
        changes = dict(changes or {})
        own_methods = changes.pop("methods", methods)
        found.append(({**settings, "scenario": scenario, **changes}, own_methods))
    return found


def settings(overrides: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """Config fields from a notebook's parameters, plus ``"key=value"`` overrides for any other field."""
    if overrides is not None and not isinstance(overrides, list):
        raise ConfigError(f"overrides={shorten(overrides)} must be a list of 'key=value' strings")
    return {**fields, **dict(parse_override(o) for o in overrides or [])}


def results_file(results_path: str, profile: str, notebook: str) -> Path:
    """Where a notebook writes its results: ``results_path``, or results/<profile>/<notebook>.json."""
    return resolve(results_path) if results_path else profile_folder("results", profile) / f"{notebook}.json"


def class_incremental_runs(
    configs: list[Config], runs_root: str | Path, inference: list[str], tune: Mapping[str, dict[str, list]] | None = NO_TUNING,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Class-incremental results (``task_inference.class_incremental_report``) of every config, one
    record per way of inferring the task, and the tuning records of the single-head strategies
    (``select_on_validation``: chosen per seed on validation over ``tune``'s grid, as in T1); runs
    are loaded from their folders (trained first if missing).

    Sub-network methods infer the task by each of ``inference`` (``"entropy"`` per sample,
    ``"supsup@16"`` once per test batch of 16 samples of one task); single-head methods
    (``<classic>_single_head``) have one record, criterion ``"one_head"``.
    """
    if not inference:
        raise ConfigError(f"inference=[]: give one or more of {', '.join(CRITERIA)}, each alone or as <criterion>@<batch size>")
    for name in inference:
        parse_inference(name)
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


# --- each notebook's parameters -> its runs: the one function its driver and the grid both call ---


def notebook_defaults(stem: str) -> dict[str, Any]:
    """The values of a notebook's ``parameters`` cell (the one papermill executes), by name."""
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not path.is_file():
        raise ConfigError(f"no notebook {path} for parameter file {shorten(stem)}.yaml")
    cells = [c for c in read_json(path)["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(f"{path} has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    defaults = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defaults[node.target.id] = ast.literal_eval(node.value)
    return defaults


def parameters_of(stem: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook ``stem``'s parameters as they stand in ``namespace`` (a notebook passes its
    ``globals()``: the parameters cell as papermill or the user set it), by the names of its
    parameters cell: what the notebook's driver and the grid (from the parameter file) plan from."""
    return {name: namespace[name] for name in notebook_defaults(stem)}


def run_settings(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The Config fields a notebook's parameters set for all its runs: every parameter named as a
    Config field (``num_tasks: 0`` = the scenario's own number), and ``overrides`` for any other."""
    fields = {name: value for name, value in parameters.items() if name in field_names()}
    if "num_tasks" in fields:
        fields["num_tasks"] = fields["num_tasks"] or None
    return settings(parameters.get("overrides"), **fields)


def sparsity_configs(
    scenarios: dict[str, dict[str, Any]], variants: dict[str, dict[str, Any]], seeds: Sequence[int], settings: dict[str, Any]
) -> list[tuple[str, Config]]:
    """``(variant, config)`` of every scenario x variant x seed of the sparsity ablation, each config
    validated here: Ada-QPacknet on ``settings``, then the scenario's own changes (its network,
    batch size), then the variant's (``{"capacity_rule": "budget"}``, ``{"population": 4}``, ...)."""
    if not isinstance(variants, Mapping) or not variants or not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"the ablation needs a mapping of variants and a list of seeds (got {shorten(variants)}, {shorten(seeds)})")
    found = []
    extra = sorted({key for changes in scenarios.values() for key in (changes or {}) if key == "methods"})
    if extra:
        raise ConfigError(f"the sparsity ablation runs Ada-QPacknet only: a scenario's {extra} would be ignored; remove them")
    for scenario_settings, _ in per_scenario(settings, scenarios):
        scenario = scenario_settings["scenario"]
        for name, changes in variants.items():
            if changes is not None and not isinstance(changes, Mapping):
                raise ConfigError(f"variant {shorten(name)}={shorten(changes)} must map Config fields to values")
            merged = {**scenario_settings, **(changes or {})}
            try:
                configs = method_configs(["ada_qpacknet"], list(seeds), merged)
            except ValueError as error:
                raise ConfigError(f"scenario {shorten(scenario)}, variant {shorten(name)}: {error}") from None
            found.extend((name, config) for config in configs)
    return found


def scenario_configs(p: Mapping[str, Any]) -> list[Config]:
    """10-13: every method, every seed, every point of a classic strategy's grid."""
    return method_configs(p["methods"], p["seeds"], run_settings(p), p.get("tune"))


def class_incremental_configs(p: Mapping[str, Any]) -> list[Config]:
    """14: every method, seed and single-head grid point, on each scenario with its own settings."""
    return [
        config
        for scenario_settings, scenario_methods in per_scenario(run_settings(p), p["scenarios"], p["methods"])
        for config in method_configs(scenario_methods, p["seeds"], scenario_settings, p.get("tune"))
    ]


def float_configs(p: Mapping[str, Any]) -> list[Config]:
    """20: the float runs the quantisation sweep re-quantises, one per seed."""
    return method_configs(["ada_qpacknet_float"], p["seeds"], run_settings(p))


def sparsity_variants(p: Mapping[str, Any]) -> list[tuple[str, Config]]:
    """21: ``(variant, config)`` of Ada-QPacknet under each search and capacity variant, on each
    scenario (``sparsity_configs``); the notebook names its runs by variant."""
    return sparsity_configs(p["scenarios"], p["variants"], p["seeds"], run_settings(p))


def sparsity_variant_configs(p: Mapping[str, Any]) -> list[Config]:
    """21's runs (``sparsity_variants``)."""
    return [config for _, config in sparsity_variants(p)]


# How each experiment notebook turns its parameters into runs: its driver below runs exactly these,
# and the grid (grid.plan) trains exactly these, so the two cannot drift apart. A notebook that is
# not listed (00_method_tour trains one task inline; a notebook of your own) gets no jobs.
PLANNERS: dict[str, Callable[[Mapping[str, Any]], list[Config]]] = {
    "10_permuted": scenario_configs,
    "11_split": scenario_configs,
    "12_five_datasets": scenario_configs,
    "13_tinyimagenet": scenario_configs,
    "14_class_incremental": class_incremental_configs,
    "20_ablation_quantization": float_configs,
    "21_ablation_sparsity": sparsity_variant_configs,
}


def scenario_notebook(notebook: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The body of notebooks 10-13 (``parameters_of``): run the methods over the seeds (the classic
    strategies over their grid, ``tuning_grid``), keep each tuned strategy's best point per seed on
    validation, write the results JSON (``runs``: one per method and seed; ``tuning``: every point tried)."""
    p, profile = parameters, parameters["profile"]
    tried = run_configs(PLANNERS[notebook](p), profile_folder("runs", profile))
    runs, tuning = select_on_validation(tried, p["tune"])
    recorded = {"methods": p["methods"], "seeds": p["seeds"], "settings": run_settings(p), "tune": p["tune"]}
    results = notebook_results(notebook, profile, recorded, runs=runs, tuning=tuning)
    write_notebook_results(results_file(p["results_path"], profile, notebook), results)
    return results


def class_incremental_notebook(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The body of notebook 14 (``parameters_of``): the class-incremental records of its runs
    (``class_incremental_runs``); returns its results, written by the notebook's last cell."""
    p = parameters
    configs = PLANNERS["14_class_incremental"](p)
    records, tuning = class_incremental_runs(configs, profile_folder("runs", p["profile"]), p["inference"], p["tune"])
    recorded = {key: p[key] for key in ("scenarios", "methods", "inference", "seeds")}
    recorded.update(settings=run_settings(p), tune=p["tune"])
    return notebook_results("14_class_incremental", p["profile"], recorded, class_incremental=records, tuning=tuning)


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


