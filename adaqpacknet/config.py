"""Run configuration: one frozen, typed object, validated when it is built.

Every **Decision** of the specification (shared method.md §2) is a field here with the default it
names, so a user can switch to the alternative from a notebook's parameters cell or the command
line. Each field declares its type (its annotation) and its rule (``_field``: choices, bounds); both
are checked when a Config is built, and ``key=value`` parsing reads the same types
(``field_types``): a bad value fails before any data is loaded. Rules between fields and a
method's own rules (``methods.MethodSpec.check``) follow in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from . import methods
from .errors import ConfigError, shorten
from .data.scenarios import CLASS_ORDERS
from .data.scenarios import SCENARIOS as SCENARIO_SPECS
from .models import MODELS as MODEL_NAMES
from .models import build_model
from .ownership import MAX_TASKS
from .methods import CLASSIC_METHODS, METHODS
from .quantization import QUANTIZERS as QUANTIZER_NAMES
from .files import read_regular

# Choices come from the modules that implement them, so error messages, the CLI and the docs
# list the same values as the code that runs.
SCENARIOS = tuple(SCENARIO_SPECS)
MODELS = ("auto", *MODEL_NAMES)
QUANTIZERS = (*QUANTIZER_NAMES, "none")
BIT_ALLOCATIONS = ("per_task", "per_layer")
PRUNE_SCHEDULES = ("train_prune_retrain", "fixed_mask")
SEARCH_KEEPS = ("best", "retrain")
CAPACITY_RULES = ("reference", "budget")
FREE_INITS = ("layer_default", "uniform", "keep")
DEVICES = ("auto", "cpu", "cuda")
# Config.method's choices and what each method is: adaqpacknet.methods, the registry.
# "per_task": one head per task, the task id given at test time (task-incremental); "single": one
# head over every class, trained and tested without task ids (class-incremental, classic methods).
HEADS = ("per_task", "single")
# torch.manual_seed takes seeds below 2^64 (each task re-seeds from (seed, task), reduced mod 2^63).
MAX_SEED = 2**64 - 1
# Upper bounds of the numeric fields: each far beyond any value a profile uses (the paper's longest
# schedule is 200 + 20 epochs, its largest batch 256, population 4, lambdas 1000 after tuning), and
# low enough that a typo or a hostile file cannot ask for years of training or terabytes of memory.
MAX_EPOCHS = 10_000  # epochs, finetune_epochs and the patiences (counted in epochs)
MAX_BATCH = 65_536  # batch_size (also at most the smallest training split) and eval_batch_size
MAX_LR = 10.0  # Adam and SGD diverge long before
MAX_WEIGHT_DECAY = 1.0  # an L2 term as large as the gradient: beyond it weights only shrink
MAX_POPULATION = 100  # candidates trained per task
MAX_BUDGET_SHARE = 100.0  # multiples of a layer's equal share: 100 owns everything on any protocol
MAX_STRENGTH = 1e6  # EWC/SI lambdas, SI's eps, LwF's alpha, GEM's strength: 1000x the tuned values
MAX_TEMPERATURE = 1000.0  # LwF's distillation temperature
MAX_MEMORY = 1_000_000  # rehearsal samples kept or drawn: 10 MNIST training sets
MAX_CPU_THREADS = 1024  # torch threads of one run: more than any node has cores


def _field(default: Any, *, choices: tuple[str, ...] | None = None, at_least: int | None = None,
           at_most: float | None = None, within: tuple | None = None, finite: str | None = None, unit: str = "") -> Any:
    """A Config field with its rule, checked whenever a Config is built (``_validate_fields``):
    ``choices`` (one of these names), ``at_least`` (an int bound), ``within`` ((low, high, shown[,
    open_low]): low <= value < high, low < value when open_low, finite), ``finite`` (">" or ">=":
    a finite number above or from 0; ``unit`` names its unit in the error). ``at_least`` and
    ``finite`` need ``at_most``, the (inclusive) upper bound: every numeric field is bounded. None
    passes every rule (the field's own "not set")."""
    if (at_least is not None or finite is not None) and at_most is None:
        raise TypeError("a field with a lower bound needs its upper bound (at_most)")
    rule = {"choices": choices, "at_least": at_least, "at_most": at_most, "within": within, "finite": finite, "unit": unit}
    return dataclasses.field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class Config:
    """All settings of one Ada-QPacknet run. Defaults follow shared method.md."""

    # --- what to run -------------------------------------------------------------------------
    method: str = _field("ada_qpacknet", choices=METHODS)  # methods.SPECS
    scenario: str = _field("permuted_fashion_mnist", choices=SCENARIOS)
    model: str = _field("auto", choices=MODELS)  # "auto" = the scenario's protocol network (method.md §3)
    num_tasks: int | None = None  # None = the scenario's protocol number of tasks
    seed: int = _field(0, within=(0, MAX_SEED + 1, f"0..{MAX_SEED}"))
    data_root: str = "data"  # relative paths are taken from the current working directory
    download: bool = False  # let torchvision download (needs internet)
    val_fraction: float | None = _field(None, within=(0.0, 1.0, "(0, 1)", True))  # None = protocol: 0.1 permuted/TinyImageNet, 0.05 otherwise
    class_order: str = _field("fixed", choices=CLASS_ORDERS)  # split scenarios: "fixed" (WSN) or "shuffled" by seed

    # --- optimisation (method.md §3: Adam, lr 1e-3 halved after 6 epochs without improvement) ---
    # Every method's reported network trains epochs + finetune_epochs epochs per task (the equal
    # budget of T1, ``epochs_per_task``): the pruning methods (Ada-QPacknet, PackNet) train the free
    # weights for ``epochs``, prune, and retrain the survivors for ``finetune_epochs``; every other
    # method (WSN, independent, joint, the classic strategies) trains for the sum. Ada-QPacknet's
    # search trains ``population`` such candidates and keeps one (population=1: equal gradient steps).
    epochs: int = _field(5, at_least=1, at_most=MAX_EPOCHS)  # training epochs of the free weights, per candidate
    finetune_epochs: int = _field(1, at_least=0, at_most=MAX_EPOCHS)  # retraining epochs of the survivors after pruning
    batch_size: int = _field(10, at_least=1, at_most=MAX_BATCH)  # and at most the smallest training split (smallest_train_split)
    lr: float = _field(1.0e-3, finite=">", at_most=MAX_LR)
    weight_decay: float = _field(0.0, finite=">=", at_most=MAX_WEIGHT_DECAY)
    lr_patience: int = _field(6, at_least=1, at_most=MAX_EPOCHS)  # epochs without validation improvement before the lr is halved
    lr_factor: float = _field(0.5, within=(0.0, 1.0, "(0, 1)", True))
    early_stop_patience: int = _field(0, at_least=0, at_most=MAX_EPOCHS)  # 0 = no early stopping; else stop after this many flat epochs
    eval_batch_size: int = _field(1000, at_least=1, at_most=MAX_BATCH)  # batch-statistics BN makes eval depend on it: keep it fixed

    # --- free weights (method.md §2.1) --------------------------------------------------------
    free_init: str = _field("layer_default", choices=FREE_INITS)  # "layer_default" | "uniform" (reference code: U(-1,1)) | "keep"

    # --- sparsity search (method.md §2.2-2.3) ---------------------------------------------------
    population: int = _field(2, at_least=1, at_most=MAX_POPULATION)  # candidates per task (reference code: 2)
    r_min: float = _field(0.4, within=(0.0, 1.0, "[0, 1)"))  # per-layer prune ratio drawn from U[r_min, r_max]
    r_max: float = _field(0.7, within=(0.0, 1.0, "[0, 1)"))
    fitness_accuracy_weight: float = _field(0.8, within=(0.0, 1.0 + 1e-12, "[0, 1]"))  # fitness = w * acc + (1 - w) * pruned fraction
    search_keep: str = _field("best", choices=SEARCH_KEEPS)  # "best": keep the winner's weights; "retrain": retrain from scratch
    prune_schedule: str = _field("train_prune_retrain", choices=PRUNE_SCHEDULES)  # or "fixed_mask" (reference-code-faithful)
    # How much of its free weights a task may keep (an extension; the paper is "reference"):
    # "reference": ratios ~ U[r_min, r_max] of the free weights, whatever is left and whatever comes
    #   next, so on 10 tasks the first ones take most of the network and the last learn in what is left;
    # "budget": each layer keeps u x its equal share of the pool left for this task and those still to
    #   come (pool = free weights - the reserve (1 - capacity_budget) x layer), u ~ U[budget_share_min,
    #   budget_share_max] per layer and candidate; the fitness then weighs accuracy against what the
    #   candidate keeps, as before (pruning.budget_prune_ratios). r_min and r_max are not used.
    capacity_rule: str = _field("reference", choices=CAPACITY_RULES)
    capacity_budget: float = _field(1.0, within=(0.0, 1.0 + 1e-12, "(0, 1]", True))  # "budget": share of each layer the whole task sequence may own
    budget_share_min: float = _field(0.5, finite=">", at_most=MAX_BUDGET_SHARE)
    budget_share_max: float = _field(1.5, finite=">", at_most=MAX_BUDGET_SHARE)
    # Reuse of frozen weights (method.md §2, inference: task t's network is every weight of tasks 1..t).
    # False is the ablation: each task trains and infers with its own weights only.
    reuse_frozen: bool = True

    # --- PackNet (method="packnet") --------------------------------------------------------------
    # Prune ratio of each task's free weights, every layer: one value for every task, or one per
    # task. None = (r_min + r_max) / 2, the mean of Ada-QPacknet's search range, so that the
    # comparison isolates the search.
    prune_ratios: list | None = None

    # --- WSN (method="wsn", Kang et al. 2022) -------------------------------------------------------
    wsn_capacity: float = _field(0.5, within=(0.0, 1.0 + 1e-12, "(0, 1]", True))  # c: share of each layer's weights a task's mask selects (top-c% scores)

    # --- classic strategies (avalanche-lib 0.6.0). Defaults: ContinualAI/continual-learning-baselines,
    # experiments/permuted_mnist/*.py (SI: split_mnist, multi-head). Avalanche's EWC importance is the
    # squared minibatch gradient and its SI clips importance, so values from other code do not transfer.
    ewc_lambda: float = _field(1.0, finite=">=", at_most=MAX_STRENGTH)
    si_lambda: float = _field(1.0, finite=">=", at_most=MAX_STRENGTH)
    si_eps: float = _field(0.1, finite=">", at_most=MAX_STRENGTH)
    lwf_alpha: float = _field(1.0, finite=">=", at_most=MAX_STRENGTH)
    lwf_temperature: float = _field(1.0, finite=">", at_most=MAX_TEMPERATURE)
    replay_mem_size: int = _field(1000, at_least=1, at_most=MAX_MEMORY)  # samples kept over all tasks (split_mnist/online_replay.py)
    gem_patterns_per_exp: int = _field(1000, at_least=1, at_most=MAX_MEMORY)  # samples kept per task
    gem_memory_strength: float = _field(0.5, finite=">=", at_most=MAX_STRENGTH)
    agem_patterns_per_exp: int = _field(250, at_least=1, at_most=MAX_MEMORY)
    agem_sample_size: int = _field(256, at_least=1, at_most=MAX_MEMORY)  # memory samples per reference gradient
    # "single" (classic strategies only): one head over all classes, labels made global, no task
    # ids in training or testing; the accuracy matrix is then class-incremental, every seen task's
    # test samples scored over all the classes seen so far.
    heads: str = _field("per_task", choices=HEADS)

    # --- quantisation (method.md §2.4) ----------------------------------------------------------
    quantizer: str = _field("kmeans", choices=QUANTIZERS)  # "kmeans" | "linear" | "linear_symmetric" | "none" (float variant)
    max_bits: int = _field(6, within=(1, 9, "1..8"))
    min_bits: int = _field(1, within=(1, 9, "1..8"))
    tolerance: float = _field(2.0, finite=">=", at_most=100.0, unit="percentage points")  # percentage points of validation accuracy a bit width may cost
    bit_allocation: str = _field("per_task", choices=BIT_ALLOCATIONS)  # "per_task" (paper) or "per_layer" (hybrid extension)

    # --- machinery -------------------------------------------------------------------------------
    device: str = _field("auto", choices=DEVICES)  # "auto" picks CUDA when available
    # torch's CPU threads for this run. CPU results depend on it (a reduction split over more
    # threads sums in another order), so it is part of the run's config and hash: one thread gives
    # the same numbers on a 2-core laptop and a 64-core node; parallelism comes from running many
    # runs at once (workflow/Snakefile). Raise it for one long interactive run.
    cpu_threads: int = _field(1, at_least=1, at_most=MAX_CPU_THREADS)
    progress: bool = True  # tqdm bars on a terminal or in Jupyter; a line per epoch is printed regardless

    def __post_init__(self) -> None:
        # Each field's type and its own rule, as declared above (``_field``), in field order; then
        # the rules between fields and those of the chosen method (``methods.MethodSpec.check``).
        _validate_fields(self)
        method = methods.spec(self.method)
        if self.heads == "single" and not method.single_head:
            raise ConfigError(
                f"heads='single' trains one of {CLASSIC_METHODS} class-incrementally; method={self.method!r} keeps "
                f"one head per task (its class-incremental accuracy comes from task inference: adaqpacknet.task_inference)"
            )
        spec = SCENARIO_SPECS[self.scenario]
        if self.num_tasks is not None:
            # A split or multi-dataset scenario has its number of tasks; permutations are endless,
            # but an owner map names at most MAX_TASKS tasks, and so many permutations are the
            # package's limit for every other method too.
            if spec.kind != "permuted":
                _in_range("num_tasks", self.num_tasks, 1, spec.num_tasks + 1, f"1..{spec.num_tasks} for {self.scenario}")
            elif method.owner_maps:
                _in_range("num_tasks", self.num_tasks, 1, MAX_TASKS + 1, f"1..{MAX_TASKS} for {self.scenario} (owner ids of {self.method})")
            else:
                _in_range("num_tasks", self.num_tasks, 1, MAX_TASKS + 1, f"1..{MAX_TASKS} for {self.scenario} (permutations of one run)")
        smallest = smallest_train_split(self.scenario, self.tasks, self.val_fraction)
        if self.batch_size > smallest:
            # The training loaders drop the last partial batch (training.loader): a batch larger than
            # a task's training split would take no gradient step on it, and the run would "finish".
            raise ConfigError(
                f"batch_size={self.batch_size} is outside the valid range 1..{smallest}: the smallest training split "
                f"of {self.scenario}'s {self.tasks} tasks holds {smallest} images, and a larger batch takes no step"
            )
        if self.model != "auto":
            shape = spec.input_shape
            try:
                with torch.device("meta"):  # shapes only: nothing is allocated
                    build_model(self.model, shape, [spec.classes_per_task])
            except (ValueError, RuntimeError) as error:
                raise ConfigError(f"model={self.model!r} cannot take {self.scenario}'s {shape} inputs ({shorten(str(error))})") from None
        if self.r_min > self.r_max:
            raise ConfigError(f"r_min={self.r_min} must not exceed r_max={self.r_max}")
        if self.min_bits > self.max_bits:
            raise ConfigError(f"min_bits={self.min_bits} must not exceed max_bits={self.max_bits}")
        if self.prune_ratios is not None:
            self._check_prune_ratios()
        if self.budget_share_min > self.budget_share_max:
            raise ConfigError(f"budget_share_min={self.budget_share_min} must not exceed budget_share_max={self.budget_share_max}")
        if self.capacity_rule != "reference" and not method.searches:
            raise ConfigError(
                f"capacity_rule={self.capacity_rule!r} sets Ada-QPacknet's search; method={self.method!r} does not search "
                f"(PackNet's ratios are prune_ratios)"
            )
        if not self.reuse_frozen and not method.owner_maps:
            owning = ", ".join(name for name, s in methods.SPECS.items() if s.owner_maps)
            raise ConfigError(f"reuse_frozen=False is an ablation of the owner-map methods ({owning}), not of {self.method!r}")
        if method.check is not None:
            method.check(self)

    def _check_prune_ratios(self) -> None:
        ratios = self.prune_ratios
        if not ratios:
            raise ConfigError("prune_ratios=[] needs at least one ratio (or None for the default)")
        for ratio in ratios:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
                raise ConfigError(f"prune_ratios={shorten(ratios)}: {shorten(ratio)} is not a number")
            _in_range("prune_ratios entry", ratio, 0.0, 1.0, "[0, 1)")
        # Also when num_tasks is None (the scenario's number): a ratio per task, or one for all.
        if len(ratios) > 1 and len(ratios) != self.tasks:
            raise ConfigError(
                f"prune_ratios has {len(ratios)} entries for num_tasks={self.tasks}: give one ratio for every task or one per task"
            )

    @property
    def tasks(self) -> int:
        """The run's number of tasks: ``num_tasks``, or the scenario's own number when it is None."""
        return self.num_tasks if self.num_tasks is not None else SCENARIO_SPECS[self.scenario].num_tasks

    @property
    def label(self) -> str:
        """Name of the run's variant in results and tables (``methods.label``)."""
        return methods.label(self)

    @property
    def epochs_per_task(self) -> int:
        """Training epochs of the reported network per task, retraining included: the same for every method."""
        return self.epochs + self.finetune_epochs

    def prune_ratio(self, task_index: int) -> float:
        """PackNet's prune ratio of task ``task_index`` (0-based)."""
        if self.prune_ratios is None:
            return (self.r_min + self.r_max) / 2
        return float(self.prune_ratios[task_index if len(self.prune_ratios) > 1 else 0])

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """Build from plain data (a notebook's parameters, JSON); unknown keys are an error."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a config is a mapping of field names to values, not {type(values).__name__} {shorten(values)}")
        unknown = [key for key in values if key not in _HINTS]
        if unknown:
            raise ConfigError(f"unknown config key(s) {shorten(unknown)}; valid keys: {', '.join(field_names())}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``Config.from_dict(c.to_dict()) == c``."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed, validated like a new one."""
        return Config.from_dict({**self.to_dict(), **changes})


# Each field's annotation as a type (the module's annotations are strings: postponed evaluation).
_HINTS: dict[str, Any] = typing.get_type_hints(Config)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


def field_types(name: str) -> tuple[type, ...]:
    """The types field ``name`` takes, from its annotation (``int | None`` -> (int, NoneType)); a
    float field takes an int too. One source for validation (``_validate_fields``) and for
    ``key=value`` parsing (``parse_override``)."""
    hint = _HINTS[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return (*allowed, int) if float in allowed else tuple(allowed)


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Each type's reading of a command-line value: a list field takes comma-separated numbers.
_PARSERS: dict[type, Any] = {int: int, float: float, bool: lambda raw: _BOOLS[raw.lower()], str: str,
                             list: lambda raw: [float(v) for v in raw.split(",")]}


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, typed value)`` using the type of the Config field.

    ``none`` sets an optional field to None; a list field takes comma-separated numbers
    (``prune_ratios=0.75,0.5``). An unknown key or a value of the wrong type is an error.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"expected key=value, got {shorten(text)}")
    key, raw = text.split("=", 1)
    if key not in _HINTS:
        raise ConfigError(f"unknown config key {shorten(key)}; valid keys: {', '.join(_HINTS)}")
    allowed = field_types(key)
    if type(None) in allowed and raw.lower() == "none":
        return key, None
    kind = allowed[0]  # the annotation's first type: int | None reads an int
    try:
        return key, _PARSERS[kind](raw)
    except (ValueError, KeyError):  # int() refuses more than 4300 digits with a ValueError too
        raise ConfigError(f"{key}={shorten(raw)} is not a valid {kind.__name__}") from None


# --- validation helpers ---------------------------------------------------------------------------


def _validate_fields(config: Config) -> None:
    # Parameters arrive from YAML, JSON and papermill, where "1e-3" may be a string and "yes" a
    # bool: each field's type is checked, then its rule, so such values fail here, by name, not
    # deep inside training.
    for f in dataclasses.fields(config):
        value, allowed = getattr(config, f.name), field_types(f.name)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{f.name}={shorten(value)} has type {type(value).__name__}; expected {f.type}")
    for f in dataclasses.fields(config):
        value, rule = getattr(config, f.name), f.metadata.get("rule")
        if rule is None or value is None:
            continue
        if rule["choices"] is not None:
            _choice(f.name, value, rule["choices"])
        if rule["at_least"] is not None:
            _at_least(f.name, value, rule["at_least"], rule["at_most"])
        if rule["within"] is not None:
            low, high, shown, *open_low = rule["within"]
            _in_range(f.name, value, low, high, shown, open_low=bool(open_low and open_low[0]))
        if rule["finite"] is not None:
            _finite(f.name, value, rule["finite"], rule["at_most"], rule["unit"])


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {shorten(value)}; valid choices: {', '.join(choices)}")


def _at_least(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name}={shorten(value)} must be >= {low} and <= {high}")


def _finite(name: str, value: float, above: str, high: float, unit: str) -> None:
    """``value`` finite, above 0 (``above`` ">") or from 0 (">="), and at most ``high``."""
    low_ok = value > 0 if above == ">" else value >= 0
    if not (math.isfinite(value) and low_ok and value <= high):
        unit = f" ({unit})" if unit else ""
        raise ConfigError(f"{name}={shorten(value)} must be a finite number {above} 0 and <= {high:g}{unit}")


def _in_range(name: str, value: float, low: float, high: float, shown: str, open_low: bool = False) -> None:
    below = value <= low if open_low else value < low
    if below or value >= high or not math.isfinite(value):
        raise ConfigError(f"{name}={shorten(value)} is outside the valid range {shown}")


# --- a scenario's sizes, known without reading its data -------------------------------------------

# Training images per class of each source (the published training splits), before the validation
# split: with the scenario's classes per task, a task's size without reading the data. Nominal
# counts (the total over the classes): exact for the balanced sources (Fashion-MNIST, CIFAR,
# TinyImageNet), the mean class for MNIST, SVHN and notMNIST; digits' 180 is the whole of
# scikit-learn's set, of which the package trains on 80% (data.sources._split_fixed).
IMAGES_PER_CLASS = {"mnist": 6000, "fashion_mnist": 6000, "cifar10": 5000, "cifar100": 500, "svhn": 7326,
                    "notmnist": 1873, "tinyimagenet": 500, "digits": 180}
# Share of a source's images that the package holds out as its test split when the source has
# none of its own (data.sources._split_fixed): those images never train.
FIXED_TEST_SHARE = {"digits": 0.2}


def task_sources(scenario: str, num_tasks: int) -> list[str]:
    """The source of each of the first ``num_tasks`` tasks of ``scenario``."""
    spec = SCENARIO_SPECS[scenario]
    return list(spec.sources[:num_tasks]) if spec.kind == "multi_dataset" else [spec.sources[0]] * num_tasks


def smallest_train_split(scenario: str, num_tasks: int, val_fraction: float | None = None) -> int:
    """The training images of the smallest of ``scenario``'s first ``num_tasks`` tasks, from the
    nominal class sizes (``IMAGES_PER_CLASS``) without reading any data: what a task keeps after
    its validation split (``val_fraction``, None = the scenario's), which stratified_split holds
    out per class as round(n x fraction), at least one image. The one home of this figure: Config
    refuses a batch_size above it (a larger batch would take no gradient step on that task)."""
    spec = SCENARIO_SPECS[scenario]
    fraction = spec.val_fraction if val_fraction is None else val_fraction
    sizes = []
    for source in task_sources(scenario, num_tasks):
        per_class = round(IMAGES_PER_CLASS[source] * (1 - FIXED_TEST_SHARE.get(source, 0.0)))
        sizes.append(spec.classes_per_task * (per_class - max(round(per_class * fraction), 1)))
    return min(sizes)


# --- parameter files (YAML) ------------------------------------------------------------------------

# A parameter file is a few hundred bytes (the largest, a profile's 14_class_incremental.yaml, is
# under 1 KB; every one is under 10 KB): 64 KiB leaves room for comments and long lists, and is read
# at once. Nesting deeper than a few levels is no parameter either (YAML's composer recurses).
MAX_PARAMETER_FILE_BYTES = 64 << 10
MAX_YAML_DEPTH = 32


class _ParameterLoader(yaml.SafeLoader):
    """SafeLoader (plain data, no Python objects) that also refuses anchors and aliases, whose
    expansion is unbounded (a "billion laughs" file of a few hundred bytes), and duplicate keys,
    which YAML would resolve silently to the last; each with ConfigError naming the file and line."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            self._refuse(event.start_mark, "holds a YAML anchor or alias (& or *): parameter files may not repeat values by reference")
        self._depth = getattr(self, "_depth", 0) + 1
        if self._depth > MAX_YAML_DEPTH:
            self._refuse(event.start_mark, f"nests values more than {MAX_YAML_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader's own error names it below
                continue
            if duplicate:
                self._refuse(key_node.start_mark, f"has the key {shorten(key)} twice")
        return super().construct_mapping(node, deep)

    def _refuse(self, mark: yaml.Mark, what: str) -> None:
        raise ConfigError(f"{self.name}, line {mark.line + 1}: {what}")


def load_parameter_file(path: str | Path) -> dict[str, Any]:
    """The parameters of a YAML parameter file, ``{name: value}`` (an empty file: ``{}``): read as a
    regular file of at most ``MAX_PARAMETER_FILE_BYTES`` (results.read_regular: a FIFO or device is
    refused) with ``_ParameterLoader``. The one way the package reads YAML. A file that is not such
    a mapping raises ConfigError (CorruptFileError for a special or oversized file), naming it."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_PARAMETER_FILE_BYTES).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start})") from None
    loader = _ParameterLoader(text)
    loader.name = str(path)  # the marks of its errors name the file
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error)[:1000]}") from None  # PyYAML cuts its snippets
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise ConfigError(f"{path} holds {shorten(data)}; a parameter file maps parameter names to values")
    return data
