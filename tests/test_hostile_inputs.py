"""Crafted hostile and broken inputs: every case raises the package's own error, naming the file or
the value, before any work and within bounded memory and time (``bounded.refused``).

Packed files here have valid checksums: the checksum guards against accidents, and these cases
check what the loader does with a file that is consistent on the outside and hostile inside.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from bounded import refused

from adaqpacknet import experiments, packing, results, runs
from adaqpacknet.config import Config
from adaqpacknet.data import clear_source_cache, fake, load_source
from adaqpacknet.data.scenarios import TaskDataset
from adaqpacknet.learner import AdaQPacknet
from adaqpacknet.models import build_model
from adaqpacknet.ownership import prunable_layers
from adaqpacknet.packing import PackedFileError, PackedNetwork
from adaqpacknet.results import CorruptFileError
from adaqpacknet.training import DivergedError, TrainSettings, fit

# --- packed files --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packed_blob() -> bytes:
    learner = AdaQPacknet(Config(scenario="split_digits", num_tasks=2, epochs=1, finetune_epochs=1, batch_size=32, progress=False, device="cpu"))
    for index in range(2):
        learner.learn_task(index)
        learner.acc_matrix.append(learner.evaluate_seen())
    return learner.pack()[0]


def _parts(blob: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    length = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + length])["__metadata__"], safetensors.numpy.load(blob)


def crafted(blob: bytes, meta_change=None, tensor_change=None) -> bytes:
    """``blob`` with its metadata and tensors changed and a valid checksum."""
    meta, tensors = _parts(blob)
    if meta_change:
        meta_change(meta)
    if tensor_change:
        tensor_change(tensors)
    meta["sha256"] = "0" * 64
    return packing._with_checksum(packing._sorted_header(safetensors.numpy.save(tensors, metadata=meta)))


def architecture(**changes):
    def change(meta):
        meta["architecture"] = json.dumps({**json.loads(meta["architecture"]), **changes})
    return change


def tensor(name, value):
    def change(tensors):
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value(tensors[name]) if callable(value) else value
    return change


def _without_first_codebook(tensors) -> None:
    """Task 1's first body layer keeps its owned weights but gets 0 levels (its codebook removed)."""
    levels = tensors["levels"].copy()
    size, levels[0, 0] = int(levels[0, 0]), 0
    tensors.update(levels=levels, codebooks=tensors["codebooks"][size:])


PACKED_CASES = {
    # name: (metadata change, tensor change, message)
    "200,000 tasks": (lambda m: m.update(num_tasks="200000"), None, "'num_tasks' is '200000'; expected a whole number in 1..255"),
    "num_tasks not a number": (lambda m: m.update(num_tasks="2; rm -rf"), None, "'num_tasks'"),
    "huge input shape": (architecture(input_shape=[3, 40000, 40000]), None, r"'architecture.input_shape' is \[3, 40000, 40000\]"),
    "input shape of another network": (architecture(input_shape=[1, 1024, 1024]), None, "another architecture"),
    "feature_dim 1": (architecture(feature_dim=1), None, "another architecture.*feature_dim 1"),
    "unknown model": (architecture(model="evil"), None, "'architecture.model' is 'evil'; valid choices"),
    "too many classes": (architecture(classes_per_task=[100000, 100000]), None, "declares 25851488 weights .* pays for at most"),
    "more classes than the streams hold": (architecture(classes_per_task=[1000, 1000]), None, "its streams need at least .* bytes but the coded payload holds"),
    "a head for every class of 255 tasks": (
        lambda m: (architecture(classes_per_task=[100000] * 255)(m), m.update(num_tasks="255")), None, "head weights"),
    "classes for 3 tasks in a 2-task file": (architecture(classes_per_task=[2, 2, 2]), None, "'architecture.classes_per_task'"),
    "layers of absurd size": (architecture(layers={"fc1": [1 << 24, 1 << 24]}), None, "body weights"),
    "deep JSON": (lambda m: m.update(architecture="[" * 20_000 + "]" * 20_000), None, "'architecture' is not valid JSON"),
    "architecture a list": (lambda m: m.update(architecture="[1, 2]"), None, "'architecture' is not a JSON object"),
    "missing architecture": (lambda m: m.pop("architecture"), None, "'architecture' is missing"),
    "unknown storage": (lambda m: m.update(storage="pickle"), None, "'storage' is 'pickle'"),
    "bits 200": (None, tensor("bits", lambda b: np.full_like(b, 200)), "'bits' holds widths 200..200"),
    "bits of another shape": (None, tensor("bits", lambda b: b[:1]), "tensor 'bits' is uint8 of shape"),
    "bits as float": (None, tensor("bits", lambda b: b.astype(np.float32)), "tensor 'bits' is float32"),
    "NaN codebook": (None, tensor("codebooks", lambda c: np.where(np.arange(len(c)) == 0, np.nan, c).astype(np.float32)), "not finite"),
    "inf codebook": (None, tensor("codebooks", lambda c: np.full_like(c, np.inf)), "not finite"),
    "huge codebook": (None, tensor("codebooks", lambda c: np.full_like(c, 1e30)), "beyond"),
    "one-level codebooks": (None, tensor("levels", lambda lv: np.ones_like(lv)), "'codebooks' has .* levels; 'levels' adds up to"),
    "more levels than bits allow": (None, tensor("levels", lambda lv: (lv.astype(np.int64) * 0 + 65535).astype(np.uint16)), "more than 2\\^bits"),
    "unknown coder model": (None, tensor("stream_models", lambda s: np.full_like(s, 7)), "'stream_models' holds a coder model"),
    "symbol counts that do not add up": (None, tensor("symbol_counts", lambda c: c + 1), "does not decode"),
    "coded stream cut short": (None, tensor("ans", lambda a: a[:1]), "does not decode"),
    "coded stream of zeros": (None, tensor("ans", lambda a: np.zeros_like(a)), "does not decode"),
    "tensor missing": (None, tensor("levels", None), "holds tensors"),
    "num_tasks of 5000 digits": (lambda m: m.update(num_tasks="0" * 5000), None, r"'num_tasks' is '0+\.\.\.0+'; expected a whole number"),
    "config with a key pack never writes": (lambda m: m.update(config='{"evil": 1}'), None, r"'config' has keys \['evil'\]; a packed file keeps only"),
    "config value a list": (lambda m: m.update(config='{"scenario": [1, 2]}'), None, r"'config.scenario' is \[1, 2\]; expected a number"),
    "reuse_frozen a string": (lambda m: m.update(config='{"reuse_frozen": "no"}'), None, "'config.reuse_frozen' is 'no'; expected true or false"),
    "owned weights with an empty codebook": (None, lambda t: _without_first_codebook(t), "task 1's 129 weights of conv1 have an empty codebook"),
    "one-level codebooks with coded streams": (None, lambda t: t.update(levels=np.ones_like(t["levels"]), codebooks=t["codebooks"][: t["levels"].size]),
        "a stream of 129 symbols of one possible value is marked as coded"),
    "tensor added": (None, lambda t: t.update(evil=np.zeros(3, np.float32)), "holds tensors"),
}


@pytest.mark.parametrize("case", list(PACKED_CASES))
def test_hostile_packed_file(case, packed_blob, tmp_path):
    meta_change, tensor_change, message = PACKED_CASES[case]
    path = tmp_path / "packed.safetensors"
    path.write_bytes(crafted(packed_blob, meta_change, tensor_change))
    error = refused(lambda: PackedNetwork.load(path), PackedFileError, message)
    assert str(path) in str(error)


def test_the_crafting_itself_keeps_a_valid_file_loadable(packed_blob, tmp_path):
    path = tmp_path / "packed.safetensors"
    path.write_bytes(crafted(packed_blob))
    assert PackedNetwork.load(path).num_tasks == 2


def test_metadata_values_that_are_not_strings(packed_blob, tmp_path):
    meta, tensors = _parts(packed_blob)
    length = int.from_bytes(packed_blob[:8], "little")
    header = json.loads(packed_blob[8 : 8 + length])
    header["__metadata__"]["num_tasks"] = 2  # safetensors itself would write a string
    text = json.dumps(header, separators=(",", ":")).encode()
    path = tmp_path / "packed.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + packed_blob[8 + length :])
    refused(lambda: PackedNetwork.load(path), PackedFileError, "not an object of strings")


def free_network_file(model: str, input_shape: tuple[int, int, int], num_tasks: int, levels: int = 1) -> bytes:
    """A packed file, valid in structure and checksum, of ``model`` for ``input_shape`` with
    ``num_tasks`` one-class tasks and every body weight free: owner maps of zeros (a counted stream
    of one symbol costs no bits at all), heads coded with one-level codebooks (nothing coded), and
    ``levels`` codebook levels per task for each body layer (paying bytes that decode nothing)."""
    with torch.device("meta"):
        network = build_model(model, input_shape, [1] * num_tasks)
    layers = {name: list(layer.weight.shape) for name, layer in prunable_layers(network).items()}
    names = packing.tensor_names(list(layers))
    streams = [packing._Stream(name, 0, np.zeros(math.prod(shape), np.int32), num_tasks + 1) for name, shape in layers.items()]
    words, kinds, _ = packing._encode(streams)
    table = np.ones((num_tasks, len(names)), np.uint16)
    table[:, : len(layers)] = levels
    tensors = {
        "ans": words,
        "stream_models": np.concatenate([kinds, np.zeros(num_tasks * len(names), np.uint8)]),
        "symbol_counts": np.concatenate([s.counts() for s, k in zip(streams, kinds) if k == packing.COUNTED]),
        "bits": np.full((num_tasks, len(names)), max(1, (levels - 1).bit_length()), np.uint8),
        "levels": table,
        "codebooks": np.zeros(int(table.sum()), np.float32),
    }
    arch = {"model": model, "input_shape": list(input_shape), "classes_per_task": [1] * num_tasks, "layers": layers, "feature_dim": network.feature_dim}
    meta = {
        "format": packing.FORMAT, "format_version": str(packing.FORMAT_VERSION), "coder": packing.CODER, "sha256": "0" * 64,
        "num_tasks": str(num_tasks), "storage": "quantized", "architecture": json.dumps(arch), "config": "{}",
    }
    return packing._with_checksum(packing._sorted_header(safetensors.numpy.save(tensors, metadata=meta)))


FREE_FILES = {
    # name: (model, input shape, tasks, most bytes the file has)
    "255 tasks of a 33.5 M-weight MLP, every weight free": ("mlp", (3, 334, 334), 255, 12_500),
    "8 tasks of a 27 M-weight conv network, every weight free": ("tinyimagenet_conv", (3, 256, 256), 8, 2_000),
}


@pytest.mark.parametrize("case", list(FREE_FILES))
def test_a_file_that_declares_more_weights_than_its_payload_pays_for(case, tmp_path):
    model, input_shape, tasks, most_bytes = FREE_FILES[case]
    path = tmp_path / "packed.safetensors"
    path.write_bytes(free_network_file(model, input_shape, tasks))
    assert path.stat().st_size <= most_bytes
    error = refused(lambda: PackedNetwork.load(path), PackedFileError, r"declares \d+ weights \(\d+ body weights, free ones included, .* pays for at most \d+")
    assert str(path) in str(error)


def test_a_paid_for_file_of_255_tasks_loads_in_time_linear_in_its_weights(tmp_path):
    # 8.4 M free weights, paid for by codebook levels: a mask per task would scan them 255 times.
    path = tmp_path / "packed.safetensors"
    path.write_bytes(free_network_file("mlp", (3, 144, 194), 255, levels=16))
    start = time.perf_counter()
    network = PackedNetwork.load(path)
    assert time.perf_counter() - start < 2.0
    assert network.num_tasks == 255 and not any(values.any() for values in network.values.values())


def test_a_header_longer_than_any_packed_file_has(packed_blob, tmp_path):
    # A 98 MB header (one metadata string): refused from its first 8 bytes, never read or parsed.
    path = tmp_path / "packed.safetensors"
    path.write_bytes(crafted(packed_blob, lambda m: m.update(padding=" " * 98_000_000)))
    error = refused(lambda: PackedNetwork.load(path), PackedFileError, r"the header claims 980\d{5} bytes; a packed file's header has at most 65536")
    assert str(path) in str(error)


SPECIAL_FILES = {
    "a symlink to /dev/zero": (lambda path: path.symlink_to("/dev/zero"), "character device"),
    "a FIFO": (lambda path: os.mkfifo(path), "FIFO"),
}


@pytest.mark.parametrize("case", list(SPECIAL_FILES))
def test_a_packed_file_that_is_not_a_regular_file(case, tmp_path):
    make, kind = SPECIAL_FILES[case]
    path = tmp_path / "packed.safetensors"
    make(path)
    refused(lambda: PackedNetwork.load(path), PackedFileError, re.escape(str(path)) + rf" is not a regular file \(it is a {kind}\)")


def test_a_huge_value_in_the_metadata_is_shortened_in_the_message(packed_blob, tmp_path):
    path = tmp_path / "packed.safetensors"
    path.write_bytes(crafted(packed_blob, architecture(model="x" * 50_000)))
    error = refused(lambda: PackedNetwork.load(path), PackedFileError, "'architecture.model' is 'x+\\.\\.\\.x+'; valid choices")
    assert len(str(error)) < 500


# --- checkpoints ---------------------------------------------------------------------------------

def _checkpoint(tmp_path) -> tuple[Path, dict]:
    run = tmp_path / "run"
    state = {
        "schema_version": results.SCHEMA_VERSION, "config": {}, "tasks_done": 1, "acc_matrix": [[90.0]],
        "per_task": [{"task": 1}], "environment": {}, "resumed_in": [],
    }
    results.save_checkpoint(run, {"w": torch.zeros(2)}, state, tag="task001")
    return run, json.loads((run / results.CHECKPOINT_STATE).read_text())


CHECKPOINT_CASES = {
    "tasks_done without its reports": (lambda s: s.update(tasks_done=3), "tasks_done=3 but it holds 1 task reports"),
    "negative tasks_done": (lambda s: s.update(tasks_done=-1), "tasks_done=-1"),
    "tasks_done a string": (lambda s: s.update(tasks_done="1"), "'tasks_done' is str, expected int"),
    "tensor file outside the folder": (lambda s: s.update(tensors_file="../../etc/passwd"), "is not a checkpoint file name"),
    "absolute tensor file": (lambda s: s.update(tensors_file="/etc/passwd"), "is not a checkpoint file name"),
    "checksum not a digest": (lambda s: s.update(tensors_sha256="abc"), "not a SHA-256 digest"),
    "missing field": (lambda s: s.pop("per_task"), "'per_task' is missing"),
    "accuracy rows longer than the tasks": (lambda s: s.update(acc_matrix=[[1.0, 2.0]]), "acc_matrix is not"),
    "accuracy that is not a number": (lambda s: s.update(acc_matrix=[["x"]]), "acc_matrix is not"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_malformed_checkpoint_state(case, tmp_path):
    change, message = CHECKPOINT_CASES[case]
    run, state = _checkpoint(tmp_path)
    change(state)
    path = run / results.CHECKPOINT_STATE
    path.write_text(json.dumps(state))
    error = refused(lambda: results.load_checkpoint(run), CorruptFileError, re.escape(str(path)) + ".*" + message)
    assert "delete" in str(error)


@pytest.mark.parametrize("text, message", [("{", "is not valid JSON"), ("[1]", "holds a JSON list"), ("[" * 100_000, "is not valid JSON"), ("\udcff", "is not valid JSON")])
def test_checkpoint_state_that_is_not_an_object(text, message, tmp_path):
    run, _ = _checkpoint(tmp_path)
    path = run / results.CHECKPOINT_STATE
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    refused(lambda: results.load_checkpoint(run), CorruptFileError, re.escape(str(path)) + ".*" + message)


def test_tensor_file_with_a_valid_checksum_but_no_tensors(tmp_path):
    run, state = _checkpoint(tmp_path)
    garbage = b"not a safetensors file at all"
    (run / state["tensors_file"]).write_bytes(garbage)
    state["tensors_sha256"] = hashlib.sha256(garbage).hexdigest()
    (run / results.CHECKPOINT_STATE).write_text(json.dumps(state))
    refused(lambda: results.load_checkpoint(run), CorruptFileError, "is not a valid safetensors file")


# --- IDX files (the MNIST family) ----------------------------------------------------------------

def _fashion_root(tmp_path, monkeypatch) -> Path:
    """A data root with small valid gzip IDX files of Fashion-MNIST (and no system copy to fall back on)."""
    monkeypatch.setenv("ADAQPACKNET_FASHION_MNIST_DIR", str(tmp_path / "no-system-copy"))
    clear_source_cache()
    train, test = fake.fake_images(10, [2, 1], (1, 28, 28), 0)
    fake.write_mnist_family(tmp_path / "FashionMNIST" / "raw", train, test, compress=True)
    return tmp_path


def _idx(path: Path, header: bytes, payload: bytes) -> None:
    path.write_bytes(gzip.compress(header + payload, mtime=0))


IDX_CASES = {
    "a small .gz that claims 60,000,000 images": (
        "train-images-idx3-ubyte.gz", lambda p: _idx(p, struct.pack(">4B3I", 0, 0, 8, 3, 60_000_000, 28, 28), b""), "more than"),
    "a small .gz that expands far beyond its header": (
        "train-images-idx3-ubyte.gz", lambda p: _idx(p, struct.pack(">4B3I", 0, 0, 8, 3, 20, 28, 28), bytes(200 << 20)), "holds more"),
    "a truncated .gz": ("train-images-idx3-ubyte.gz", lambda p: p.write_bytes(p.read_bytes()[:-30]), "cannot be read"),
    "not an IDX file": ("train-labels-idx1-ubyte.gz", lambda p: _idx(p, b"PK\x03\x04", b"zip"), "is not a uint8 IDX file"),
    "24x32 images": ("train-images-idx3-ubyte.gz", lambda p: _idx(p, struct.pack(">4B3I", 0, 0, 8, 3, 20, 24, 32), bytes(20 * 24 * 32)), r"items of shape \(24, 32\); expected \(28, 28\)"),
    "images as a 1-D file": ("train-images-idx3-ubyte.gz", lambda p: _idx(p, struct.pack(">4BI", 0, 0, 8, 1, 20), bytes(20)), "has 1 dimensions; expected 3"),
    "a label out of range": ("train-labels-idx1-ubyte.gz", lambda p: _idx(p, struct.pack(">4BI", 0, 0, 8, 1, 20), bytes([12] * 20)), "holds label 12; fashion_mnist has classes 0..9"),
    "fewer labels than images": ("t10k-labels-idx1-ubyte.gz", lambda p: _idx(p, struct.pack(">4BI", 0, 0, 8, 1, 3), bytes(3)), "holds 10 images but .* 3 labels"),
    "a payload shorter than its header": ("t10k-images-idx3-ubyte.gz", lambda p: _idx(p, struct.pack(">4B3I", 0, 0, 8, 3, 10, 28, 28), bytes(100)), "holds 100"),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_broken_idx_file(case, tmp_path, monkeypatch):
    name, damage, message = IDX_CASES[case]
    root = _fashion_root(tmp_path, monkeypatch)
    path = root / "FashionMNIST" / "raw" / name
    damage(path)
    error = refused(lambda: load_source("fashion_mnist", root), CorruptFileError, message)
    assert str(root / "FashionMNIST" / "raw") in str(error)
    clear_source_cache()


def test_the_valid_idx_files_load(tmp_path, monkeypatch):
    root = _fashion_root(tmp_path, monkeypatch)
    assert load_source("fashion_mnist", root).train.images.shape == (20, 1, 28, 28)
    clear_source_cache()


# --- configurations ------------------------------------------------------------------------------

CONFIG_CASES = {
    "infinite weight decay": ({"weight_decay": float("inf")}, "weight_decay=inf must be a finite number"),
    "NaN weight decay": ({"weight_decay": float("nan")}, "weight_decay=nan must be a finite number"),
    "more permuted tasks than owner ids": ({"num_tasks": 300}, r"num_tasks=300 is outside the valid range 1..255 for permuted_fashion_mnist \(owner ids of ada_qpacknet\)"),
    "more split tasks than the classes allow": ({"scenario": "split_fashion_mnist", "num_tasks": 6}, "num_tasks=6 is outside the valid range 1..5"),
    "negative seed": ({"seed": -1}, "seed=-1 is outside the valid range"),
    "seed beyond 64 bits": ({"seed": 2**64}, "seed=18446744073709551616 is outside the valid range"),
    "a network for other inputs": ({"scenario": "split_digits", "model": "alexnet"}, r"model='alexnet' cannot take split_digits's \(1, 8, 8\) inputs"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(case):
    changes, message = CONFIG_CASES[case]
    refused(lambda: Config.from_dict(changes), ValueError, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_cuda_is_refused_before_the_data_is_read(tmp_path):
    config = Config(scenario="permuted_mnist", device="cuda", data_root=str(tmp_path / "no-data-here"))
    refused(lambda: AdaQPacknet(config), ValueError, "device='cuda' was asked for")


@pytest.mark.parametrize("profile", ["../elsewhere", "../../tmp/x", "a/b", "/etc", ".hidden", ""])
def test_a_profile_is_a_simple_name(profile):
    for kind in ("runs", "results", "tables", "figures"):
        refused(lambda: results.profile_folder(kind, profile), ValueError, f"profile={re.escape(repr(profile))} is not a profile name")
    refused(lambda: experiments.results_file("", profile, "10_permuted"), ValueError, "is not a profile name")


def test_a_non_finite_loss_stops_training_naming_the_task_and_epoch():
    # Images that transform to NaN: the loss is NaN from the first step on.
    model = build_model("mlp", (1, 8, 8), [2])
    data = TaskDataset(torch.zeros(16, 1, 8, 8, dtype=torch.uint8), torch.zeros(16, dtype=torch.long), lambda x: x * float("nan"))
    settings = TrainSettings(**{f.name: getattr(Config(progress=False), f.name) for f in dataclasses.fields(TrainSettings)})
    trainable = {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in prunable_layers(model).items()}
    refused(
        lambda: fit(model, 0, data, data, trainable, 2, settings, torch.device("cpu"), torch.Generator().manual_seed(0), "task 3"),
        DivergedError, r"task 3: the training loss is nan in epoch 1/2",
    )


# --- concurrency and what a kill leaves behind ----------------------------------------------------

def test_a_second_process_on_a_run_folder_waits_for_the_first(tmp_path, capsys):
    import threading

    events = []
    holding = threading.Event()

    def first():
        with results.folder_lock(tmp_path):
            holding.set()
            time.sleep(0.5)
            events.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait()
    with results.folder_lock(tmp_path):  # a separate open file: flock treats it as another process
        events.append("second in")
    thread.join()
    assert events == ["first done", "second in"]
    assert f"waiting for another process working in {tmp_path}" in capsys.readouterr().out


def test_a_run_removes_what_an_interrupted_write_left(tmp_path):
    from adaqpacknet.runs import run

    out = tmp_path / "run"
    out.mkdir()
    leftover = out / ".results.json.k2j4.tmp"
    leftover.write_text("half a file")
    run(Config(scenario="split_digits", num_tasks=1, epochs=1, finetune_epochs=0, batch_size=64, progress=False, device="cpu"), out)
    assert not leftover.exists() and (out / "results.json").is_file()


def test_checkpoints_are_the_same_bytes_in_every_process(tmp_path):
    # safetensors writes its header from a hash map: the same state must still give the same bytes.
    script = (
        "import sys, torch; from adaqpacknet import results\n"
        "tensors = {f'model/layer{i}.weight': torch.arange(i + 3, dtype=torch.float32) for i in range(12)}\n"
        "tensors.update({f'extra/{i}': torch.ones(i + 1, dtype=torch.uint8) for i in range(12)})\n"
        "state = {'schema_version': 3, 'config': {}, 'tasks_done': 0, 'acc_matrix': [], 'per_task': [], 'environment': {}, 'resumed_in': []}\n"
        "results.save_checkpoint(sys.argv[1], tensors, state, tag='task000')\n"
    )
    blobs = set()
    for attempt in range(3):
        folder = tmp_path / str(attempt)
        subprocess.run([sys.executable, "-c", script, str(folder)], check=True, env={**os.environ, "PYTHONHASHSEED": str(attempt)})
        blobs.add((folder / "checkpoint-task000.safetensors").read_bytes() + (folder / results.CHECKPOINT_STATE).read_bytes())
    assert len(blobs) == 1


# --- verify-packed: nothing in the run folder is trusted -----------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from adaqpacknet.runs import run

    folder = tmp_path_factory.mktemp("verify") / "run"
    run(Config(scenario="split_digits", num_tasks=2, epochs=1, finetune_epochs=1, batch_size=32, progress=False, device="cpu"), folder)
    return folder


def _copy_run(finished_run: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    return folder


def test_verify_packed_opens_only_the_run_folders_own_packed_file(finished_run, tmp_path):
    folder = _copy_run(finished_run, tmp_path)
    data = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**data, "packed_file": "/etc/passwd"}))
    report = runs.verify_packed_run(folder)
    assert report["ok"] and report["file"] == str(folder / "packed.safetensors")


VERIFY_CASES = {
    "no probe file": (lambda f: (f / "probes.safetensors").unlink(), CorruptFileError, "probes.safetensors is missing"),
    "a probe file of garbage": (lambda f: (f / "probes.safetensors").write_bytes(b"\x10" * 64), CorruptFileError, "is not a probe file"),
    "a probe file without a task": (
        lambda f: (f / "probes.safetensors").write_bytes(safetensors.torch.save({"task0/logits": torch.zeros(1)}, metadata={"device": "cpu"})),
        CorruptFileError, "has no entries task1/logits"),
    "a probe file naming no device": (
        lambda f: (f / "probes.safetensors").write_bytes(safetensors.torch.save({"task0/logits": torch.zeros(1)})),
        CorruptFileError, "is not a probe file"),
    "results that are not JSON": (lambda f: (f / "results.json").write_text("{"), CorruptFileError, "results.json is not valid JSON"),
    "results without an accuracy matrix": (lambda f: (f / "results.json").write_text("{}"), CorruptFileError, r"acc_matrix is not 2 row\(s\)"),
    "results with a short final row": (
        lambda f: (f / "results.json").write_text(json.dumps({"acc_matrix": [[1.0]]})), CorruptFileError, r"acc_matrix is not 2 row\(s\)"),
    "no packed file": (lambda f: (f / "packed.safetensors").unlink(), CorruptFileError, "packed.safetensors is missing"),
}


@pytest.mark.parametrize("case", list(VERIFY_CASES))
def test_verify_packed_refuses_a_broken_run_folder(case, finished_run, tmp_path):
    damage, error, message = VERIFY_CASES[case]
    folder = _copy_run(finished_run, tmp_path)
    damage(folder)
    refused(lambda: runs.verify_packed_run(folder), error, message)
