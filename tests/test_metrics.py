"""Metric functions against hand-computed accuracy matrices."""

import pytest

from adaqpacknet import metrics

NO_FORGETTING = [[90.0], [90.0, 80.0], [90.0, 80.0, 70.0]]
# Task 0 peaks at 95 after task 1, then drops to 85; task 1 drops from 80 to 60.
WITH_FORGETTING = [[90.0], [95.0, 80.0], [85.0, 60.0, 70.0]]


def test_acc_is_the_mean_of_the_last_row():
    assert metrics.average_accuracy(NO_FORGETTING) == pytest.approx(80.0)
    assert metrics.average_accuracy(WITH_FORGETTING) == pytest.approx(215.0 / 3)


def test_bwt_lopez_paz():
    assert metrics.backward_transfer(NO_FORGETTING) == 0.0
    # ((85 - 90) + (60 - 80)) / 2
    assert metrics.backward_transfer(WITH_FORGETTING) == pytest.approx(-12.5)


def test_forgetting_chaudhry_uses_the_best_earlier_accuracy():
    assert metrics.forgetting(NO_FORGETTING) == 0.0
    # task 0: max(90, 95) - 85 = 10; task 1: 80 - 60 = 20
    assert metrics.forgetting(WITH_FORGETTING) == pytest.approx(15.0)


def test_single_task():
    assert metrics.backward_transfer([[50.0]]) == 0.0
    assert metrics.forgetting([[50.0]]) == 0.0


def test_malformed_matrix():
    with pytest.raises(ValueError, match="row 1"):
        metrics.average_accuracy([[1.0], [1.0]])
    with pytest.raises(ValueError, match="empty"):
        metrics.backward_transfer([])


def test_bit_weighted_capacity():
    owned = [{"a": 10, "b": 0}, {"a": 5, "b": 20}]
    bits = [{"a": 4, "b": 4}, {"a": 2, "b": 8}]
    # (10*4 + 5*2 + 20*8) / (32 * 100)
    assert metrics.bit_weighted_capacity(owned, bits, 100) == pytest.approx(210 / 3200)
