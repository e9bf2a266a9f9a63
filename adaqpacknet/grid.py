"""The runs a parameter profile needs, listed without executing a notebook, and their batches (one job each).

A profile is a folder of parameter files, one per notebook (``notebooks/params/<profile>/<nb>.yaml``).
Each experiment notebook turns its parameters (the notebook's defaults, overridden by the file)
into runs, and a run's folder is named by its config (``runs.run_dir``). This module makes
the same configs from the same parameters, so that a workflow engine (``workflow/Snakefile``) can
train every run in independent jobs, in parallel or on a cluster, before the notebooks execute:
the notebooks then find their runs finished in the run cache, and only aggregate, tabulate and
plot. A notebook asked for a run that no job trained (one this module does not know how to plan)
still trains it itself, as it always did.

The engine trains the runs in batches (``Plan.batches``): one process trains a batch's runs in
sequence (``python -m adaqpacknet run --plan FILE --batch ID``, the plan written once by
``write_plan``), each into its own folder as if
alone, paying the start-up (imports, data, the classic strategies' float copies of the training
images) once per batch instead of once per run.

Each notebook's runs come from ``experiments.PLANNERS``, the same function its driver runs them
with (``experiments.run_settings``: a parameter named as a ``Config`` field is a setting of every
run, ``num_tasks: 0`` the scenario's own number, ``overrides`` any other field), so the grid trains
exactly what the notebooks read; ``tests/test_notebooks.py`` checks it on the smoke profile.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import experiments, methods, runs
from .config import IMAGES_PER_CLASS, Config, load_parameter_file, task_sources
from .data import SCENARIOS
from .errors import ConfigError, CorruptFileError, shorten
from .results import code_version, profile_folder, read_json, resolve, write_json

PARAMS_ROOT = "notebooks/params"
REPORT_PREFIX = "9"  # 90_tables, 91_figures: they read every experiment notebook's results

# At most this many runs in one batch (one process, one job): a larger group is split into
# near-equal batches. A classic strategy's process pays ~15 s before its first run trains on permuted
# Fashion-MNIST (measured: torch 1.5 s, avalanche-lib 4.4 s, the scenario 0.9 s, the float copies of
# 10 tasks' training images 7.7 s; the next run in the same process 0.3 s), and a default-profile run
# trains for 40-100 s, so a batch of 6 trains for 4-10 min: the default profile's 201 runs make 42
# jobs instead of 201, still enough for 2 cores to stay busy to the end (a larger cap saves little
# more start-up and lengthens the tail, the last batch, during which one core may wait alone).
MAX_BATCH_RUNS = 6
# And at most about this many minutes of estimated cluster time (``run_resources``): a SLURM job
# longer than its partition's limit (often 24-72 h) would wait in the queue for ever.
MAX_BATCH_MINUTES = 24 * 60


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

    @cached_property
    def batches(self) -> dict[str, tuple[str, ...]]:
        """Batch id -> the ids of the runs one process trains in sequence, in plan order.

        One batch per scenario's data (``runs.data_key``: the runs share one built Scenario) and family
        (``family``: the classic strategies share their float copies of its training images too),
        split round-robin into near-equal batches of at most ``MAX_BATCH_RUNS`` runs, and as many more
        as keep a batch near ``MAX_BATCH_MINUTES`` of estimated cluster time, when larger. The ids
        (``<scenario>_seed<seed>_<family>_<k>``, k from 1 within a scenario, seed and family) and
        the order are deterministic: a function of the plan. Every run is in exactly one batch.
        """
        groups: dict[tuple, list[str]] = {}
        for run_id, run in self.runs.items():
            groups.setdefault((runs.data_key(run.config), family(run.config)), []).append(run_id)
        batches: dict[str, tuple[str, ...]] = {}
        numbered: dict[str, int] = {}
        for (key, kind), ids in groups.items():
            prefix = f"{key[0]}_seed{key[1]}_{kind}"
            minutes = {i: run_resources(self.runs[i].config)["runtime"] for i in ids}
            count = -(-len(ids) // MAX_BATCH_RUNS)
            while count < len(ids) and max(sum(minutes[i] for i in ids[part::count]) for part in range(count)) > MAX_BATCH_MINUTES:
                count += 1
            for part in range(count):
                numbered[prefix] = numbered.get(prefix, 0) + 1
                batches[f"{prefix}_{numbered[prefix]}"] = tuple(ids[part::count])
        return batches

    @cached_property
    def batch_of(self) -> dict[str, str]:
        """Run id -> the id of its batch."""
        return {run_id: batch for batch, ids in self.batches.items() for run_id in ids}


# --- cluster resources of a run (SLURM's -t and --mem): estimates, sized with room to spare ------
# Training images per class of each source: config.IMAGES_PER_CLASS (Config's batch_size bound reads it too).
TEST_IMAGES_PER_CLASS = {"mnist": 1000, "fashion_mnist": 1000, "cifar10": 1000, "cifar100": 100, "svhn": 2603,
                         "notmnist": 468, "tinyimagenet": 50, "digits": 0}
# Milliseconds per gradient step of each protocol network at its protocol batch (10-256) on one
# current GPU: a planning figure, step launch overhead dominating the small networks.
STEP_MS = {"mlp": 2.0, "small_conv": 3.0, "alexnet": 4.0, "tinyimagenet_conv": 8.0, "resnet18_reduced": 12.0}
# A method's cost per step relative to plain training: its spec's step_factor (methods.SPECS).
RUNTIME_MARGIN = 3.0  # requested = margin x estimate + RUNTIME_FLOOR_MIN: a slow node or a busy file system
RUNTIME_FLOOR_MIN = 10
RETRIES = 2  # the SLURM profile's `retries`: each new attempt asks for attempt x the runtime and memory


def run_resources(config: Config) -> dict[str, int]:
    """SLURM resources one run of ``config`` asks for: ``runtime`` (minutes, sbatch -t) and ``mem_mb``
    (sbatch --mem), estimated from the run's gradient steps, its network and method (``STEP_MS``,
    ``methods.MethodSpec.step_factor``) and the bytes of its data (uint8 images held in memory; a classic
    strategy's float copies of the training images, 4 bytes a value), with ``RUNTIME_MARGIN``.
    A classic strategy cannot resume mid-run (avalanche keeps its state outside the checkpoint): its
    runtime covers the whole run, as every run's does. Estimates, not measurements: a cluster user
    who sees a run killed at its limit retries it with twice the limit (``RETRIES``) and can scale
    every figure here."""
    spec = SCENARIOS[config.scenario]
    tasks = config.num_tasks or spec.num_tasks
    model = spec.default_model if config.model == "auto" else config.model
    sources = task_sources(config.scenario, tasks)
    channels, height, width = spec.input_shape
    per_task = [IMAGES_PER_CLASS[s] * spec.classes_per_task for s in sources]
    test = [TEST_IMAGES_PER_CLASS[s] * spec.classes_per_task for s in sources]
    train = [round(n * (1 - spec.val_fraction)) for n in per_task]
    method = methods.spec(config.method)
    passes = config.population if method.searches else 1  # every candidate trains
    factor = method.step_factor
    step_units = sum(passes * config.epochs_per_task * -(-n // config.batch_size) * factor(t) for t, n in enumerate(train))
    minutes = 1.2 * step_units * STEP_MS[model] / 60_000  # +20%: evaluation after every task
    pixels = channels * height * width
    data_bytes = (sum(per_task) + sum(test)) * pixels
    if method.classic:
        data_bytes += 4 * sum(train) * pixels
    return {
        "runtime": int(RUNTIME_MARGIN * minutes + RUNTIME_FLOOR_MIN),
        "mem_mb": 1000 * -(-int(2000 + 1.5 * data_bytes / 1e6) // 1000),  # 2 GB for torch and the process, whole GB
    }


def batch_resources(plan: "Plan", batch: str) -> dict[str, int]:
    """A batch's resources: its runs train one after another, so the sum of their runtimes and the
    largest of their memories (``run_resources``)."""
    each = [run_resources(plan.runs[run_id].config) for run_id in plan.batches[batch]]
    return {"runtime": sum(r["runtime"] for r in each), "mem_mb": max(r["mem_mb"] for r in each)}


def family(config: Config) -> str:
    """``"classic"`` for the avalanche strategies (they share float copies of the training images), else ``"other"``."""
    return "classic" if methods.spec(config.method).classic else "other"


def runs_root(profile: str) -> Path:
    """Where a profile's runs live: ``runs/<profile>`` under the repository root (as the notebooks have it)."""
    return profile_folder("runs", profile_name(profile))


def profile_name(profile: Any) -> str:
    """``profile`` if it is a profile name (``results.profile_folder``'s rule: letters, digits,
    '_', '.', '-'), else ConfigError naming it: a name that reaches a path or a shell command."""
    profile_folder("runs", profile)
    return profile


# What a root folder may not hold: Snakemake reads braces in a file pattern as wildcards, and a
# control character (a newline) would cut a command or a log line. Everything else is quoted.
_NOT_IN_A_PATH = re.compile(r"[{}\x00-\x1f\x7f]")


def folder_path(name: str, value: Any) -> str:
    """``value`` if it is a folder path (absolute or relative, spaces and '..' allowed) without
    braces or control characters, else ConfigError naming ``name``: the workflow's roots
    (``params_root``, ``results_root``) reach file patterns and shell commands (quoted there)."""
    if not isinstance(value, str) or not value.strip() or _NOT_IN_A_PATH.search(value):
        raise ConfigError(f"{name}={shorten(value)} is not a folder path: no braces, no control characters")
    return value


def notebook_parameters(stem: str, params_dir: Path) -> dict[str, Any]:
    """A notebook's defaults overridden by its parameter file (``config.load_parameter_file``);
    unknown names, and values of another kind than the notebook's default (a list for a mapping),
    are an error naming the file."""
    defaults = experiments.notebook_defaults(stem)
    path = params_dir / f"{stem}.yaml"
    given = load_parameter_file(path)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{path}: {shorten(unknown)} are not parameters of notebooks/{stem}.ipynb (it has {sorted(defaults)})")
    for name, value in given.items():
        expected = _kind(defaults[name])
        if expected is not None and value is not None and not isinstance(value, expected):
            raise ConfigError(
                f"{path}: {name}={shorten(value)} has type {type(value).__name__}; notebooks/{stem}.ipynb takes "
                f"{' or '.join(t.__name__ for t in expected)}"
            )
    return {**defaults, **given}


def _kind(default: Any) -> tuple[type, ...] | None:
    """The types a parameter may take, from its notebook default: its containers stay containers
    (a mapping stays a mapping), a number a number; a default of None says nothing."""
    if default is None:
        return None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float)):
        return (int, float)
    return (type(default),)


def plan(profile: str, params_root: str | Path = PARAMS_ROOT) -> Plan:
    """Every run of ``profile`` (each config validated), and the runs each notebook reads.

    Raises ConfigError (a ValueError) naming the profile folder, the parameter file or the bad value.
    """
    root = resolve(params_root)
    params_dir = root / profile_name(profile)  # a name, not a path: it must not lead elsewhere
    if not params_dir.is_dir():
        choices = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise ConfigError(f"no profile {profile!r}: {params_dir} does not exist (profiles: {', '.join(choices) or 'none'})")
    stems = sorted(p.stem for p in params_dir.glob("*.yaml"))
    if not stems:
        raise ConfigError(f"profile {profile!r} has no parameter files in {params_dir}")
    readers: dict[str, list[str]] = {}
    configs: dict[str, Config] = {}
    notebooks: dict[str, tuple[str, ...]] = {}
    for stem in stems:
        parameters = notebook_parameters(stem, params_dir)
        planner = experiments.PLANNERS.get(stem)
        try:
            planned = planner(parameters) if planner else []
        except ValueError as error:  # ConfigError: it names the value
            raise ConfigError(f"{params_dir / stem}.yaml: {error}") from None
        except (KeyError, TypeError, AttributeError) as error:  # a value of the wrong shape deeper in (a list of lists)
            raise ConfigError(f"{params_dir / stem}.yaml: a parameter has the wrong shape ({type(error).__name__}: {shorten(str(error))})") from None
        ids = []
        for config in planned:
            run_id = runs.run_dir(config, runs_root(profile)).relative_to(runs_root(profile)).as_posix()
            if run_id not in configs:
                configs[run_id] = config
                readers[run_id] = []
            if stem not in readers[run_id]:
                readers[run_id].append(stem)
                ids.append(run_id)
        notebooks[stem] = tuple(ids)
    planned = {run_id: Run(run_id, configs[run_id], tuple(readers[run_id])) for run_id in configs}
    return Plan(profile=profile, params_dir=params_dir, notebooks=notebooks, runs=planned)


def stale_runs(plan: Plan) -> dict[str, str]:
    """Finished runs of ``plan`` that other code trained: run id -> the code version it recorded
    (``results.code_version``; "not recorded" for runs of an earlier package, "unreadable" for
    results that cannot be read). Their folders are kept: delete one to retrain it."""
    current, stale = code_version(), {}
    for run_id in plan.runs:
        path = plan.runs_root / run_id / "results.json"
        if not path.is_file():
            continue
        try:
            recorded = read_json(path)["environment"].get("code_version", "not recorded")
        except (CorruptFileError, KeyError, TypeError, AttributeError):
            recorded = "unreadable"
        if recorded != current:
            stale[run_id] = str(recorded)
    return stale


PLAN_SCHEMA = 1


def write_plan(plan: Plan, folder: str | Path) -> Path:
    """Write ``plan``'s batches (each run's id and full config) to ``<folder>/<profile>-<hash>.json``,
    atomically, and return the file: the grid plans once (workflow/Snakefile) and each batch job
    reads its runs from this file (``read_batch``) instead of planning the profile again. Named by
    its content: two plans of one profile (another params root) never overwrite each other's."""
    data = {
        "schema_version": PLAN_SCHEMA, "profile": plan.profile,
        "batches": {b: [{"id": i, "config": plan.runs[i].config.to_dict()} for i in ids] for b, ids in plan.batches.items()},
    }
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    path = resolve(folder) / f"{plan.profile}-{digest}.json"
    if not path.is_file():
        write_json(path, data)
    return path


def read_batch(path: str | Path, batch_id: str) -> tuple[str, list[Run]]:
    """The profile and the runs of batch ``batch_id`` from a plan file (``write_plan``), each config
    validated again; a missing or malformed file, or an unknown batch, is an error naming it."""
    path = resolve(path)
    if not path.is_file():
        raise ConfigError(f"no plan file {path}: the workflow writes it (workflow/Snakefile), or use --profile")
    data = read_json(path)
    try:
        if data["schema_version"] != PLAN_SCHEMA:
            raise CorruptFileError(f"{path} has plan schema {shorten(data['schema_version'])}; this package reads {PLAN_SCHEMA}")
        profile, batches = data["profile"], data["batches"]
        if batch_id not in batches:
            raise ConfigError(f"{path} has no batch {shorten(batch_id)} ({len(batches)} batches)")
        try:
            found = [Run(entry["id"], Config.from_dict(entry["config"]), ()) for entry in batches[batch_id]]
            root = runs_root(profile)
        except ConfigError as error:  # the file's config or profile, not the caller's
            raise CorruptFileError(f"{path}: {error}") from None
        for run in found:  # a run trains into the folder its config names, whatever the file says
            if runs.run_dir(run.config, root).relative_to(root).as_posix() != run.id:
                raise CorruptFileError(f"{path}: run {shorten(run.id)} does not name its config's folder")
        return profile, found
    except (KeyError, TypeError, AttributeError) as error:
        raise CorruptFileError(f"{path} is not a plan file ({type(error).__name__}: {shorten(str(error))})") from None


def find_batch(profile: str, batch_id: str, params_root: str | Path = PARAMS_ROOT) -> list[Run]:
    """The runs of batch ``batch_id`` of ``profile``, in training order; an unknown id is an error."""
    planned = plan(profile, params_root)
    if batch_id not in planned.batches:
        shown = ", ".join(list(planned.batches)[:5]) + (" ..." if len(planned.batches) > 5 else "")
        raise ConfigError(
            f"profile {profile!r} has no batch {shorten(batch_id)} ({len(planned.batches)} batches: {shown}); "
            f"list them with `python -m adaqpacknet runs {profile} --batches`"
        )
    return [planned.runs[run_id] for run_id in planned.batches[batch_id]]


def find_run(profile: str, run_id: str, params_root: str | Path = PARAMS_ROOT) -> Run:
    """The run ``run_id`` of ``profile``; an id the profile does not plan is an error."""
    planned = plan(profile, params_root).runs
    if run_id not in planned:
        shown = ", ".join(list(planned)[:5]) + (" ..." if len(planned) > 5 else "")
        raise ConfigError(
            f"profile {profile!r} has no run {shorten(run_id)} ({len(planned)} runs: {shown}); "
            f"list them with `python -m adaqpacknet runs {profile}`"
        )
    return planned[run_id]
