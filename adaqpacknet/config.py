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
from typing import Any, Mapping

import torch

from . import methods
from .data.scenarios import CLASS_ORDERS
from .data.scenarios import SCENARIOS as SCENARIO_SPECS
from .models import MODELS as MODEL_NAMES
from .models import build_model
from .ownership import MAX_TASKS
from .methods import CLASSIC_METHODS, METHODS
from .quantization import QUANTIZERS as QUANTIZER_NAMES

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


def _field(default: Any, *, choices: tuple[str, ...] | None = None, at_least: int | None = None,
           within: tuple | None = None, finite: str | None = None, unit: str = "") -> Any:
    """A Config field with its rule, checked whenever a Config is built (``_validate_fields``):
    ``choices`` (one of these names), ``at_least`` (an int bound), ``within`` ((low, high, shown[,
    open_low]): low <= value < high, low < value when open_low, finite), ``finite`` (">" or ">=":
    a finite number above or from 0; ``unit`` names its unit in the error). None passes every rule
    (the field's own "not set")."""
    rule = {"choices": choices, "at_least": at_least, "within": within, "finite": finite, "unit": unit}
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
    epochs: int = _field(5, at_least=1)  # training epochs of the free weights, per candidate
    finetune_epochs: int = _field(1, at_least=0)  # retraining epochs of the survivors after pruning
    batch_size: int = _field(10, at_least=1)
    lr: float = _field(1.0e-3, finite=">")
    weight_decay: float = _field(0.0, finite=">=")
    lr_patience: int = _field(6, at_least=1)  # epochs without validation improvement before the lr is halved
    lr_factor: float = _field(0.5, within=(0.0, 1.0, "(0, 1)", True))
    early_stop_patience: int = _field(0, at_least=0)  # 0 = no early stopping; else stop after this many flat epochs
    eval_batch_size: int = _field(1000, at_least=1)  # batch-statistics BN makes eval depend on it: keep it fixed

    # --- free weights (method.md §2.1) --------------------------------------------------------
    free_init: str = _field("layer_default", choices=FREE_INITS)  # "layer_default" | "uniform" (reference code: U(-1,1)) | "keep"

    # --- sparsity search (method.md §2.2-2.3) ---------------------------------------------------
    population: int = _field(2, at_least=1)  # candidates per task (reference code: 2)
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
    budget_share_min: float = _field(0.5, finite=">")
    budget_share_max: float = _field(1.5, finite=">")
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
    ewc_lambda: float = _field(1.0, finite=">=")
    si_lambda: float = _field(1.0, finite=">=")
    si_eps: float = _field(0.1, finite=">")
    lwf_alpha: float = _field(1.0, finite=">=")
    lwf_temperature: float = _field(1.0, finite=">")
    replay_mem_size: int = _field(1000, at_least=1)  # samples kept over all tasks (split_mnist/online_replay.py)
    gem_patterns_per_exp: int = _field(1000, at_least=1)  # samples kept per task
    gem_memory_strength: float = _field(0.5, finite=">=")
    agem_patterns_per_exp: int = _field(250, at_least=1)
    agem_sample_size: int = _field(256, at_least=1)  # memory samples per reference gradient
    # "single" (classic strategies only): one head over all classes, labels made global, no task
    # ids in training or testing; the accuracy matrix is then class-incremental, every seen task's
    # test samples scored over all the classes seen so far.
    heads: str = _field("per_task", choices=HEADS)

    # --- quantisation (method.md §2.4) ----------------------------------------------------------
    quantizer: str = _field("kmeans", choices=QUANTIZERS)  # "kmeans" | "linear" | "linear_symmetric" | "none" (float variant)
    max_bits: int = _field(6, within=(1, 9, "1..8"))
    min_bits: int = _field(1, within=(1, 9, "1..8"))
    tolerance: float = _field(2.0, finite=">=", unit="percentage points")  # percentage points of validation accuracy a bit width may cost
    bit_allocation: str = _field("per_task", choices=BIT_ALLOCATIONS)  # "per_task" (paper) or "per_layer" (hybrid extension)

    # --- machinery -------------------------------------------------------------------------------
    device: str = _field("auto", choices=DEVICES)  # "auto" picks CUDA when available
    # torch's CPU threads for this run. CPU results depend on it (a reduction split over more
    # threads sums in another order), so it is part of the run's config and hash: one thread gives
    # the same numbers on a 2-core laptop and a 64-core node; parallelism comes from running many
    # runs at once (workflow/Snakefile). Raise it for one long interactive run.
    cpu_threads: int = _field(1, at_least=1)
    progress: bool = True  # tqdm bars on a terminal or in Jupyter; a line per epoch is printed regardless

    def __post_init__(self) -> None:
        # Each field's type and its own rule, as declared above (``_field``), in field order; then
        # the rules between fields and those of the chosen method (``methods.MethodSpec.check``).
        _validate_fields(self)
        method = methods.spec(self.method)
        if self.heads == "single" and not method.single_head:
            raise ValueError(
                f"heads='single' trains one of {CLASSIC_METHODS} class-incrementally; method={self.method!r} keeps "
                f"one head per task (its class-incremental accuracy comes from task inference: adaqpacknet.task_inference)"
            )
        if self.num_tasks is not None:
            # A split or multi-dataset scenario has its number of tasks; permutations are endless,
            # but an owner map names at most MAX_TASKS tasks.
            spec = SCENARIO_SPECS[self.scenario]
            if spec.kind != "permuted":
                _in_range("num_tasks", self.num_tasks, 1, spec.num_tasks + 1, f"1..{spec.num_tasks} for {self.scenario}")
            elif method.owner_maps:
                _in_range("num_tasks", self.num_tasks, 1, MAX_TASKS + 1, f"1..{MAX_TASKS} for {self.scenario} (owner ids of {self.method})")
        if self.model != "auto":
            shape = SCENARIO_SPECS[self.scenario].input_shape
            try:
                with torch.device("meta"):  # shapes only: nothing is allocated
                    build_model(self.model, shape, [SCENARIO_SPECS[self.scenario].classes_per_task])
            except (ValueError, RuntimeError) as error:
                raise ValueError(f"model={self.model!r} cannot take {self.scenario}'s {shape} inputs ({error})") from None
        if self.r_min > self.r_max:
            raise ValueError(f"r_min={self.r_min} must not exceed r_max={self.r_max}")
        if self.min_bits > self.max_bits:
            raise ValueError(f"min_bits={self.min_bits} must not exceed max_bits={self.max_bits}")
        if self.prune_ratios is not None:
            if not self.prune_ratios:
                raise ValueError("prune_ratios=[] needs at least one ratio (or None for the default)")
            for ratio in self.prune_ratios:
                if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
                    raise ValueError(f"prune_ratios={self.prune_ratios!r}: {ratio!r} is not a number")
                _in_range("prune_ratios entry", ratio, 0.0, 1.0, "[0, 1)")
            if len(self.prune_ratios) > 1 and self.num_tasks is not None and len(self.prune_ratios) != self.num_tasks:
                raise ValueError(
                    f"prune_ratios has {len(self.prune_ratios)} entries for num_tasks={self.num_tasks}: give one "
                    f"ratio for every task or one per task"
                )
        if self.budget_share_min > self.budget_share_max:
            raise ValueError(f"budget_share_min={self.budget_share_min} must not exceed budget_share_max={self.budget_share_max}")
        if self.capacity_rule != "reference" and not method.searches:
            raise ValueError(
                f"capacity_rule={self.capacity_rule!r} sets Ada-QPacknet's search; method={self.method!r} does not search "
                f"(PackNet's ratios are prune_ratios)"
            )
        if not self.reuse_frozen and not method.owner_maps:
            owning = ", ".join(name for name, s in methods.SPECS.items() if s.owner_maps)
            raise ValueError(f"reuse_frozen=False is an ablation of the owner-map methods ({owning}), not of {self.method!r}")
        if method.check is not None:
            method.check(self)

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
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(field_names())}")
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
    if "=" not in text:
        raise ValueError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if key not in _HINTS:
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(_HINTS)}")
    allowed = field_types(key)
    if type(None) in allowed and raw.lower() == "none":
        return key, None
    kind = allowed[0]  # the annotation's first type: int | None reads an int
    try:
        return key, _PARSERS[kind](raw)
    except (ValueError, KeyError):
        raise ValueError(f"{key}={raw!r} is not a valid {kind.__name__}") from None


# --- validation helpers ---------------------------------------------------------------------------


def _validate_fields(config: Config) -> None:
    # Parameters arrive from YAML, JSON and papermill, where "1e-3" may be a string and "yes" a
    # bool: each field's type is checked, then its rule, so such values fail here, by name, not
    # deep inside training.
    for f in dataclasses.fields(config):
        value, allowed = getattr(config, f.name), field_types(f.name)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(f"{f.name}={value!r} has type {type(value).__name__}; expected {f.type}")
    for f in dataclasses.fields(config):
        value, rule = getattr(config, f.name), f.metadata.get("rule")
        if rule is None or value is None:
            continue
        if rule["choices"] is not None:
            _choice(f.name, value, rule["choices"])
        if rule["at_least"] is not None:
            _at_least(f.name, value, rule["at_least"])
        if rule["within"] is not None:
            low, high, shown, *open_low = rule["within"]
            _in_range(f.name, value, low, high, shown, open_low=bool(open_low and open_low[0]))
        if rule["finite"] is not None:
            positive = rule["finite"] == ">"
            if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                unit = f" ({rule['unit']})" if rule["unit"] else ""
                raise ValueError(f"{f.name}={value} must be a finite number {rule['finite']} 0{unit}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name}={value} must be >= {low}")


def _in_range(name: str, value: float, low: float, high: float, shown: str, open_low: bool = False) -> None:
    below = value <= low if open_low else value < low
    if below or value >= high or not math.isfinite(value):
        raise ValueError(f"{name}={value} is outside the valid range {shown}")
