"""Continual-learning metrics over the accuracy matrix (shared method.md §4).

``R[i][j]`` is the test accuracy (percent) on task j after training task i, for j <= i; the matrix
is lower-triangular (a list of rows of growing length). The field uses several BWT and forgetting
formulas, so each function names the one it computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

AccuracyMatrix = Sequence[Sequence[float]]

BWT_DEFINITION = "BWT (Lopez-Paz & Ranzato 2017): mean_{j<T} (R[T,j] - R[j,j])"
FORGETTING_DEFINITION = "Forgetting (Chaudhry et al. 2018): mean_{j<T} (max_{i<T} R[i,j] - R[T,j])"
ACC_DEFINITION = "ACC: mean_j R[T,j], test accuracy on every task after the last one"
# The spread of every "mean ± std" in tables and figures: the seeds are a sample of the seeds one
# could draw, so the sample standard deviation (ddof=1); one seed has none (0).
SEED_STD_DDOF = 1
STD_DEFINITION = "mean ± sample standard deviation (ddof=1; 0 for a single value) over seeds, or over what a caption names (T2: tasks and seeds), in every table and figure"


def std_over_seeds(values: Sequence | np.ndarray, axis: int = 0) -> np.ndarray | float:
    """The spread over seeds (axis ``axis``) under ``SEED_STD_DDOF``; 0 where there is one seed."""
    values = np.asarray(values, dtype=float)
    if values.shape[axis] < 2:
        return np.zeros_like(values.mean(axis))
    return values.std(axis, ddof=SEED_STD_DDOF)


def _check(matrix: AccuracyMatrix) -> int:
    for i, row in enumerate(matrix):
        if len(row) != i + 1:
            raise ValueError(f"row {i} of the accuracy matrix has {len(row)} entries; expected {i + 1}")
    if not matrix:
        raise ValueError("the accuracy matrix is empty")
    return len(matrix)


def average_accuracy(matrix: AccuracyMatrix) -> float:
    """ACC = mean_j R[T, j]."""
    last = matrix[_check(matrix) - 1]
    return sum(last) / len(last)


def backward_transfer(matrix: AccuracyMatrix) -> float:
    """BWT (Lopez-Paz & Ranzato 2017) = mean_{j<T} (R[T, j] - R[j, j]); 0.0 for a single task."""
    T = _check(matrix)
    if T == 1:
        return 0.0
    return sum(matrix[T - 1][j] - matrix[j][j] for j in range(T - 1)) / (T - 1)


def forgetting(matrix: AccuracyMatrix) -> float:
    """Forgetting (Chaudhry et al. 2018) = mean_{j<T} (max_{i<T} R[i, j] - R[T, j])."""
    T = _check(matrix)
    if T == 1:
        return 0.0
    return sum(max(matrix[i][j] for i in range(j, T - 1)) - matrix[T - 1][j] for j in range(T - 1)) / (T - 1)


def bit_weighted_capacity(owned: Sequence[Mapping[str, int]], bits: Sequence[Mapping[str, int]], total_weights: int) -> float:
    """sum_t sum_l owned[t][l] * bits[t][l] / (32 * all body weights).

    ``owned[t][layer]`` counts the weights task t owns in a layer, ``bits[t][layer]`` their bit
    width (32 for weights kept in float32).
    """
    if total_weights <= 0:
        raise ValueError(f"total_weights={total_weights} must be > 0")
    stored = sum(n * task_bits[layer] for task_owned, task_bits in zip(owned, bits) for layer, n in task_owned.items())
    return stored / (32 * total_weights)

