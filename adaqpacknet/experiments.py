"""Experiment drivers for the notebooks: run methods over seeds, cache runs, write notebook results.

A run's folder is named by a hash of its config, so two notebooks asking for the same run share
it (the second resumes a finished checkpoint and returns at once), and a changed parameter gets a
folder of its own.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import re
import traceback
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors import safe_open

from .config import AVALANCHE_METHODS, CLASSIC_METHODS, Config, parse_override
from .continual import RESUME_FREE_KEYS, ContinualLearner, scenario_of
from .data import Scenario
from .methods import learner_for, run_learner
from .packing import PACKED_FILE, PROBES_FILE, PackedNetwork, probe_batch
from .task_inference import CRITERIA, check_class_incremental, class_incremental_report, parse_inference
from .results import PACKAGE_ROOT, SCHEMA_VERSION, CorruptFileError, read_json, write_json
from .training import evaluate

NOTEBOOK_SCHEMA_VERSION = 4  # 4: 14 records its single-head tuning, tuning records say "edge"; 3: scenario notebooks record their classic strategies' tuning; 2: class-incremental inference names

# Each method is a set of Config changes on top of a notebook's settings.
METHODS: dict[str, dict[str, Any]] = {
    "ada_qpacknet": {},
    "ada_qpacknet_float": {"quantizer": "none"},
    # Every task an equal share of the pool left for it and the tasks to come (Config.capacity_rule).
    "ada_qpacknet_budget": {"capacity_rule": "budget"},
    # The budget variant with one candidate: total gradient steps per task equal to every other method's.
    "ada_qpacknet_budget_p1": {"capacity_rule": "budget", "population": 1},
    "packnet": {"method": "packnet", "quantizer": "none", "population": 1},
    "wsn": {"method": "wsn"},
    "independent": {"method": "independent"},
    "joint": {"method": "joint"},
    **{name: {"method": name} for name in AVALANCHE_METHODS},
    # Class-incremental: one head over every class, no task ids (adaqpacknet.task_inference).
    **{f"{name}_single_head": {"method": name, "heads": "single"} for name in CLASSIC_METHODS},
}


# The key hyperparameter of each regularisation strategy and the factors of its configured value
# tried on validation (the `tune` parameter of notebooks 10-14; None there means this grid, {} no
# tuning). A factor scales the run's own setting (an int setting is rounded). Each point is a run of
# its own; each seed keeps the point whose final network has the best mean validation accuracy over
# the tasks (select_on_validation), as Ada-QPacknet chooses its ratios and bits on validation; a
# point chosen at an end of its grid is marked as an edge in T1 and T1c. EWC's and SI's lambdas go up
# from the ContinualAI baselines' 1.0 (avalanche's importances are small): with 1 epoch per task the
# default profile chose 10-100 for EWC, 100 (the grid's end) for SI and 2 (the end) for LwF's alpha,
# where 4 was better still, so the grids are centred there. Replay, GEM and A-GEM are not tuned: their
# memory is a resource budget, fixed and the same for the three (the profiles' overrides), not a
# hyperparameter to tune upwards. LwF's temperature stays at its setting: one key per strategy.
NO_TUNING: Mapping[str, dict[str, list]] = MappingProxyType({})  # every strategy at its Config values
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Config)}  # "int", "float", ... (string annotations)
CLASSIC_GRID: dict[str, dict[str, list[float]]] = {
    "ewc": {"ewc_lambda": [10, 100, 1000]},
    "si": {"si_lambda": [10, 100, 1000]},
    "lwf": {"lwf_alpha": [1, 2, 4]},
}


def resolve(path: str | Path) -> Path:
    """A path relative to the repository root (notebooks run with another working directory)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PACKAGE_ROOT / path


def config_hash(config: Config) -> str:
    """Short hash of the settings that change results (not progress bars, device or data path)."""
    relevant = {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE_KEYS}
    # A new results schema gets new folders: runs of an older package version are not reused.
    relevant["schema_version"] = SCHEMA_VERSION
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]


def run_dir(config: Config, runs_root: str | Path) -> Path:
    """``<runs_root>/<scenario>/<method>/<config hash>-seed<seed>``."""
    return resolve(runs_root) / config.scenario / config.label / f"{config_hash(config)}-seed{config.seed}"


def method_config(method: str, settings: dict[str, Any], seed: int) -> Config:
    """The Config of ``method`` on ``settings`` with ``seed``; bad names and values fail here.

    Every method trains ``epochs + finetune_epochs`` epochs per task (``Config.epochs_per_task``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(METHODS)}")
    settings = dict(settings)
    if settings.get("data_root"):
        settings["data_root"] = str(resolve(settings["data_root"]))
    return Config.from_dict({**settings, **METHODS[method], "seed": seed})


def tuning_grid(tune: Mapping[str, dict[str, list]] | None, methods: list[str]) -> dict[str, list[dict[str, float]]]:
    """``tune`` (None = CLASSIC_GRID) as method -> its points, each ``{Config field: factor}``, for
    each of ``methods`` (names of METHODS or run labels) whose classic strategy it names: ``ewc``'s
    grid also tunes ``ewc_single_head``. A key that is not a classic strategy, a field that is not a
    numeric Config field or a factor that is not a positive number is an error."""
    tune = CLASSIC_GRID if tune is None else tune
    if not isinstance(tune, Mapping):
        raise ValueError(f"tune={tune!r} must map a classic strategy to {{Config field: [values]}} (None = the default grid)")
    points = {}
    for method, fields in tune.items():
        if method not in CLASSIC_METHODS:
            raise ValueError(f"tune names {method!r}: only the classic strategies are tuned ({', '.join(CLASSIC_METHODS)})")
        if not isinstance(fields, dict) or not fields or not all(isinstance(v, list) and v for v in fields.values()):
            raise ValueError(f"tune[{method!r}]={fields!r} must map Config fields to non-empty lists of values")
        unknown = sorted(f for f in fields if _FIELD_TYPES.get(f) not in ("int", "float"))
        if unknown:
            raise ValueError(f"tune[{method!r}] names {unknown}, which are not numeric Config fields")
        bad = [v for values in fields.values() for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0]
        if bad:
            raise ValueError(f"tune[{method!r}] has factors {bad}: each must be a number > 0 (a factor of the configured value)")
        for name in methods:
            if METHODS.get(name, {}).get("method") == method:
                points[name] = [dict(zip(fields, values)) for values in itertools.product(*fields.values())]
    return points


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
                config = method_config(method, settings, seed)
                configs.append(config.replace(**{field: _scaled(config, field, factor) for field, factor in point.items()}))
    return configs


def _scaled(config: Config, field: str, factor: float) -> float:
    """``config``'s ``field`` times ``factor``, rounded where the field is an int (a memory size)."""
    value = getattr(config, field) * factor
    return round(value) if _FIELD_TYPES[field] == "int" else float(value)


def select_on_validation(runs: list[dict[str, Any]], tune: Mapping[str, dict[str, list]] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs with each tuned strategy's best grid point per seed, in their order, and one record
    per (strategy, seed): every point's final validation accuracy (the choice) and test accuracy
    (reported, never used), the chosen point, and ``edge``: whether a chosen value is the smallest or
    largest of its field's grid (the optimum may lie beyond). On a tie the earlier point is kept."""
    grid = tuning_grid(tune, sorted({r["method"] for r in runs}))
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        if run["method"] in grid:
            groups.setdefault((run["scenario"], run["method"], run["seed"]), []).append(run)
    chosen_ids, records = set(), []
    for (_, method, seed), group in groups.items():
        best = max(group, key=lambda r: r["validation"]["acc"])  # max keeps the first of equals
        chosen_ids.add(id(best))
        fields = list(grid[method][0])
        records.append({
            "method": method, "seed": seed, "scenario": best["scenario"], "fields": fields,
            "points": [
                {"values": {f: r["config"][f] for f in fields}, "validation_acc": r["validation"]["acc"], "test_acc": r["acc"]}
                for r in group
            ],
            "chosen": {f: best["config"][f] for f in fields},
            "edge": at_grid_edge({f: best["config"][f] for f in fields}, [{f: r["config"][f] for f in fields} for r in group]),
        })
    return [r for r in runs if r["method"] not in grid or id(r) in chosen_ids], records


def at_grid_edge(point: Mapping[str, float], grid: list[Mapping[str, float]]) -> bool:
    """Whether a value of ``point`` is the smallest or largest its field takes in ``grid`` (a field
    with one value is no edge): a choice there may have its optimum beyond the grid."""
    return any(
        value in (min(p[field] for p in grid), max(p[field] for p in grid))
        for field, value in point.items() if len({p[field] for p in grid}) > 1
    )


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


PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def profile_folder(kind: str, profile: str) -> Path:
    """``<kind>/<profile>`` under the repository root (runs, results, tables, figures). A profile is
    a simple name: a notebook's ``profile`` parameter must not lead its outputs anywhere else."""
    if not isinstance(profile, str) or not PROFILE_NAME.fullmatch(profile):
        raise ValueError(f"profile={profile!r} is not a profile name: letters, digits, '_', '.', '-' (e.g. 'default')")
    return resolve(f"{kind}/{profile}")


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


def data_key(config: Config) -> tuple:
    """The Config fields that build a run's scenario: equal keys, identical tensors (``build_scenario``)."""
    return (config.scenario, config.seed, config.data_root, config.num_tasks, config.val_fraction, config.class_order)


def on_shared_scenarios(configs: list[Config]) -> Iterator[tuple[int, Config, Scenario]]:
    """``(index, config, scenario)`` for every config, grouped by their data (``data_key``, groups
    in order of first appearance, each group in its order), each group on one built Scenario: one
    scenario's tensors are alive at a time, and the classic strategies' float copies of its training
    images (``classic._train_inputs``) are made once per group."""
    keys = [data_key(config) for config in configs]
    first = {key: keys.index(key) for key in keys}
    shared: tuple[tuple, Scenario] | None = None
    for index in sorted(range(len(configs)), key=lambda i: first[keys[i]]):
        if shared is None or shared[0] != keys[index]:
            shared = None  # the previous scenario's tensors go before the next one's are built
            shared = (keys[index], scenario_of(configs[index]))
        yield index, configs[index], shared[1]


def run_configs(configs: list[Config], runs_root: str | Path, keep_going: bool = False) -> list[dict[str, Any] | None]:
    """Results of every config (validated beforehand), in their order, each run resumed from its
    folder when it exists.

    The runs go grouped by their data, each group on one Scenario (``on_shared_scenarios``): a
    notebook's runs or a batch of runs (``grid.Plan.batches``) build each scenario once. Each run's
    results are those it gets alone. With ``keep_going``, a run that fails is reported (its
    traceback on stderr, its result None) and the runs after it still train; without, its error
    stops the loop.
    """
    results: list[dict[str, Any] | None] = [None] * len(configs)
    for number, (index, config, scenario) in enumerate(on_shared_scenarios(configs), start=1):
        print(f"run {number}/{len(configs)}: {config.label} on {config.scenario}, seed {config.seed}", flush=True)
        learner = None
        try:
            learner = learner_for(config, scenario)
            results[index] = run_learner(learner, run_dir(config, runs_root))
        except Exception:
            if not keep_going:
                raise
            traceback.print_exc()
            print(f"run {number}/{len(configs)} FAILED: {run_dir(config, runs_root)}", flush=True)
        # A learner that holds reference cycles (``ContinualLearner.holds_cycles``: a classic
        # strategy that trained here, 1.6 GB of float tensors and state on permuted Fashion-MNIST)
        # is freed only when the cyclic collector runs: 21 of them took a notebook to 15 GB. Collect
        # at once, and only then (~0.25 s a collection with avalanche imported). The shared float
        # copies stay, for the next run.
        if learner is not None:
            cycles, learner = learner.holds_cycles, None
            if cycles:
                gc.collect()
    return results


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


def load_learner(config: Config, runs_root: str | Path, scenario: Scenario | None = None) -> ContinualLearner:
    """A learner restored from the finished run of ``config`` (run first if needed), on ``scenario``
    when given (it must be ``config``'s data: ``on_shared_scenarios``)."""
    learner = learner_for(config, scenario)
    run_learner(learner, run_dir(config, runs_root))
    return learner


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


def verify_packed_run(folder: str | Path, data_root: str | None = None) -> dict[str, Any]:
    """Reload a finished run from its packed file alone and check it against the run's results.

    For every task: the test accuracy of the packed file's network against the final row of the
    results' accuracy matrix, and the logits of the task's probe batch against those recorded when
    the task was frozen (bit for bit, on the device that recorded them). ``ok`` is True when all match.
    Nothing in the folder is trusted: only ``<folder>/packed.safetensors`` is opened (whatever
    the results name), the data comes from ``data_root`` and is never downloaded, and a missing or
    malformed results or probe entry raises CorruptFileError naming the file and the entry.
    """
    folder = resolve(folder)
    results_path, probes_path = folder / "results.json", folder / PROBES_FILE
    for path in (results_path, probes_path, folder / PACKED_FILE):
        if not path.is_file():
            raise CorruptFileError(f"{path} is missing: {folder} is not a finished run of an owner-map method")
    results = read_json(results_path)
    try:
        with safe_open(probes_path, "pt") as handle:
            device = torch.device(handle.metadata()["device"])
            probes = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors' own errors, a missing or unknown device entry
        raise CorruptFileError(f"{probes_path} is not a probe file ({type(error).__name__}: {error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{probes_path} was recorded on {device}; bit-exact logits need the same device type")
    packed = PackedNetwork.load(folder / PACKED_FILE, device=device)
    matrix = results.get("acc_matrix") if isinstance(results, dict) else None
    final = matrix[-1] if isinstance(matrix, list) and matrix and isinstance(matrix[-1], list) else None
    if final is None or len(final) != packed.num_tasks or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in final):
        raise CorruptFileError(f"{results_path}: 'acc_matrix' has no final row of {packed.num_tasks} accuracies (the packed file's tasks)")
    missing = [f"task{i}/logits" for i in range(packed.num_tasks) if f"task{i}/logits" not in probes]
    if missing:
        raise CorruptFileError(f"{probes_path} has no entries {', '.join(missing)}")
    config = Config.from_dict({**packed.config, "data_root": str(resolve(data_root or Config.data_root)), "download": False})
    scenario = scenario_of(config)
    rows = []
    for index in range(packed.num_tasks):
        test = scenario.tasks[index].test
        accuracy = evaluate(packed, test, index, config.eval_batch_size, device)
        with torch.no_grad():
            logits = packed(probe_batch(test).to(device), index).cpu()
        recorded = final[index]
        rows.append(
            {
                "task": index + 1,
                "test_accuracy": accuracy,
                "results_accuracy": recorded,
                "accuracy_equal": accuracy == recorded,
                "probe_logits_equal": torch.equal(logits, probes[f"task{index}/logits"]),
            }
        )
    return {
        "file": str(packed.path),
        "packed_bytes": packed.path.stat().st_size,
        "tasks": rows,
        "ok": all(r["accuracy_equal"] and r["probe_logits_equal"] for r in rows),
    }
