"""Run configuration: one frozen, typed object, validated when it is built.

Every **Decision** of the specification (shared method.md §2) is a field here with the default it
names, so a user can switch to the alternative from a notebook's parameters cell or the command
line. Validation happens in ``__post_init__``: a bad value fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .data.scenarios import CLASS_ORDERS
from .data.scenarios import SCENARIOS as SCENARIO_SPECS
from .models import MODELS as MODEL_NAMES
from .quantization import QUANTIZERS as QUANTIZER_NAMES

# Choices come from the modules that implement them, so error messages, the CLI and the docs
# list the same values as the code that runs.
SCENARIOS = tuple(SCENARIO_SPECS)
MODELS = ("auto", *MODEL_NAMES)
QUANTIZERS = (*QUANTIZER_NAMES, "none")
BIT_ALLOCATIONS = ("per_task", "per_layer")
PRUNE_SCHEDULES = ("train_prune_retrain", "fixed_mask")
SEARCH_KEEPS = ("best", "retrain")
FREE_INITS = ("layer_default", "uniform", "keep")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Config:
    """All settings of one Ada-QPacknet run. Defaults follow shared method.md."""

    # --- what to run -------------------------------------------------------------------------
    scenario: str = "permuted_fashion_mnist"  # one of SCENARIOS
    model: str = "auto"  # "auto" = the scenario's protocol network (method.md §3)
    num_tasks: int | None = None  # None = the scenario's protocol number of tasks
    seed: int = 0
    data_root: str = "data"  # relative paths are taken from the current working directory
    download: bool = False  # let torchvision download (needs internet)
    val_fraction: float | None = None  # None = protocol: 0.1 permuted/TinyImageNet, 0.05 otherwise
    class_order: str = "fixed"  # split scenarios: "fixed" (WSN) or "shuffled" by seed

    # --- optimisation (method.md §3: Adam, lr 1e-3 halved after 6 epochs without improvement) ---
    epochs: int = 5  # training epochs of the free weights, per candidate
    finetune_epochs: int = 1  # retraining epochs of the survivors after pruning
    batch_size: int = 10
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    lr_patience: int = 6  # epochs without validation improvement before the lr is halved
    lr_factor: float = 0.5
    early_stop_patience: int = 0  # 0 = no early stopping; else stop after this many flat epochs
    eval_batch_size: int = 1000  # batch-statistics BN makes eval depend on it: keep it fixed

    # --- free weights (method.md §2.1) --------------------------------------------------------
    free_init: str = "layer_default"  # "layer_default" | "uniform" (reference code: U(-1,1)) | "keep"

    # --- sparsity search (method.md §2.2-2.3) ---------------------------------------------------
    population: int = 2  # candidates per task (reference code: 2)
    r_min: float = 0.4  # per-layer prune ratio drawn from U[r_min, r_max]
    r_max: float = 0.7
    fitness_accuracy_weight: float = 0.8  # fitness = w * acc + (1 - w) * pruned fraction
    search_keep: str = "best"  # "best": keep the winner's weights; "retrain": retrain from scratch
    prune_schedule: str = "train_prune_retrain"  # or "fixed_mask" (reference-code-faithful)

    # --- quantisation (method.md §2.4) ----------------------------------------------------------
    quantizer: str = "kmeans"  # "kmeans" | "linear" | "linear_symmetric" | "none" (float variant)
    max_bits: int = 6
    min_bits: int = 1
    tolerance: float = 2.0  # percentage points of validation accuracy a bit width may cost
    bit_allocation: str = "per_task"  # "per_task" (paper) or "per_layer" (hybrid extension)

    # --- machinery -------------------------------------------------------------------------------
    device: str = "auto"  # "auto" picks CUDA when available
    progress: bool = True  # tqdm bars on a terminal or in Jupyter; a line per epoch is printed regardless

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("scenario", self.scenario, SCENARIOS)
        _choice("model", self.model, MODELS)
        _choice("quantizer", self.quantizer, QUANTIZERS)
        _choice("bit_allocation", self.bit_allocation, BIT_ALLOCATIONS)
        _choice("prune_schedule", self.prune_schedule, PRUNE_SCHEDULES)
        _choice("search_keep", self.search_keep, SEARCH_KEEPS)
        _choice("free_init", self.free_init, FREE_INITS)
        _choice("class_order", self.class_order, CLASS_ORDERS)
        _choice("device", self.device, DEVICES)
        if self.num_tasks is not None:
            _at_least("num_tasks", self.num_tasks, 1)
        _at_least("epochs", self.epochs, 1)
        _at_least("finetune_epochs", self.finetune_epochs, 0)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        _at_least("population", self.population, 1)
        _at_least("lr_patience", self.lr_patience, 1)
        _at_least("early_stop_patience", self.early_stop_patience, 0)
        _in_range("r_min", self.r_min, 0.0, 1.0, "[0, 1)")
        _in_range("r_max", self.r_max, 0.0, 1.0, "[0, 1)")
        if self.r_min > self.r_max:
            raise ValueError(f"r_min={self.r_min} must not exceed r_max={self.r_max}")
        _in_range("max_bits", self.max_bits, 1, 9, "1..8")
        _in_range("min_bits", self.min_bits, 1, 9, "1..8")
        if self.min_bits > self.max_bits:
            raise ValueError(f"min_bits={self.min_bits} must not exceed max_bits={self.max_bits}")
        if not self.tolerance >= 0 or not math.isfinite(self.tolerance):
            raise ValueError(f"tolerance={self.tolerance} must be a finite number >= 0 (percentage points)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr} must be a finite number > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")
        _in_range("lr_factor", self.lr_factor, 0.0, 1.0, "(0, 1)", open_low=True)
        _in_range("fitness_accuracy_weight", self.fitness_accuracy_weight, 0.0, 1.0 + 1e-12, "[0, 1]")
        if self.val_fraction is not None:
            _in_range("val_fraction", self.val_fraction, 0.0, 1.0, "(0, 1)", open_low=True)

    @property
    def method(self) -> str:
        """Name of the method in results and tables: the float variant is a method of its own."""
        return "ada_qpacknet_float" if self.quantizer == "none" else "ada_qpacknet"

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


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


# --- validation helpers ---------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
}


def _check_types(config: Config) -> None:
    # Parameters arrive from YAML, JSON and papermill, where "1e-3" may be a string and "yes" a
    # bool: check each field's type so such values fail here, by name, not deep inside training.
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        allowed = _TYPES[str(f.type)]
        is_bool = isinstance(value, bool)
        if not isinstance(value, allowed) or (is_bool and bool not in allowed):
            raise ValueError(f"{f.name}={value!r} has type {type(value).__name__}; expected {f.type}")


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
