"""Quantisers: a per-layer codebook of at most 2^bits levels and the code of every weight.

- ``kmeans``: optimal 1-D k-means (kmeans1d, deterministic) fitted on the task's own weights
  only, never on zero padding (a wasted centroid at zero, shared pitfalls);
- ``linear``: uniform levels over [min, max] of the task's weights;
- ``linear_symmetric``: uniform levels over [-m, m], m = max |w|.

Dequantised values are exactly ``codebook[codes]`` (float32), so a frozen weight can be rebuilt
bit for bit from its code and codebook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kmeans1d
import numpy as np
import torch
from torch import Tensor

QUANTIZERS = ("kmeans", "linear", "linear_symmetric")


@dataclass(frozen=True)
class Quantized:
    """Codebook (float32, ascending, length <= 2^bits) and one int64 code per value."""

    codebook: Tensor
    codes: Tensor
    bits: int

    def values(self) -> Tensor:
        """The dequantised values, ``codebook[codes]``."""
        return self.codebook[self.codes]


def quantize(values: Tensor, bits: int, method: str) -> Quantized:
    """Quantise a 1-D tensor of weights to at most ``2**bits`` levels with ``method``."""
    if method not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {method!r}; valid choices: {', '.join(QUANTIZERS)}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} is outside the valid range 1..8")
    flat = values.detach().flatten().to("cpu", torch.float64)
    if flat.numel() == 0:
        return Quantized(torch.zeros(0), torch.zeros(0, dtype=torch.int64), bits)
    if method == "kmeans":
        return _kmeans(flat, bits)
    return _linear(flat, bits, symmetric=method == "linear_symmetric")


def _kmeans(flat: Tensor, bits: int) -> Quantized:
    distinct = torch.unique(flat)
    # With no more distinct values than levels, the codebook is the values themselves: lossless.
    if distinct.numel() <= 2**bits:
        codebook = distinct.to(torch.float32)
        codes = torch.searchsorted(distinct, flat)
        return Quantized(codebook, codes, bits)
    clustered = kmeans1d.cluster(flat.numpy(), 2**bits)
    codebook = torch.tensor(clustered.centroids, dtype=torch.float32)
    codes = torch.from_numpy(np.asarray(clustered.clusters, dtype=np.int64))
    return Quantized(codebook, codes, bits)


def _linear(flat: Tensor, bits: int, symmetric: bool) -> Quantized:
    levels = 2**bits
    if symmetric:
        high = float(flat.abs().max())
        low = -high
    else:
        low, high = float(flat.min()), float(flat.max())
    if high == low:
        return Quantized(torch.tensor([low], dtype=torch.float32), torch.zeros_like(flat, dtype=torch.int64), bits)
    # Round in float64 to the grid, then store the grid in float32: the error bound of half a
    # step holds up to float32 rounding of the levels themselves.
    grid = torch.linspace(low, high, levels, dtype=torch.float64)
    step = (high - low) / (levels - 1)
    codes = torch.round((flat - low) / step).clamp_(0, levels - 1).to(torch.int64)
    return Quantized(grid.to(torch.float32), codes, bits)


@dataclass(frozen=True)
class BitSearchResult:
    """Outcome of the bit-width search of one task."""

    bits: dict[str, int]  # chosen bit width per layer (all equal under the per-task scheme)
    quantized: dict[str, Quantized]  # the accepted quantisation of every layer
    accuracy: float  # validation accuracy (percent) with the accepted quantisation
    within_tolerance: bool  # False when even the widest setting lost more than the tolerance
    trace: list[dict]  # every setting tried: {"bits": {...}, "accuracy": ..., "accepted": ...}


def search_bit_widths(
    values: dict[str, Tensor],
    score: Callable[[dict[str, Tensor]], float],
    float_accuracy: float,
    method: str,
    max_bits: int = 6,
    min_bits: int = 1,
    tolerance: float = 2.0,
    per_layer: bool = False,
) -> BitSearchResult:
    """Find the smallest bit widths whose accuracy stays within ``tolerance`` of ``float_accuracy``.

    ``values[layer]`` holds one layer's weights of the task (1-D); ``score(dequantised)`` returns
    the validation accuracy with every layer set to the given values. The tolerance is one-sided:
    a bit width is accepted while ``float_accuracy - accuracy < tolerance``, so a gain never stops
    the descent; the descent stops at the first failure and keeps the last accepted setting.

    Per-task scheme (the paper's): one width for all layers, from ``max_bits`` down. Per-layer
    (hybrid extension): after all layers pass at ``max_bits``, each layer's sensitivity is measured
    (accuracy with that layer alone at ``min_bits``); then, least sensitive first, each layer is
    narrowed while the whole network stays within tolerance, so sensitive layers keep more bits.
    """
    if not min_bits <= max_bits:
        raise ValueError(f"min_bits={min_bits} must not exceed max_bits={max_bits}")
    cache: dict[tuple[str, int], Quantized] = {}

    def quantized_at(bits: dict[str, int]) -> dict[str, Quantized]:
        for name, b in bits.items():
            if (name, b) not in cache:
                cache[(name, b)] = quantize(values[name], b, method)
        return {name: cache[(name, b)] for name, b in bits.items()}

    trace: list[dict] = []

    def try_bits(bits: dict[str, int]) -> tuple[bool, float]:
        accuracy = score({name: q.values() for name, q in quantized_at(bits).items()})
        ok = float_accuracy - accuracy < tolerance
        trace.append({"bits": dict(bits), "accuracy": accuracy, "accepted": ok})
        return ok, accuracy

    def score_only(name: str) -> float:
        bits = {other: max_bits for other in names}
        bits[name] = min_bits
        return score({n: q.values() for n, q in quantized_at(bits).items()})

    names = list(values)
    widest = {name: max_bits for name in names}
    ok, best_accuracy = try_bits(widest)
    accepted = dict(widest)
    if ok:
        if per_layer:
            alone_at_min = {name: score_only(name) for name in names}
            for name in sorted(names, key=lambda n: -alone_at_min[n]):
                while accepted[name] > min_bits:
                    trial = {**accepted, name: accepted[name] - 1}
                    trial_ok, accuracy = try_bits(trial)
                    if not trial_ok:
                        break
                    accepted, best_accuracy = trial, accuracy
        else:
            for b in range(max_bits - 1, min_bits - 1, -1):
                trial = {name: b for name in names}
                trial_ok, accuracy = try_bits(trial)
                if not trial_ok:
                    break
                accepted, best_accuracy = trial, accuracy
    return BitSearchResult(accepted, quantized_at(accepted), best_accuracy, ok, trace)
