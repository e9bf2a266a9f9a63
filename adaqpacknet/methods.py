"""The method registry: every method the package runs, what it is, and every name a notebook uses.

Two kinds of name, both defined here and nowhere else:

- a **method** (``Config.method``, ``SPECS``) names a learner and what it guarantees: whether it
  keeps owner maps, whether a learned task's sub-network is frozen (BWT exactly 0, task inference),
  whether it searches, prunes, quantises, can train one head over every class, is tuned on a grid;
- a **variant** (a notebook's ``methods`` list, ``VARIANTS``) is a method with Config changes, e.g.
  ``ada_qpacknet_float`` = ``ada_qpacknet`` with ``quantizer="none"``. A run's ``label``
  (``label``) names its variant in results, tables and figures.

Everything else in the package (Config validation, the learners, the grid, tables, figures, task
inference) asks a spec (``spec(name)``) instead of comparing names; ``python -m adaqpacknet methods``
prints the registry. A learner is
named as ``"module:Class"`` and imported on use: the learners import Config, which reads this module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .errors import ConfigError, shorten

# This module imports nothing else of the package at load (Config, every learner and the tables
# read it): the annotations Config, ContinualLearner and Scenario name adaqpacknet.config.Config,
# adaqpacknet.continual.ContinualLearner and adaqpacknet.data.Scenario, never evaluated; a bad
# name is shown by errors.shorten.


def _plain(tasks_before: float) -> float:
    return 1.0


@dataclass(frozen=True)
class MethodSpec:
    """One method (``Config.method``): its learner and what it is."""

    name: str
    learner: str  # "module:Class" under adaqpacknet, imported on use (``learner_class``)
    family: str  # "subnetwork" (a sub-network per task), "bound" (independent, joint), "classic" (avalanche-lib)
    summary: str  # one line (``python -m adaqpacknet methods``)
    # The package's owner maps (ownership.py): an owner id per body weight, a packed file, at most
    # MAX_TASKS tasks, the reuse_frozen ablation. (avalanche_packnet keeps avalanche's own.)
    owner_maps: bool = False
    # A learned task's sub-network never changes and the package can run it alone: BWT exactly 0,
    # task inference (task_inference.py) applies.
    frozen_tasks: bool = False
    searches: bool = False  # a sparsity search: ``population`` candidates train per task, capacity_rule applies
    prunes: bool = False  # magnitude pruning then retraining: epochs read "train+retrain"
    quantizes: bool = False  # stores quantised weights unless quantizer="none"
    single_head: bool = False  # may train one head over every class (heads="single"): class-incremental
    # (Config field, counted per task) of a rehearsal strategy's memory, for T3's "memory" column.
    memory_field: tuple[str, bool] | None = None
    # Cost per gradient step relative to plain training, t = tasks learned before (grid.run_resources).
    step_factor: Callable[[float], float] = _plain
    # The method's own Config rules beyond its traits (raise ConfigError naming the field).
    check: Callable[["Config"], None] | None = None

    @property
    def classic(self) -> bool:
        """Run by avalanche-lib (the classic strategies and avalanche's own PackNet)."""
        return self.family == "classic"


def _check_packnet(config: "Config") -> None:
    if config.population != 1:
        raise ConfigError(
            f"method='packnet' trains one network per task with its fixed ratio, but population={config.population}: "
            f"set population=1"
        )
    if config.quantizer != "none":
        raise ConfigError(
            f"method='packnet' keeps float32 weights, but quantizer={config.quantizer!r}: set quantizer='none' "
            f"(Ada-QPacknet with one fixed ratio and quantisation is method='ada_qpacknet', population=1, r_min=r_max)"
        )


def _check_avalanche_packnet(config: "Config") -> None:
    if config.finetune_epochs < 1:
        raise ConfigError("method='avalanche_packnet' prunes before its post-prune epochs: finetune_epochs must be >= 1")
    if config.weight_decay > 0:
        # avalanche adds weight decay after its gradient mask: frozen weights would shrink.
        raise ConfigError(f"method='avalanche_packnet' needs weight_decay=0 (got {config.weight_decay}): it would move frozen weights")


_CLASSIC = "adaqpacknet.classic:ClassicStrategy"


def _classic(name: str, summary: str, **traits: Any) -> MethodSpec:
    return MethodSpec(name, _CLASSIC, "classic", summary, single_head=True, **traits)


_SPECS = (
    MethodSpec(
        "ada_qpacknet", "adaqpacknet.learner:AdaQPacknet", "subnetwork",
        "Ada-QPacknet: searched per-layer sparsity, quantised frozen weights (its float variant: quantizer='none')",
        owner_maps=True, frozen_tasks=True, searches=True, prunes=True, quantizes=True,
    ),
    MethodSpec(
        "packnet", "adaqpacknet.learner:AdaQPacknet", "subnetwork",
        "PackNet: one fixed prune ratio per task, float32 frozen weights", owner_maps=True, frozen_tasks=True, prunes=True,
        check=_check_packnet,
    ),
    MethodSpec("wsn", "adaqpacknet.wsn:WSN", "subnetwork", "WSN: a learned binary mask per task (Kang et al. 2022)",
               frozen_tasks=True, step_factor=lambda t: 1.5),
    MethodSpec("independent", "adaqpacknet.upper_bounds:Independent", "bound", "one network per task (upper bound)",
               frozen_tasks=True),
    MethodSpec("joint", "adaqpacknet.upper_bounds:Joint", "bound", "one network trained on every task at once (upper bound)"),
    _classic("naive", "fine-tuning, nothing kept (lower bound)"),
    _classic("ewc", "EWC (separate mode)", step_factor=lambda t: 1.0 + 0.15 * t),
    _classic("si", "Synaptic Intelligence", step_factor=lambda t: 1.5),
    _classic("lwf", "Learning without Forgetting", step_factor=lambda t: 1.5),
    _classic("replay", "experience replay (reservoir buffer)", memory_field=("replay_mem_size", False), step_factor=lambda t: 2.0),
    _classic("gem", "GEM", memory_field=("gem_patterns_per_exp", True), step_factor=lambda t: 1.0 + 1.0 * t),
    _classic("agem", "A-GEM", memory_field=("agem_patterns_per_exp", True), step_factor=lambda t: 2.0),
    # avalanche-lib's own PackNet: the cross-check of method="packnet" (same schedule and ratios).
    MethodSpec("avalanche_packnet", "adaqpacknet.classic:AvalanchePackNet", "classic", "avalanche-lib's PackNet (cross-check)",
               prunes=True, check=_check_avalanche_packnet),
)
SPECS: Mapping[str, MethodSpec] = MappingProxyType({s.name: s for s in _SPECS})
METHODS = tuple(SPECS)  # Config.method's choices
# The strategies a notebook's `tune` grid may name, and that may train one head over every class.
CLASSIC_METHODS = tuple(name for name, s in SPECS.items() if s.single_head)
SINGLE_HEAD = "_single_head"  # suffix of the class-incremental variants' labels


def spec(method: str) -> MethodSpec:
    """The spec of ``method`` (a ``Config.method``); an unknown name is an error naming the choices."""
    if not isinstance(method, str) or method not in SPECS:
        raise ConfigError(f"unknown method {shorten(method)}; valid choices: {', '.join(METHODS)}")
    return SPECS[method]


def learner_class(method: str) -> type[ContinualLearner]:
    """The learner class that runs ``method``."""
    module, name = spec(method).learner.split(":")
    return getattr(importlib.import_module(module), name)


def check_learner(learner: ContinualLearner, config: Config) -> None:
    """Refuse to build ``learner`` for a config whose method another learner runs (a subclass of a
    registered learner counts as it: the first registered class in its MRO)."""
    registered = {s.learner.split(":")[1] for s in SPECS.values()}
    own = next((cls.__name__ for cls in type(learner).__mro__ if cls.__name__ in registered), type(learner).__name__)
    if spec(config.method).learner.split(":")[1] != own:
        served = [name for name, s in SPECS.items() if s.learner.split(":")[1] == own]
        raise ConfigError(f"{own} runs method {' or '.join(map(repr, served)) or 'none of the registry'}, not {config.method!r}")


def learner_for(config: Config, scenario: Scenario | None = None) -> ContinualLearner:
    """The learner of ``config.method``, built (data checked) but not yet run; on ``scenario`` when
    given (runs on the same data share one: ``runs.run_configs``), else on its own."""
    return learner_class(config.method)(config, scenario)


def stores_quantized(config: Mapping[str, Any]) -> bool:
    """Whether a run of ``config`` (as a dict) stores quantised weights (bit widths were searched)."""
    return spec(config["method"]).quantizes and config["quantizer"] != "none"


def label(config: Config) -> str:
    """The name of ``config``'s variant in results, tables and figures (the inverse of ``VARIANTS``
    for the variants listed there): Ada-QPacknet's float, budget, single-candidate and no-reuse
    variants and the single-head strategies are rows of their own."""
    method = spec(config.method)
    if method.owner_maps:
        budget = "_budget" if config.capacity_rule == "budget" else ""
        isolated = "" if config.reuse_frozen else "_no_reuse"
        # One candidate: no search, and as many gradient steps per task as every other method.
        single = "_p1" if method.searches and config.population == 1 else ""
        stored = "_float" if method.quantizes and config.quantizer == "none" else ""
        return f"{config.method}{budget}{isolated}{single}{stored}"
    if config.heads == "single":
        return f"{config.method}{SINGLE_HEAD}"
    return config.method


# Each variant a notebook may list, as Config changes on top of the notebook's settings.
VARIANTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "ada_qpacknet": {},
    "ada_qpacknet_float": {"quantizer": "none"},
    # Every task an equal share of the pool left for it and the tasks to come (Config.capacity_rule).
    "ada_qpacknet_budget": {"capacity_rule": "budget"},
    # The budget variant with one candidate: total gradient steps per task equal to every other method's.
    "ada_qpacknet_budget_p1": {"capacity_rule": "budget", "population": 1},
    "packnet": {"method": "packnet", "quantizer": "none", "population": 1},
    **{name: {"method": name} for name, s in SPECS.items() if not s.owner_maps},
    # Class-incremental: one head over every class, no task ids (adaqpacknet.task_inference).
    **{f"{name}{SINGLE_HEAD}": {"method": name, "heads": "single"} for name in CLASSIC_METHODS},
})
# The README's headline table (tables.headline): these variants, in this order.
HEADLINE = ("ada_qpacknet", "ada_qpacknet_budget", "ada_qpacknet_budget_p1", "packnet", "wsn", "independent", "replay")


def variant(name: str) -> Mapping[str, Any]:
    """The Config changes of variant ``name``; an unknown name is an error naming the choices."""
    if not isinstance(name, str) or name not in VARIANTS:
        raise ConfigError(f"unknown method {shorten(name)}; valid choices: {', '.join(VARIANTS)}")
    return VARIANTS[name]


