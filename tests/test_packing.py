"""The packed file: exact round trip, a ledger that adds up, and every corruption detected."""

import json
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
import torch

from adaqpacknet import packing
from adaqpacknet.config import Config
from adaqpacknet.learner import AdaQPacknet
from adaqpacknet.ownership import owner_maps, prunable_layers, raw_weight
from adaqpacknet.packing import PackedFileError, PackedNetwork, entropy_coded_bytes, layout_bytes, probe_batch, storage_comparison
from adaqpacknet.results import PACKAGE_ROOT

from conftest import SMALL


def learn(scenario: str, **changes):
    """A learner over every task, with the packed file written after each task."""
    learner = AdaQPacknet(Config.from_dict({"scenario": scenario, **SMALL, **changes}))
    files = []
    for index in range(learner.scenario.num_tasks):
        learner.learn_task(index)
        learner.acc_matrix.append(learner.evaluate_seen())
        files.append(learner.pack())
    return learner, files


@pytest.fixture(scope="module")
def quantized():
    return learn("permuted_digits")


@pytest.fixture(scope="module")
def packed_file(quantized, tmp_path_factory):
    path = tmp_path_factory.mktemp("packed") / "packed.safetensors"
    path.write_bytes(quantized[1][-1][0])
    return path


def load_bytes(blob: bytes, tmp_path, name="packed.safetensors", **kwargs) -> PackedNetwork:
    path = tmp_path / name
    path.write_bytes(blob)
    return PackedNetwork.load(path, **kwargs)


def test_every_task_reloads_bit_exactly_after_every_later_task(quantized, tmp_path):
    learner, files = quantized
    for tasks_done, (blob, _) in enumerate(files, start=1):
        network = load_bytes(blob, tmp_path)
        assert network.num_tasks == tasks_done
        for index in range(tasks_done):
            x = probe_batch(learner.scenario.tasks[index].test)
            assert torch.equal(network(x, index), learner.probe_logits[index]), (tasks_done, index)


def test_owner_maps_codes_and_heads_decode_exactly(quantized, packed_file):
    learner, _ = quantized
    network = PackedNetwork.load(packed_file)
    for name, owner in owner_maps(learner.model).items():
        assert torch.equal(network.owner_maps[name], owner)
        owned = owner > 0
        assert torch.equal(network.values[name][owned], raw_weight(prunable_layers(learner.model)[name]).detach()[owned])
        assert not network.values[name][~owned].any(), "free weights are not stored"
    for index, (weight, bias) in enumerate(network.heads):
        assert torch.equal(weight, learner.model.heads[index].weight.detach())
        assert torch.equal(bias, learner.model.heads[index].bias.detach())


def test_task_networks_are_cached_and_see_only_earlier_tasks(packed_file):
    network = PackedNetwork.load(packed_file)
    first = network.task_network(0)
    assert network.task_network(0) is first
    for name, layer in prunable_layers(network.task_network(1)).items():
        visible = layer.weight != 0
        assert bool((network.owner_maps[name][visible] <= 2).all()), name
    with pytest.raises(IndexError, match="holds 3 tasks"):
        network.task_network(3)


def test_the_view_rule_is_in_the_file_only_when_it_is_not_the_default(packed_file):
    # Files of runs with reuse keep the keys they always had; a run without reuse says so, and
    # its task networks read their own weights only (tests/test_learner.py checks the logits).
    network = PackedNetwork.load(packed_file)
    assert "reuse_frozen" not in network.config
    for name, layer in prunable_layers(network.task_network(1)).items():
        assert bool((layer.weight[network.owner_maps[name] == 1] != 0).any()), name
    learner = AdaQPacknet(Config.from_dict({"scenario": "permuted_digits", **SMALL, "num_tasks": 2, "reuse_frozen": False}))
    for index in range(2):
        learner.learn_task(index)
    path = packed_file.parent / "isolated.safetensors"
    path.write_bytes(learner.pack()[0])
    isolated = PackedNetwork.load(path)
    assert isolated.config["reuse_frozen"] is False
    for name, layer in prunable_layers(isolated.task_network(1)).items():
        assert not bool((layer.weight[isolated.owner_maps[name] == 1] != 0).any()), name


def test_float_run_round_trip(tmp_path):
    learner, files = learn("split_digits", num_tasks=2, quantizer="none")
    network = load_bytes(files[-1][0], tmp_path)
    assert files[-1][1]["storage"] == "float32"
    for index in range(2):
        x = probe_batch(learner.scenario.tasks[index].test)
        assert torch.equal(network(x, index), learner.probe_logits[index])


def test_ledger_adds_up_to_the_bytes_on_disk(quantized, packed_file):
    _, files = quantized
    blob, ledger = files[-1]
    assert ledger["packed_bytes"] == len(blob) == packed_file.stat().st_size
    assert sum(ledger["sections"].values()) == ledger["packed_bytes"]
    assert ledger["sections"]["header"] < 4096
    streams = ledger["owner_maps"] + ledger["codes"]
    # Each stream's share of the ANS stack, plus at most two words of coder state.
    assert abs(sum(r["coded_bytes"] for r in streams) - ledger["sections"]["ans"]) <= 8
    assert sum(r["count_table_bytes"] for r in streams) == ledger["sections"]["symbol_counts"]
    assert sum(r["codebook_bytes"] for r in ledger["codes"]) == ledger["sections"]["codebooks"]
    assert ledger["entropy_bound_bytes"] <= ledger["packed_bytes"] <= 1.03 * ledger["entropy_bound_bytes"] + 4096


def test_owner_map_bound_is_the_empirical_entropy(quantized):
    learner, files = quantized
    ledger = files[-1][1]
    for row, owner in zip(ledger["owner_maps"], owner_maps(learner.model).values()):
        counts = torch.bincount(owner.flatten().long(), minlength=4).double()
        p = counts[counts > 0] / counts.sum()
        assert row["entropy_bytes"] == pytest.approx(float(-(p * p.log2()).sum() * counts.sum() / 8))
        assert row["raw_uint8_bytes"] == owner.numel()
        assert row["coded_bytes"] <= row["entropy_bytes"] + 8


def test_results_carry_the_sizes(quantized):
    learner, files = quantized
    results = learner.results()
    assert results["packed_bytes"] == len(files[-1][0])
    assert results["dense_float32_bytes"] == 4 * (results["weights"]["body"] + sum(results["weights"]["heads"][0].values()))
    assert "packed_bytes" not in results["bits_ledger"]


def test_storage_comparison_counts_each_layout():
    results = {"weights": {"body": 80, "heads": [{"weight": 20, "bias": 2}] * 3}, "packed_bytes": 123}
    assert storage_comparison(results) == {"float32_per_task": 4 * 3 * (80 + 22), "packed": 123}
    assert layout_bytes(80, [22] * 3)["packnet_raw"] == 4 * 80 + 80 + 4 * 66


def test_entropy_coded_bytes_follow_the_entropy_of_each_stream():
    rng = np.random.default_rng(0)
    fair = [rng.integers(0, 2, 4096) for _ in range(3)]
    skewed = [(rng.random(4096) < 0.05).astype(np.int64) for _ in range(3)]
    # A fair coin costs its bit (uniform model, no table); a 5% mask about H(0.05) = 0.29 bit plus
    # its count table; one byte per stream names its model.
    assert 3 * 512 + 3 <= entropy_coded_bytes(fair, 2) <= 3 * 512 + 3 + 8
    bound = 3 * 4096 * 0.2864 / 8
    assert bound < entropy_coded_bytes(skewed, 2) < bound * 1.05 + 3 * (8 + 1) + 8


def test_a_changed_frozen_weight_cannot_be_packed(quantized):
    learner, _ = quantized
    clone = AdaQPacknet(learner.config, learner.scenario)
    clone.model.load_state_dict(learner.model.state_dict())
    clone.codebooks, clone.per_task = learner.codebooks, learner.per_task
    weight = raw_weight(prunable_layers(clone.model)["fc1"])
    with torch.no_grad():
        weight[owner_maps(clone.model)["fc1"] == 1] += 1e-3
    with pytest.raises(ValueError, match="not levels of their codebook"):
        clone.pack()


def test_corruptions_are_all_detected(packed_file, tmp_path):
    blob = packed_file.read_bytes()
    target = tmp_path / "corrupt.safetensors"
    kinds = {"truncate": 0, "flip": 0, "insert": 0}
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        kind = ("truncate", "flip", "insert")[seed % 3]
        kinds[kind] += 1
        if kind == "truncate":
            bad = blob[: int(rng.integers(0, len(blob)))]
        elif kind == "flip":
            position, bit = int(rng.integers(0, len(blob))), int(rng.integers(0, 8))
            bad = blob[:position] + bytes([blob[position] ^ (1 << bit)]) + blob[position + 1 :]
        else:
            position = int(rng.integers(0, len(blob) + 1))
            bad = blob[:position] + bytes([int(rng.integers(0, 256))]) + blob[position:]
        target.write_bytes(bad)
        with pytest.raises(PackedFileError) as error:
            PackedNetwork.load(target)
        assert str(target) in str(error.value), (seed, kind)
    assert min(kinds.values()) >= 333


def rewritten(blob: bytes, change) -> bytes:
    """``blob`` with its metadata changed by ``change(meta)`` and a valid checksum."""
    length = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8 : 8 + length])["__metadata__"]
    change(meta)
    meta["sha256"] = "0" * 64
    return packing._with_checksum(safetensors.numpy.save(safetensors.numpy.load(blob), metadata=meta))


def test_named_faults(packed_file, tmp_path):
    blob = packed_file.read_bytes()
    faults = {
        "truncated": (blob[:-100], "checksum mismatch"),
        "flipped": (blob[:-5] + bytes([blob[-5] ^ 0xFF]) + blob[-4:], "checksum mismatch"),
        "version": (rewritten(blob, lambda m: m.update(format_version="99")), "format version '99'"),
        "format": (rewritten(blob, lambda m: m.update(format="something-else")), "is not a packed network"),
        "tiny": (blob[:5], "too short"),
    }

    def other_architecture(meta):
        arch = json.loads(meta["architecture"])
        arch["input_shape"] = [1, 16, 16]
        meta["architecture"] = json.dumps(arch)

    faults["architecture"] = (rewritten(blob, other_architecture), "another architecture")
    for name, (bad, message) in faults.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(bad)
        with pytest.raises(PackedFileError, match=message) as error:
            PackedNetwork.load(path)
        assert str(path) in str(error.value)
    # A valid file, but not the network the caller expects.
    expected = dict(PackedNetwork.load(packed_file).architecture, model="small_conv")
    with pytest.raises(PackedFileError, match="another architecture"):
        PackedNetwork.load(packed_file, expected_architecture=expected)
    # A checksum-valid rewrite loads: the checks above are about content, not about rewriting.
    assert PackedNetwork.load(load_path(tmp_path, rewritten(blob, lambda m: None))).num_tasks == 3


def load_path(tmp_path, blob):
    path = tmp_path / "rewritten.safetensors"
    path.write_bytes(blob)
    return path


def test_a_fresh_process_reproduces_every_task_from_the_file(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "adaqpacknet"]
    subprocess.run(
        [*command, "run", "--out", str(run_dir), "scenario=split_digits", "num_tasks=2", "epochs=1", "batch_size=32", "progress=false"],
        check=True, capture_output=True, cwd=PACKAGE_ROOT,
    )
    verified = subprocess.run([*command, "verify-packed", str(run_dir)], capture_output=True, text=True, cwd=PACKAGE_ROOT)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every task reproduced exactly" in verified.stdout
    assert verified.stdout.count("bit-identical") == 2


def test_the_same_run_packs_to_the_same_bytes_in_any_folder(tmp_path):
    # Two clones differ in their paths only: the packed file must not record any of them.
    blobs = []
    for clone in ("first", "second-with-a-longer-name"):
        run_dir = tmp_path / clone / "run"
        subprocess.run(
            [sys.executable, "-m", "adaqpacknet", "run", "--out", str(run_dir), f"data_root={tmp_path / clone / 'data'}",
             "scenario=split_digits", "num_tasks=2", "epochs=1", "batch_size=32", "progress=false"],
            check=True, capture_output=True, cwd=PACKAGE_ROOT,
        )
        blobs.append((run_dir / "packed.safetensors").read_bytes())
        assert str(tmp_path).encode() not in blobs[-1]
    assert blobs[0] == blobs[1]
