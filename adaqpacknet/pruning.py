"""Magnitude pruning among a task's own weights, and the per-layer prune ratios of the search."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_prune_ratios(
    layer_names: list[str], r_min: float, r_max: float, generator: torch.Generator
) -> dict[str, float]:
    """One ratio per layer drawn from U[r_min, r_max]: the fraction of free weights to prune."""
    draws = torch.rand(len(layer_names), generator=generator, dtype=torch.float64)
    return {name: float(r_min + (r_max - r_min) * u) for name, u in zip(layer_names, draws)}


def magnitude_keep_mask(weight: Tensor, candidates: Tensor, ratio: float) -> Tensor:
    """Keep the largest-magnitude ``candidates``, pruning ``round(ratio * n)`` of the n of them.

    Ranks by magnitude (stable, ties broken by position) instead of thresholding: a ``<=``
    threshold prunes more than asked when values tie, e.g. after quantisation or at zero.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"prune ratio {ratio} is outside [0, 1]")
    flat_candidates = candidates.flatten().nonzero().squeeze(1)
    n_prune = int(round(ratio * flat_candidates.numel()))
    magnitudes = weight.detach().flatten()[flat_candidates].abs()
    order = torch.sort(magnitudes, stable=True).indices
    keep = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    keep[flat_candidates[order[n_prune:]]] = True
    return keep.view_as(weight)


def budget_prune_ratios(
    free: dict[str, int],
    sizes: dict[str, int],
    tasks_left: int,
    capacity_budget: float,
    share_range: tuple[float, float],
    generator: torch.Generator,
) -> dict[str, float]:
    """Prune ratios that leave room for the tasks to come (``Config.capacity_rule="budget"``).

    Per layer, the pool is the free weights minus the reserve that no task may take,
    ``(1 - capacity_budget) * size``. Its equal share for this task and the ``tasks_left - 1`` after
    it is ``pool / tasks_left``; the task keeps ``u * share`` of its free weights (at most the pool),
    ``u ~ U[share_range]`` drawn per layer, so a search's candidates differ around the equal share.
    Returns the fraction of each layer's free weights to prune, as ``sample_prune_ratios`` does.
    """
    if tasks_left < 1:
        raise ValueError(f"tasks_left={tasks_left} must be >= 1")
    low, high = share_range
    draws = torch.rand(len(free), generator=generator, dtype=torch.float64)
    ratios = {}
    for (name, n_free), u in zip(free.items(), draws):
        pool = min(max(n_free - (1.0 - capacity_budget) * sizes[name], 0.0), n_free)
        keep = min(float(low + (high - low) * u) * pool / tasks_left, pool)
        ratios[name] = 1.0 - keep / n_free if n_free else 1.0
    return ratios
