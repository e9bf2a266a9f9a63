"""Quantisers, magnitude pruning and the bit-width search."""

import pytest
import torch

from adaqpacknet.pruning import magnitude_keep_mask, sample_prune_ratios
from adaqpacknet.quantization import quantize, search_bit_widths


def test_kmeans_is_lossless_when_k_covers_the_distinct_values():
    values = torch.tensor([0.5, -1.25, 0.5, 3.0, -1.25, 7.0])  # 4 distinct values
    for bits in (2, 3, 6):
        q = quantize(values, bits, "kmeans")
        assert torch.equal(q.values(), values)
        assert len(q.codebook) <= 2**bits


def test_kmeans_fits_the_given_weights_only_and_uses_at_most_2_to_the_b_levels():
    values = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    for bits in range(1, 7):
        q = quantize(values, bits, "kmeans")
        assert len(torch.unique(q.values())) <= 2**bits
        assert q.codes.shape == values.shape
    # More levels, less error: the optimal 1-D clustering is monotone in k.
    errors = [float((quantize(values, b, "kmeans").values() - values).pow(2).mean()) for b in range(1, 7)]
    assert errors == sorted(errors, reverse=True)


def test_kmeans_is_deterministic():
    values = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    a, b = quantize(values, 3, "kmeans"), quantize(values, 3, "kmeans")
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.codes, b.codes)


@pytest.mark.parametrize("method", ["linear", "linear_symmetric"])
def test_linear_error_is_at_most_half_a_step(method):
    values = torch.randn(4000, generator=torch.Generator().manual_seed(2)) * 0.1 + 0.03
    for bits in range(1, 9):
        q = quantize(values, bits, method)
        if method == "linear":
            span = float(values.max() - values.min())
        else:
            span = 2 * float(values.abs().max())
        half_step = span / (2**bits - 1) / 2
        assert float((q.values() - values).abs().max()) <= half_step * (1 + 1e-5) + 1e-7
        assert len(q.codebook) == 2**bits


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown quantizer 'lloyd'; valid choices: kmeans"):
        quantize(torch.ones(3), 2, "lloyd")
    with pytest.raises(ValueError, match="bits=9"):
        quantize(torch.ones(3), 9, "kmeans")


def test_magnitude_pruning_prunes_exactly_the_ratio_despite_ties():
    weight = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -2.0, 0.5, 0.0])
    candidates = torch.tensor([True, True, True, True, True, True, True, False])
    keep = magnitude_keep_mask(weight, candidates, 0.5)  # 7 candidates: prune round(3.5) = 4
    assert int(keep.sum()) == 3
    assert keep.tolist() == [False, False, False, False, True, True, True, False]
    assert not bool((keep & ~candidates).any())


def test_sampled_ratios_lie_in_bounds_and_follow_the_seed():
    names = [f"l{i}" for i in range(50)]
    a = sample_prune_ratios(names, 0.4, 0.7, torch.Generator().manual_seed(0))
    b = sample_prune_ratios(names, 0.4, 0.7, torch.Generator().manual_seed(0))
    assert a == b and all(0.4 <= r <= 0.7 for r in a.values())


def _fake_score(sensitivity):
    # Accuracy falls by `sensitivity[layer]` per missing bit below 8, read off the number of levels.
    def score(dequantised):
        loss = 0.0
        for name, values in dequantised.items():
            bits = max(1, int(torch.unique(values).numel() - 1).bit_length())
            loss += sensitivity[name] * (8 - bits)
        return 90.0 - loss

    return score


def test_bit_search_stops_at_the_first_failure_one_sided():
    values = {"a": torch.randn(2000, generator=torch.Generator().manual_seed(3))}
    result = search_bit_widths(values, _fake_score({"a": 0.6}), 90.0, "kmeans", 6, 1, tolerance=2.0)
    # 8-b bits cost 0.6 each: b=5 costs 1.8 (< 2, accepted), b=4 costs 2.4 (rejected).
    assert result.bits == {"a": 5} and result.within_tolerance
    assert [t["bits"]["a"] for t in result.trace] == [6, 5, 4]

    gains = search_bit_widths(values, lambda d: 95.0, 90.0, "kmeans", 6, 1, tolerance=0.0)
    assert gains.bits == {"a": 1}  # a gain never stops the descent, even at zero tolerance


def test_per_layer_bits_keep_more_bits_in_sensitive_layers():
    g = torch.Generator().manual_seed(4)
    values = {"sensitive": torch.randn(500, generator=g), "robust": torch.randn(500, generator=g)}
    score = _fake_score({"sensitive": 0.5, "robust": 0.01})
    result = search_bit_widths(values, score, 90.0, "kmeans", 6, 1, tolerance=2.0, per_layer=True)
    assert result.bits["robust"] < result.bits["sensitive"]
    uniform = search_bit_widths(values, score, 90.0, "kmeans", 6, 1, tolerance=2.0)
    assert len(set(uniform.bits.values())) == 1


def test_bit_search_that_fails_at_the_widest_setting_says_so():
    values = {"a": torch.randn(100, generator=torch.Generator().manual_seed(5))}
    result = search_bit_widths(values, lambda d: 10.0, 90.0, "linear", 6, 1, tolerance=2.0)
    assert result.bits == {"a": 6} and not result.within_tolerance


def test_per_layer_search_narrows_the_least_sensitive_layer_first():
    g = torch.Generator().manual_seed(6)
    values = {"a": torch.randn(500, generator=g), "b": torch.randn(500, generator=g)}
    score = _fake_score({"a": 0.3, "b": 0.05})
    # In layer order, "a" would take the whole budget (a=2, b=5); by sensitivity "b" goes first.
    result = search_bit_widths(values, score, 90.0, "kmeans", 6, 1, tolerance=2.0, per_layer=True)
    assert result.bits == {"a": 3, "b": 1}
