"""Tuning the classic strategies: a notebook's `tune` grid as Config points, and the point each
seed keeps on validation (never on test)."""

from __future__ import annotations

import itertools
import math
from types import MappingProxyType
from typing import Any, Mapping

from .config import Config, field_names, field_types
from .errors import ConfigError, shorten
from .methods import CLASSIC_METHODS, VARIANTS


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


CLASSIC_GRID: dict[str, dict[str, list[float]]] = {
    "ewc": {"ewc_lambda": [10, 100, 1000]},
    "si": {"si_lambda": [10, 100, 1000]},
    "lwf": {"lwf_alpha": [1, 2, 4]},
}


# Grid points of one strategy (each a run per seed): the profiles try 3; a grid a hundred times
# larger is a mistake, and itertools.product of a few long lists would not fit in memory.
MAX_TUNING_POINTS = 100


def tuning_grid(tune: Mapping[str, dict[str, list]] | None, methods: list[str]) -> dict[str, list[dict[str, float]]]:
    """``tune`` (None = CLASSIC_GRID) as method -> its points, each ``{Config field: factor}``, for
    each of ``methods`` (variants, ``methods.VARIANTS``, or run labels) whose classic strategy it names: ``ewc``'s
    grid also tunes ``ewc_single_head``. A key that is not a classic strategy, a field that is not a
    numeric Config field or a factor that is not a positive number is an error."""
    tune = CLASSIC_GRID if tune is None else tune
    if not isinstance(tune, Mapping):
        raise ConfigError(f"tune={shorten(tune)} must map a classic strategy to {{Config field: [values]}} (None = the default grid)")
    points = {}
    for method, fields in tune.items():
        if method not in CLASSIC_METHODS:
            raise ConfigError(f"tune names {shorten(method)}: only the classic strategies are tuned ({', '.join(CLASSIC_METHODS)})")
        if not isinstance(fields, dict) or not fields or not all(isinstance(v, list) and v for v in fields.values()):
            raise ConfigError(f"tune[{method!r}]={shorten(fields)} must map Config fields to non-empty lists of values")
        unknown = [f for f in fields if f not in field_names() or field_types(f) not in ((int,), (float, int))]
        if unknown:
            raise ConfigError(f"tune[{method!r}] names {shorten(unknown)}, which are not numeric Config fields")
        bad = [v for values in fields.values() for v in values
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf]
        if bad:
            raise ConfigError(f"tune[{method!r}] has factors {shorten(bad)}: each must be a finite number > 0 (a factor of the configured value)")
        count = math.prod(len(values) for values in fields.values())
        if count > MAX_TUNING_POINTS:
            raise ConfigError(f"tune[{method!r}] makes {count} grid points (runs per seed); at most {MAX_TUNING_POINTS} are allowed")
        for name in methods:
            if isinstance(name, str) and VARIANTS.get(name, {}).get("method") == method:
                points[name] = [dict(zip(fields, values)) for values in itertools.product(*fields.values())]
    return points


def at_point(config: Config, point: Mapping[str, float]) -> Config:
    """``config`` at a grid point: each named field times its factor (``_scaled``)."""
    return config.replace(**{field: _scaled(config, field, factor) for field, factor in point.items()})


def _scaled(config: Config, field: str, factor: float) -> float:
    """``config``'s ``field`` times ``factor``, rounded where the field is an int (a memory size)."""
    value = getattr(config, field) * factor
    return round(value) if field_types(field)[0] is int else float(value)


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
