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
