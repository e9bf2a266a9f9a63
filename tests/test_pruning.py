"""Prune ratios: the reference range and the capacity budget rule, with known answers."""

import pytest
import torch

from adaqpacknet.pruning import budget_prune_ratios, magnitude_keep_mask, sample_prune_ratios


def test_budget_gives_each_task_its_equal_share_of_the_pool():
    # u fixed at 1 (share range [1, 1]): a layer of 1000 weights, 600 free, 4 tasks to go, no reserve:
    # the task keeps 600 / 4 = 150 of its 600 free weights, so it prunes 450 / 600 = 0.75.
    ratios = budget_prune_ratios({"fc1": 600}, {"fc1": 1000}, 4, 1.0, (1.0, 1.0), torch.Generator().manual_seed(0))
    assert ratios == {"fc1": pytest.approx(0.75)}


def test_budget_keeps_the_reserve_free_and_the_last_task_takes_the_pool():
    g = torch.Generator().manual_seed(0)
    # capacity_budget 0.3: 700 of 1000 weights are the reserve; 800 free -> pool 100.
    ratios = budget_prune_ratios({"fc1": 800, "fc2": 50}, {"fc1": 1000, "fc2": 100}, 1, 0.3, (1.0, 1.0), g)
    assert ratios["fc1"] == pytest.approx(1 - 100 / 800)
    assert ratios["fc2"] == 1.0  # 50 free, reserve 70: nothing left to own
    # A draw above 1 can never take more than the pool.
    ratios = budget_prune_ratios({"fc1": 800}, {"fc1": 1000}, 1, 0.3, (1.5, 1.5), g)
    assert ratios["fc1"] == pytest.approx(1 - 100 / 800)


def test_budget_draws_one_share_per_layer_within_its_range():
    g = torch.Generator().manual_seed(1)
    free, sizes = {f"l{i}": 1000 for i in range(50)}, {f"l{i}": 1000 for i in range(50)}
    ratios = budget_prune_ratios(free, sizes, 10, 1.0, (0.5, 1.5), g)
    kept = [1000 * (1 - r) for r in ratios.values()]
    assert all(50 - 1e-9 <= k <= 150 + 1e-9 for k in kept) and len(set(kept)) == 50
    with pytest.raises(ValueError, match="tasks_left=0"):
        budget_prune_ratios(free, sizes, 0, 1.0, (0.5, 1.5), g)


def test_reference_ratios_and_magnitude_mask():
    ratios = sample_prune_ratios(["a", "b"], 0.4, 0.7, torch.Generator().manual_seed(0))
    assert all(0.4 <= r <= 0.7 for r in ratios.values())
    weight = torch.tensor([[0.1, -3.0, 0.2], [2.0, -0.05, 1.0]])
    candidates = torch.tensor([[True, True, True], [True, True, False]])
    keep = magnitude_keep_mask(weight, candidates, 0.4)  # prune round(0.4 * 5) = 2 of the 5 candidates
    assert keep.tolist() == [[False, True, True], [True, False, False]]
