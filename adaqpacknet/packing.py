"""The packed network: every learned task in one file near the entropy bound, run as it is.

What the file holds (format version 1, a safetensors container: no pickle anywhere):

- per body layer, the owner map (0 = free, t = owned by task t);
- per task t and stored tensor (each body layer, then the head's weight and bias), the code of every
  weight the task owns at its bit width and the codebook the codes index (float32 levels);
  a float run (``quantizer="none"``) stores those weights as float32 instead;
- the architecture (network name, input shape, classes per task, every layer's shape), the config
  keys that rebuild the data and evaluation (``REBUILD_KEYS``; ``reuse_frozen`` too when a run
  trained without reuse, whose task t reads task t's weights only), the format version, the coder,
  and a SHA-256 of the whole file (computed with the checksum's own 64 hex digits set to "0"), so
  that any change to any byte is detected.

Entropy coding: the owner maps and the codes are entropy-coded onto one stack of constriction's ANS
coder. Each stream gets an order-0 categorical model from its own symbol counts (stored, 4 bytes
per symbol of the alphabet), or a uniform model where that count table would cost more than it
saves (a task's 10 head biases, say). The bound it is measured against is the streams' empirical
order-0 entropy, sum_s n_s H(p_s), plus the codebooks.

Loading: ``PackedNetwork.load(path)`` checks the file (a regular file; its header, what it declares
and what its payload pays for, bounded before anything is built: ``MAX_*``,
``WEIGHTS_PER_PAYLOAD_BIT``), decodes every stream once into one dense float32 tensor per layer
(each weight has one owner, so one tensor holds every task's values), and builds task t's network on
first use: the weights owned by tasks 1..t (or t alone, see above) and head t, cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import constriction
import numpy as np
import safetensors.numpy
import torch
from torch import Tensor, nn

from .errors import CorruptFileError, shorten
from .files import open_regular
from .models import MODELS, HEAD, HEAD_BIAS, MultiHeadNet, build_model
from .ownership import MAX_TASKS, owner_maps, prunable_layers, raw_weight, task_view
from .training import loader

FORMAT = "adaqpacknet-packed"
FORMAT_VERSION = 1
PACKED_FILE = "packed.safetensors"
PROBES_FILE = "probes.safetensors"
PROBE_SIZE = 64  # test samples per task whose logits are recorded when the task is frozen
CODER = (
    f"constriction {metadata.version('constriction')} AnsCoder (32-bit words, 24-bit model precision), "
    "one stack; per stream an order-0 categorical model from stored symbol counts, or uniform where "
    "the count table would cost more"
)
# The config keys a packed file keeps: what rebuilds its data and evaluates it the same way (BN uses
# batch statistics, so the evaluation batch size matters). The run's full config is in results.json.
# Where the data lies (data_root, download) is the reader's machine's business, not the network's:
# kept out, the same run packs to the same bytes in any folder on any machine.
REBUILD_KEYS = ("scenario", "model", "num_tasks", "seed", "val_fraction", "class_order", "eval_batch_size")
# Kept only when it differs from the default, so that files of runs with reuse stay as they were:
# reuse_frozen=False (the reuse ablation) changes which weights a task's network reads.
VIEW_KEYS = {"reuse_frozen": True}
_CHECKSUM_KEY = "sha256"
_PLACEHOLDER = "0" * 64
# How a stream is coded (the "stream_models" tensor): nothing to code, uniform, or counted.
NOT_CODED, UNIFORM, COUNTED = 0, 1, 2
_MODEL_NAMES = {NOT_CODED: "none", UNIFORM: "ans-uniform", COUNTED: "ans-categorical"}
_COUNT_BYTES = 4  # uint32 per symbol of a counted stream's alphabet
# What a packed file may declare, checked before anything is built or decoded, so that a hostile
# file with a valid checksum cannot make loading take gigabytes or minutes. Every protocol network
# is far inside these (the largest, WSN's AlexNet, has 6.7 M body weights).
MAX_FILE_BYTES = 1 << 30
MAX_BODY_WEIGHTS = 1 << 25  # 128 MiB of float32 values once decoded
MAX_INPUT_SIDE = 1024  # channels, height and width
MAX_CLASSES = 100_000  # per task
MAX_ABS_VALUE = 1e4  # a weight, bias or codebook level; real ones are within +-100
# The safetensors header (JSON): the metadata and one entry per tensor. The longest a real one gets
# is ~5 KB: classes_per_task for MAX_TASKS tasks (255 x at most 7 characters), the layer shapes of
# the deepest network (~20 layers x ~40 characters), the config keys, the coder string and 7 tensor
# entries of ~100 characters; real files have 1.0-1.3 KB. 64 KiB leaves a wide margin and keeps a
# header that claims megabytes from being read or parsed at all.
MAX_HEADER_BYTES = 64 << 10
# Cost of loading bounded by the file's size: every weight the architecture declares (body weights,
# free ones too, and every task's head) is decoded, placed and held in memory, so the payload (the
# coded streams, count tables and codebooks or float weights) must pay at least one bit per
# WEIGHTS_PER_PAYLOAD_BIT declared weights. Measured on the package's files (payload bits per
# declared weight): 1.35-4.7 for Ada-QPacknet on split/permuted digits (MLP, small_conv,
# tinyimagenet_conv), 17-25 for float storage, 0.091-0.17 for networks pruned by 99% with 1-bit codes
# (r_min=r_max=0.99, max_bits=1), the cheapest any config gives in practice. The bound, 1/64 = 0.016
# bits, is 86x below the default-config files and 5.8x below those extremes. A file that passes costs
# at most ~20 bytes of memory per declared weight (~10,000 per payload byte) and time linear in its
# weights: a 67 KB file at the bound declaring MAX_BODY_WEIGHTS free weights loads in ~1 s, ~290 MiB.
WEIGHTS_PER_PAYLOAD_BIT = 64
_PAYLOAD_TENSORS = ("ans", "symbol_counts", "codebooks", "float_weights")


class PackedFileError(CorruptFileError):
    """A packed file that must not be loaded: corrupt, another format version or another network.

    The message names the file and the fault.
    """


# --- writing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stream:
    """One sequence of symbols to code: an owner map, or one task's codes of one tensor."""

    layer: str
    task: int  # 0 for an owner map
    symbols: np.ndarray  # int32
    alphabet: int

    def counts(self) -> np.ndarray:
        return np.bincount(self.symbols, minlength=self.alphabet).astype(np.uint32)

    def entropy_bits(self) -> float:
        """Empirical order-0 entropy of the whole stream, n * H(p), in bits."""
        counts = self.counts()
        n = int(counts.sum())
        p = counts[counts > 0] / max(n, 1)
        return float(-(p * np.log2(p)).sum() * n)

    def model_kind(self) -> int:
        if self.alphabet <= 1 or len(self.symbols) == 0:
            return NOT_CODED  # a single possible symbol costs nothing (constriction cannot model it)
        uniform_bits = len(self.symbols) * math.log2(self.alphabet)
        counted_bits = self.entropy_bits() + 8 * _COUNT_BYTES * self.alphabet
        return COUNTED if counted_bits < uniform_bits else UNIFORM


def _model(kind: int, alphabet: int, counts: np.ndarray | None):
    if kind == UNIFORM:
        return constriction.stream.model.Uniform(alphabet)
    # Probabilities from exact integer counts in float64: encoder and decoder build the same model.
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def tensor_names(layers: list[str]) -> list[str]:
    """The tensors each task stores, in file order: every body layer, then its head."""
    return [*layers, HEAD, HEAD_BIAS]


def codes_of(values: Tensor, codebook: Tensor, where: str) -> np.ndarray:
    """Index of every value in ``codebook``; each value must be exactly one of its levels."""
    values = values.detach().cpu().to(torch.float32).numpy()
    levels = codebook.detach().cpu().to(torch.float32).numpy()
    order = np.argsort(levels, kind="stable")
    position = np.clip(np.searchsorted(levels[order], values), 0, len(levels) - 1)
    codes = order[position]
    if len(values) and not np.array_equal(levels[codes], values):
        bad = int((levels[codes] != values).sum())
        raise ValueError(
            f"{where}: {bad} weights are not levels of their codebook; the network was changed after "
            f"the task was frozen, so it cannot be packed"
        )
    return codes.astype(np.int32)


def pack(
    model: MultiHeadNet,
    model_name: str,
    input_shape: tuple[int, int, int],
    layer_bits: list[dict[str, int]],
    codebooks: dict[str, Tensor] | None,
    config: dict[str, Any],
) -> tuple[bytes, dict[str, Any]]:
    """The packed file of the tasks learned by ``model``, and its bits ledger.

    ``layer_bits[t - 1][tensor]`` is the bit width task t chose for each stored tensor (a body
    layer, ``head`` or ``head.bias``); there is one entry per learned task.
    ``codebooks["<task>/<tensor>"]`` (1-based task) holds every frozen tensor's levels; ``None``
    stores the owned weights in float32 (a float run).
    The ledger lists every stream's size and entropy bound and every section of the file; its
    sections add up to ``packed_bytes``, the length of the returned bytes.
    """
    num_tasks = len(layer_bits)
    if not 1 <= num_tasks <= len(model.heads):
        raise ValueError(f"num_tasks={num_tasks} must be in 1..{len(model.heads)} (tasks the network has heads for)")
    layers = prunable_layers(model)
    owners = {name: o.detach().cpu().numpy().reshape(-1) for name, o in owner_maps(model).items()}
    for name, owner in owners.items():
        if owner.max(initial=0) > num_tasks:
            raise ValueError(f"layer {name} has weights owned by task {int(owner.max())} > num_tasks={num_tasks}")
    weights = {name: raw_weight(layer).detach().cpu().reshape(-1) for name, layer in layers.items()}
    names = tensor_names(list(layers))
    quantized = codebooks is not None

    streams = [_Stream(name, 0, owner.astype(np.int32), num_tasks + 1) for name, owner in owners.items()]
    floats: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    bits = np.zeros((num_tasks, len(names)), dtype=np.uint8)
    levels_per_tensor = np.zeros((num_tasks, len(names)), dtype=np.uint16)
    for t in range(1, num_tasks + 1):
        head = model.heads[t - 1]
        owned = {name: weights[name][torch.from_numpy(owners[name] == t)] for name in layers}
        owned[HEAD], owned[HEAD_BIAS] = head.weight.detach().cpu().reshape(-1), head.bias.detach().cpu()
        for column, name in enumerate(names):
            bits[t - 1, column] = layer_bits[t - 1][name]
            if not quantized:
                floats.append(owned[name].to(torch.float32).numpy())
                continue
            key = f"{t}/{name}"
            if key not in codebooks:
                raise ValueError(f"no codebook for task {t}, tensor {name} (key {key!r})")
            codebook = codebooks[key]
            streams.append(_Stream(name, t, codes_of(owned[name], codebook, f"task {t}, tensor {name}"), len(codebook)))
            levels.append(codebook.detach().cpu().to(torch.float32).numpy())
            levels_per_tensor[t - 1, column] = len(codebook)

    words, kinds, coded_bits = _encode(streams)
    tensors: dict[str, np.ndarray] = {
        "ans": words,
        "stream_models": kinds,
        "symbol_counts": np.concatenate([s.counts() for s, k in zip(streams, kinds) if k == COUNTED] or [np.zeros(0, np.uint32)]),
        "bits": bits,
    }
    if quantized:
        tensors["levels"] = levels_per_tensor
        tensors["codebooks"] = np.concatenate(levels)
    else:
        tensors["float_weights"] = np.concatenate(floats)
    classes = [int(h.out_features) for h in model.heads[:num_tasks]]
    architecture = {
        "model": model_name,
        "input_shape": [int(d) for d in input_shape],
        "classes_per_task": classes,
        "layers": {name: list(raw_weight(layer).shape) for name, layer in layers.items()},
        "feature_dim": int(model.feature_dim),
    }
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "num_tasks": str(num_tasks),
        "storage": "quantized" if quantized else "float32",
        "architecture": json.dumps(architecture, separators=(",", ":")),
        "config": json.dumps(
            {
                **{k: config[k] for k in REBUILD_KEYS if k in config},
                **{k: config[k] for k, default in VIEW_KEYS.items() if config.get(k, default) != default},
            },
            separators=(",", ":"),
            allow_nan=False,
        ),
        "coder": CODER,
        _CHECKSUM_KEY: _PLACEHOLDER,
    }
    blob = _with_checksum(_sorted_header(safetensors.numpy.save(tensors, metadata=meta)))
    ledger = _ledger(blob, tensors, streams, kinds, coded_bits, levels, layer_bits, num_tasks, architecture, quantized)
    return blob, ledger


def _encode(streams: list[_Stream]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Every stream on one ANS stack: the compressed words, each stream's model kind, its coded bits."""
    kinds = np.array([s.model_kind() for s in streams], dtype=np.uint8)
    coder = constriction.stream.stack.AnsCoder()
    coded_bits = [0.0] * len(streams)
    # A stack: push the streams last to first so that decoding pops them in file order.
    for i in reversed(range(len(streams))):
        if kinds[i] == NOT_CODED:
            continue
        before = coder.num_valid_bits()
        coder.encode_reverse(streams[i].symbols, _model(int(kinds[i]), streams[i].alphabet, streams[i].counts()))
        coded_bits[i] = coder.num_valid_bits() - before
    return coder.get_compressed().astype(np.uint32), kinds, coded_bits


def entropy_coded_bytes(symbols: list[np.ndarray], alphabet: int) -> int:
    """Bytes of ``symbols`` (arrays of ints in 0..alphabet-1) coded as the packed file codes its
    streams: one ANS stack (4-byte words), each array with its own order-0 model and, where counted,
    its count table, plus one byte per array for its model kind. What a method that stores masks
    or maps outside the packed format (WSN) is charged, so that every method is counted alike."""
    streams = [_Stream("", 0, np.asarray(s, dtype=np.int32).reshape(-1), alphabet) for s in symbols]
    words, kinds, _ = _encode(streams)
    tables = sum(_COUNT_BYTES * alphabet for kind in kinds if kind == COUNTED)
    return int(words.nbytes) + tables + len(streams)


def _header(blob: bytes) -> tuple[int, bytes]:
    """(bytes taken by the header, the header JSON) of a safetensors file."""
    (length,) = struct.unpack("<Q", blob[:8])
    return 8 + length, blob[8 : 8 + length]


def _sorted_header(blob: bytes) -> bytes:
    """The same safetensors file with its header's keys sorted: safetensors writes the metadata in
    hash-map order, which changes from process to process, and the same run must give the same bytes."""
    end, header = _header(blob)
    text = json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text + blob[end:]


def _checksum_offset(header: bytes, digits: str) -> int | None:
    """File offset of the checksum's 64 digits (``digits`` as the header holds them), or None
    when the field is not there exactly once."""
    field = f'"{_CHECKSUM_KEY}":"{digits}"'.encode()
    if len(digits) != 64 or header.count(field) != 1:
        return None
    return 8 + header.index(field) + len(field) - 65


def _with_checksum(blob: bytes) -> bytes:
    """Write the SHA-256 of the file (checksum digits zeroed) into the checksum's place."""
    start = _checksum_offset(_header(blob)[1], _PLACEHOLDER)
    if start is None:
        raise RuntimeError("the checksum placeholder is not unique in the header")
    digest = hashlib.sha256(blob).hexdigest().encode()
    return blob[:start] + digest + blob[start + 64 :]


def _ledger(
    blob: bytes,
    tensors: dict[str, np.ndarray],
    streams: list[_Stream],
    kinds: np.ndarray,
    coded_bits: list[float],
    levels: list[np.ndarray],
    layer_bits: list[dict[str, int]],
    num_tasks: int,
    architecture: dict[str, Any],
    quantized: bool,
) -> dict[str, Any]:
    header_bytes, _ = _header(blob)
    owner_rows, code_rows = [], []
    codebook_of = iter(levels)
    for stream, kind, bits_used in zip(streams, kinds, coded_bits):
        row = {
            "layer": stream.layer,
            "weights": int(len(stream.symbols)),
            "alphabet": stream.alphabet,
            "model": _MODEL_NAMES[int(kind)],
            "coded_bytes": bits_used / 8,
            "count_table_bytes": _COUNT_BYTES * stream.alphabet if kind == COUNTED else 0,
            "entropy_bytes": stream.entropy_bits() / 8,
        }
        if stream.task == 0:
            # PackNet keeps one uint8 per weight; a plain bit-packed map takes ceil(log2(T+1)) bits.
            row["raw_uint8_bytes"] = row["weights"]
            row["raw_bitpacked_bytes"] = math.ceil(row["weights"] * num_tasks.bit_length() / 8)
            owner_rows.append(row)
        else:
            codebook = next(codebook_of)
            bits = layer_bits[stream.task - 1][stream.layer]
            code_rows.append({"task": stream.task, **row, "bits": bits, "codebook_bytes": int(codebook.nbytes)})
    sections = {"header": header_bytes, **{name: int(array.nbytes) for name, array in tensors.items()}}
    body = sum(math.prod(shape) for shape in architecture["layers"].values())
    first_head = architecture["classes_per_task"][0] * (architecture["feature_dim"] + 1)
    if quantized:
        bound = sum(r["entropy_bytes"] for r in owner_rows + code_rows) + sum(r["codebook_bytes"] for r in code_rows)
    else:
        # Float weights are stored as they are: their bound is their float32 size.
        bound = sum(r["entropy_bytes"] for r in owner_rows) + tensors["float_weights"].nbytes
    return {
        "format_version": FORMAT_VERSION,
        "coder": CODER,
        "storage": "quantized" if quantized else "float32",
        "packed_bytes": len(blob),
        "entropy_bound_bytes": bound,
        "dense_float32_bytes": 4 * (body + first_head),
        "body_weights": body,
        "bits_per_body_weight": 8 * len(blob) / body,
        "sections": sections,
        "owner_maps": owner_rows,
        "codes": code_rows,
    }


def layout_bytes(body_weights: int, head_sizes: list[int]) -> dict[str, int]:
    """Bytes of ``len(head_sizes)`` learned tasks under two plain layouts, for scale:

    - ``float32_per_task``: one dense float32 network (body and head) per task;
    - ``packnet_raw``: float32 body weights and a uint8 owner map, float32 heads (PackNet's own
      storage; the methods' sizes in T1 and T5 use the packed format instead).
    ``head_sizes[t]`` counts task t's head parameters (weight and bias).
    """
    return {
        "float32_per_task": 4 * sum(body_weights + h for h in head_sizes),
        "packnet_raw": 4 * body_weights + body_weights + 4 * sum(head_sizes),
    }


def storage_comparison(results: dict[str, Any]) -> dict[str, int]:
    """A run's trained tasks as one float32 network per task, and ``packed``: its packed file."""
    heads = [h["weight"] + h["bias"] for h in results["weights"]["heads"]]
    return {"float32_per_task": layout_bytes(results["weights"]["body"], heads)["float32_per_task"], "packed": results["packed_bytes"]}


def probe_batch(dataset) -> Tensor:
    """The fixed probe inputs of a task: its first ``PROBE_SIZE`` test samples, as one batch."""
    images, _ = next(iter(loader(dataset, PROBE_SIZE, shuffle=False)))
    return images


# --- reading ------------------------------------------------------------------------------------


class TaskNetwork(nn.Module):
    """One task's network from a packed file: the body with the weights of tasks 1..t, head t."""

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class PackedNetwork(nn.Module):
    """A packed file, checked and decoded; ``network(x, task)`` gives the logits of task ``task``.

    ``task`` is 0-based, as in ``MultiHeadNet.forward`` (owner id ``task + 1``). Every weight is
    decoded once at load; ``task_network(task)`` builds a task's network on first use and caches it.
    """

    def __init__(
        self,
        path: Path,
        architecture: dict[str, Any],
        config: dict[str, Any],
        owners: dict[str, Tensor],
        values: dict[str, Tensor],
        heads: list[tuple[Tensor, Tensor]],
        bits: np.ndarray,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.path = path
        self.architecture = architecture
        self.config = config
        self.num_tasks = len(heads)
        self.owner_maps = owners
        self.values = values  # one dense float32 tensor per layer: every task's weights, 0 where free
        self.heads = heads
        self.bits = bits  # (task, tensor) bit widths as chosen; 32 for float storage
        self.device = device
        self.networks = nn.ModuleDict()

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", expected_architecture: dict[str, Any] | None = None
    ) -> "PackedNetwork":
        """Check and decode the packed file at ``path``; raises ``PackedFileError`` naming the fault.

        Task networks are built on ``device``. With ``expected_architecture`` (the ``architecture`` record of another file or learner),
        a file written for another network is refused.
        """
        path = Path(path)
        blob = _read_packed(path)
        meta = _checked_metadata(path, blob)
        try:
            tensors = safetensors.numpy.load(blob)
        except Exception as error:  # safetensors raises its own error types
            raise PackedFileError(f"{path}: the safetensors container is invalid ({error})") from error
        architecture, config, num_tasks, quantized = _checked_records(path, meta)
        if expected_architecture is not None and expected_architecture != architecture:
            raise PackedFileError(
                f"{path} holds a network of another architecture: {_describe(architecture)}; expected {_describe(expected_architecture)}"
            )
        _check_payload(path, tensors, architecture)
        layers = _template_layers(path, architecture, num_tasks)
        _check_tensors(path, tensors, architecture, num_tasks, quantized, layers)
        try:
            owners, values, heads = _decode(tensors, architecture, num_tasks, quantized, layers)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as error:  # the coder's Rust panics are BaseExceptions: a bad payload all the same
            raise PackedFileError(f"{path}: the payload does not decode ({type(error).__name__}: {error})") from error
        return cls(path, architecture, config, owners, values, heads, tensors["bits"], torch.device(device))

    def task_network(self, task: int) -> TaskNetwork:
        """Task ``task``'s network (0-based), built on first use and cached, in eval mode."""
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task {task} out of range: {self.path} holds {self.num_tasks} tasks (0..{self.num_tasks - 1})")
        key = str(task)
        if key not in self.networks:
            network = self.multi_head_network(task)
            # Inference only: no parameter of a packed network is meant to be trained.
            self.networks[key] = TaskNetwork(network.body, network.heads[task]).requires_grad_(False).to(self.device).eval()
        return self.networks[key]

    def multi_head_network(self, task: int) -> MultiHeadNet:
        """A float32 ``MultiHeadNet`` (on the CPU) holding task ``task``'s view of the weights and its
        head: the dense network a user would otherwise keep for this task."""
        arch = self.architecture
        network = build_model(arch["model"], tuple(arch["input_shape"]), arch["classes_per_task"])
        with torch.no_grad():
            view = self.task_weights(task)
            for name, layer in prunable_layers(network).items():
                layer.weight.copy_(view[name])
            network.heads[task].weight.copy_(self.heads[task][0])
            network.heads[task].bias.copy_(self.heads[task][1])
        return network

    def task_weights(self, task: int) -> dict[str, Tensor]:
        """Task ``task``'s view of each body layer (0-based): the weights of tasks 1..task+1 (of
        task+1 alone for a run without reuse), 0 elsewhere."""
        reuse = bool(self.config.get("reuse_frozen", VIEW_KEYS["reuse_frozen"]))
        return {
            name: torch.where(task_view(owner, task + 1, reuse), self.values[name], torch.zeros(()))
            for name, owner in self.owner_maps.items()
        }

    def forward(self, x: Tensor, task: int) -> Tensor:
        """Logits of task ``task`` (0-based) for the batch ``x``."""
        return self.task_network(task)(x)

    @torch.no_grad()
    def predict(self, x: Tensor, task: int) -> Tensor:
        """Predicted class (within task ``task``) of every sample of ``x``, in eval mode."""
        network = self.task_network(task)
        network.eval()
        return network(x).argmax(1)


def _describe(architecture: dict[str, Any]) -> str:
    return (
        f"{shorten(architecture.get('model'))} for inputs {shorten(architecture.get('input_shape'))}, "
        f"layers {shorten(architecture.get('layers'))}"
    )


def _read_packed(path: Path) -> bytes:
    """The bytes of the packed file at ``path``: a regular file (no FIFO, device or socket, so
    nothing blocks or grows without end) of at most MAX_FILE_BYTES, whose header length (the first
    8 bytes) is at most MAX_HEADER_BYTES, checked before the rest is read."""
    try:
        with open_regular(path, MAX_FILE_BYTES) as handle:
            start = handle.read(8)
            if len(start) == 8:
                (length,) = struct.unpack("<Q", start)
                if length > MAX_HEADER_BYTES:
                    raise PackedFileError(
                        f"{path}: the header claims {length} bytes; a packed file's header has at most {MAX_HEADER_BYTES} "
                        f"(real ones ~1 KB): the file is corrupt or not a packed file"
                    )
            blob = start + handle.read(MAX_FILE_BYTES + 1 - len(start))
    except PackedFileError:
        raise
    except CorruptFileError as error:  # open_regular's: a special file or one too large, named
        raise PackedFileError(str(error)) from None
    except OSError as error:
        raise PackedFileError(f"{path}: cannot be read ({error})") from error
    if len(blob) > MAX_FILE_BYTES:
        raise PackedFileError(f"{path} grew past {MAX_FILE_BYTES} bytes while it was read")
    return blob


def _checked_metadata(path: Path, blob: bytes) -> dict[str, str]:
    """The header's metadata after checking format, version and the whole file's checksum."""
    if len(blob) < 8:
        raise PackedFileError(f"{path}: {len(blob)} bytes is too short for a packed file (truncated?)")
    header_end, header = _header(blob)
    if header_end > len(blob):
        raise PackedFileError(f"{path}: the header claims {header_end} bytes but the file has {len(blob)} (truncated or corrupt)")
    try:
        meta = json.loads(header.decode("utf-8"))["__metadata__"]
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise TypeError("metadata is not an object of strings")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise PackedFileError(f"{path}: the header is not valid ({error}); the file is corrupt or not a packed file") from error
    if meta.get("format") != FORMAT:
        raise PackedFileError(f"{path} is not a packed network (format {shorten(meta.get('format'))}, expected {FORMAT!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise PackedFileError(
            f"{path} has format version {shorten(meta.get('format_version'))}; this package reads version {FORMAT_VERSION}"
        )
    stored = meta.get(_CHECKSUM_KEY)
    start = _checksum_offset(header, stored) if isinstance(stored, str) else None
    if start is None:
        raise PackedFileError(f"{path}: the checksum field is damaged; the file is corrupt")
    digest = hashlib.sha256(blob[:start] + _PLACEHOLDER.encode() + blob[start + 64 :]).hexdigest()
    if digest != stored:
        raise PackedFileError(f"{path}: checksum mismatch (stored {stored[:12]}..., computed {digest[:12]}...); the file is corrupt")
    return meta


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _checked_records(path: Path, meta: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], int, bool]:
    """(architecture, config, num_tasks, quantized) from the metadata, each field checked for type and range."""

    def fault(field: str, problem: str) -> PackedFileError:
        return PackedFileError(f"{path}: metadata field {field!r} {problem}")

    records = {}
    for field in ("architecture", "config"):
        if field not in meta:
            raise fault(field, "is missing")
        try:
            records[field] = json.loads(meta[field])
        except (ValueError, RecursionError) as error:
            raise fault(field, f"is not valid JSON ({type(error).__name__})") from None
        if not isinstance(records[field], dict):
            raise fault(field, "is not a JSON object")
    num_tasks = meta.get("num_tasks", "")
    # The length first: int() refuses a string of thousands of digits with its own ValueError.
    if not (len(num_tasks) <= 3 and num_tasks.isascii() and num_tasks.isdigit() and 1 <= int(num_tasks) <= MAX_TASKS):
        raise fault("num_tasks", f"is {shorten(num_tasks)}; expected a whole number in 1..{MAX_TASKS}")
    if meta.get("storage") not in ("quantized", "float32"):
        raise fault("storage", f"is {shorten(meta.get('storage'))}; expected 'quantized' or 'float32'")
    _check_config_record(path, records["config"])
    arch = records["architecture"]
    expected = {"model", "input_shape", "classes_per_task", "layers", "feature_dim"}
    if set(arch) != expected:
        raise fault("architecture", f"has keys {shorten(sorted(arch))}; expected {sorted(expected)}")
    if arch["model"] not in MODELS:
        raise fault("architecture.model", f"is {shorten(arch['model'])}; valid choices: {', '.join(MODELS)}")
    shape = arch["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(d, 1, MAX_INPUT_SIDE) for d in shape)):
        raise fault("architecture.input_shape", f"is {shorten(shape)}; expected [C, H, W], each in 1..{MAX_INPUT_SIDE}")
    classes = arch["classes_per_task"]
    if not (isinstance(classes, list) and len(classes) == int(num_tasks) and all(_is_int(c, 1, MAX_CLASSES) for c in classes)):
        raise fault("architecture.classes_per_task", f"is not {num_tasks} class counts in 1..{MAX_CLASSES}")
    layers = arch["layers"]
    if not (isinstance(layers, dict) and all(isinstance(v, list) and all(_is_int(d, 1, MAX_BODY_WEIGHTS) for d in v) for v in layers.values())):
        raise fault("architecture.layers", "is not a mapping of layer names to shapes")
    if sum(math.prod(v) for v in layers.values()) > MAX_BODY_WEIGHTS:
        raise fault("architecture.layers", f"declares more than {MAX_BODY_WEIGHTS} body weights")
    if not _is_int(arch["feature_dim"], 1, MAX_BODY_WEIGHTS):
        raise fault("architecture.feature_dim", f"is {shorten(arch['feature_dim'])}; expected a positive whole number")
    if sum(classes) * arch["feature_dim"] > MAX_BODY_WEIGHTS:
        raise fault("architecture.classes_per_task", f"declares more than {MAX_BODY_WEIGHTS} head weights")
    return arch, records["config"], int(num_tasks), meta["storage"] == "quantized"


def _check_payload(path: Path, tensors: dict[str, np.ndarray], architecture: dict[str, Any]) -> None:
    """Refuse a file whose payload cannot pay for the weights its architecture declares
    (``WEIGHTS_PER_PAYLOAD_BIT``), from the checked architecture record alone: before anything is
    built, allocated or decoded, so that a small file cannot make loading take gigabytes."""
    body = sum(math.prod(shape) for shape in architecture["layers"].values())
    heads = sum(architecture["classes_per_task"]) * (architecture["feature_dim"] + 1)
    paid_bits = 8 * sum(int(tensors[name].nbytes) for name in _PAYLOAD_TENSORS if name in tensors)
    if body + heads > WEIGHTS_PER_PAYLOAD_BIT * paid_bits:
        raise PackedFileError(
            f"{path}: declares {body + heads} weights ({body} body weights, free ones included, and {heads} head "
            f"weights) but its payload of {paid_bits // 8} bytes pays for at most {WEIGHTS_PER_PAYLOAD_BIT * paid_bits} "
            f"(one bit per {WEIGHTS_PER_PAYLOAD_BIT} weights); the file is corrupt or crafted"
        )


def _check_config_record(path: Path, config: dict[str, Any]) -> None:
    """The config record holds what ``pack`` writes: REBUILD_KEYS and VIEW_KEYS, each a JSON scalar
    (their values are checked as a Config where the data is rebuilt), ``reuse_frozen`` a bool: it
    decides which weights each task's network reads."""
    allowed = {*REBUILD_KEYS, *VIEW_KEYS}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise PackedFileError(f"{path}: metadata field 'config' has keys {shorten(unknown)}; a packed file keeps only {sorted(allowed)}")
    for key, value in config.items():
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise PackedFileError(f"{path}: metadata field 'config.{key}' is {shorten(value)}; expected a number, a string or null")
    if not isinstance(config.get("reuse_frozen", True), bool):
        raise PackedFileError(f"{path}: metadata field 'config.reuse_frozen' is {shorten(config['reuse_frozen'])}; expected true or false")


def _template_layers(path: Path, architecture: dict[str, Any], num_tasks: int) -> list[str]:
    """The body layers the file's architecture record builds, checked against the record: built on
    the meta device (shapes only, no memory), so a record that does not match costs nothing."""
    try:
        with torch.device("meta"):
            template = build_model(architecture["model"], tuple(architecture["input_shape"]), architecture["classes_per_task"])
    except (ValueError, TypeError, RuntimeError) as error:
        raise PackedFileError(f"{path}: its architecture cannot be built ({error})") from error
    built = {name: list(layer.weight.shape) for name, layer in prunable_layers(template).items()}
    if built != architecture["layers"] or template.feature_dim != architecture["feature_dim"]:
        raise PackedFileError(
            f"{path} was written for another architecture: layers {shorten(architecture['layers'])} and feature_dim "
            f"{architecture['feature_dim']}, but {architecture['model']} for inputs {architecture['input_shape']} has "
            f"{built} and feature_dim {template.feature_dim}"
        )
    return list(built)


def _check_tensors(
    path: Path, tensors: dict[str, np.ndarray], architecture: dict[str, Any], num_tasks: int, quantized: bool, layers: list[str]
) -> None:
    """Every tensor the decoder reads: present, of its dtype and shape, and within range."""
    names = tensor_names(layers)
    table = (num_tasks, len(names))
    values = "codebooks" if quantized else "float_weights"
    expected = {
        "ans": (np.uint32, None), "stream_models": (np.uint8, (len(layers) + (num_tasks * len(names) if quantized else 0),)),
        "symbol_counts": (np.uint32, None), "bits": (np.uint8, table), values: (np.float32, None),
        **({"levels": (np.uint16, table)} if quantized else {}),
    }
    if set(tensors) != set(expected):
        raise PackedFileError(f"{path}: holds tensors {shorten(sorted(tensors))}; a {'quantized' if quantized else 'float32'} file holds {sorted(expected)}")
    for name, (dtype, shape) in expected.items():
        tensor = tensors[name]
        if tensor.dtype != dtype or (shape is None and tensor.ndim != 1) or (shape is not None and tensor.shape != shape):
            want = f"shape {shape}" if shape else "one dimension"
            raise PackedFileError(f"{path}: tensor {name!r} is {tensor.dtype} of shape {shorten(tensor.shape)}; expected {np.dtype(dtype)}, {want}")
    if not np.isin(tensors["stream_models"], (NOT_CODED, UNIFORM, COUNTED)).all():
        raise PackedFileError(f"{path}: tensor 'stream_models' holds a coder model other than {sorted(_MODEL_NAMES)}")
    bits = tensors["bits"]
    if bits.min() < 1 or bits.max() > 32 or (quantized and bits.max() > 16):
        raise PackedFileError(f"{path}: tensor 'bits' holds widths {int(bits.min())}..{int(bits.max())}; expected 1..{16 if quantized else 32}")
    if quantized:
        levels = tensors["levels"].astype(np.int64)
        if (levels > (1 << bits.astype(np.int64))).any():
            raise PackedFileError(f"{path}: tensor 'levels' gives a codebook more than 2^bits levels")
        if int(levels.sum()) != len(tensors["codebooks"]):
            raise PackedFileError(f"{path}: tensor 'codebooks' has {len(tensors['codebooks'])} levels; 'levels' adds up to {int(levels.sum())}")
    floats = tensors[values]
    if not np.isfinite(floats).all() or (floats.size and np.abs(floats).max() > MAX_ABS_VALUE):
        raise PackedFileError(f"{path}: tensor {values!r} holds a value that is not finite or beyond +-{MAX_ABS_VALUE:g}")


def _decode(
    tensors: dict[str, np.ndarray], architecture: dict[str, Any], num_tasks: int, quantized: bool, layers: list[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
    """Owner maps, dense per-layer values and heads from the file's tensors."""
    shapes = {name: tuple(architecture["layers"][name]) for name in layers}
    feature_dim = architecture["feature_dim"]
    head_shapes = [((n, feature_dim), (n,)) for n in architecture["classes_per_task"]]
    names = tensor_names(layers)
    kinds = tensors["stream_models"]
    counts = tensors["symbol_counts"]
    coder = constriction.stream.stack.AnsCoder(tensors["ans"].astype(np.uint32))
    stream_index, count_offset = 0, 0
    # No coder codes a stream in fewer bits than its empirical entropy (Gibbs): the streams a file
    # claims must fit the bits it holds (plus the coder's 64-bit state), checked before each is decoded.
    budget_bits = 32.0 * len(tensors["ans"]) + 64.0
    claimed_bits = 0.0

    def next_stream(n: int, alphabet: int) -> np.ndarray:
        nonlocal stream_index, count_offset, claimed_bits
        if stream_index >= len(kinds):
            raise ValueError("the payload has fewer streams than its tensors need")
        kind = int(kinds[stream_index])
        stream_index += 1
        if kind == NOT_CODED or n == 0:
            if n and alphabet > 1:
                raise ValueError("a stream of several symbols is marked as not coded")
            return np.zeros(n, dtype=np.int32)
        if alphabet <= 1:  # constriction cannot model a single symbol (a Rust panic): pack never codes one
            raise ValueError(f"a stream of {n} symbols of one possible value is marked as coded")
        table = None
        if kind == COUNTED:
            table = counts[count_offset : count_offset + alphabet]
            count_offset += alphabet
            if len(table) != alphabet or int(table.sum(dtype=np.int64)) != n:
                raise ValueError("symbol counts do not fit their stream")
            p = table[table > 0] / n
            claimed_bits += float(-(table[table > 0] * np.log2(p)).sum())
        else:
            claimed_bits += n * math.log2(alphabet) * 0.999  # the coder's uniform model is exact to 24 bits
        if claimed_bits > budget_bits * 1.001:
            raise ValueError(f"its streams need at least {claimed_bits / 8:.0f} bytes but the coded payload holds {len(tensors['ans']) * 4}")
        symbols = np.asarray(coder.decode(_model(kind, alphabet, table), n))
        if symbols.min(initial=0) < 0 or symbols.max(initial=0) >= alphabet:
            raise ValueError("a decoded symbol is outside its alphabet")
        return symbols

    # Flat owner maps, and how many weights of each layer each owner id holds: one pass over each
    # map, where a mask per task would cost weights x tasks.
    owners = {name: next_stream(math.prod(shapes[name]), num_tasks + 1).astype(np.uint8) for name in layers}
    owned = {name: np.bincount(owner, minlength=num_tasks + 1) for name, owner in owners.items()}
    if any(len(counts) > num_tasks + 1 for counts in owned.values()):
        raise ValueError("an owner map names a task the file does not hold")
    pieces: dict[str, list[Tensor]] = {name: [] for name in layers}  # each task's decoded weights, in task order
    heads: list[tuple[Tensor, Tensor]] = []
    codebooks = tensors.get("codebooks")
    levels = tensors.get("levels")
    floats = tensors.get("float_weights")
    offset = 0  # into codebooks (quantized) or float_weights (float)
    for t in range(1, num_tasks + 1):
        decoded: dict[str, Tensor] = {}
        for column, name in enumerate(names):
            if name in owners:
                n = int(owned[name][t])
            else:
                n = math.prod(head_shapes[t - 1][0 if name == HEAD else 1])
            if quantized:
                size = int(levels[t - 1, column])
                if n and not size:
                    raise ValueError(f"task {t}'s {n} weights of {name} have an empty codebook")
                codebook = torch.from_numpy(codebooks[offset : offset + size].copy())
                offset += size
                if len(codebook) != size:
                    raise ValueError("the codebooks are shorter than their sizes say")
                decoded[name] = codebook[torch.from_numpy(next_stream(n, size).astype(np.int64))]
            else:
                decoded[name] = torch.from_numpy(floats[offset : offset + n].copy())
                offset += n
                if len(decoded[name]) != n:
                    raise ValueError("the float weights are shorter than the owner maps say")
            if name in owners:
                pieces[name].append(decoded[name])
        heads.append((decoded[HEAD].reshape(head_shapes[t - 1][0]), decoded[HEAD_BIAS].reshape(head_shapes[t - 1][1])))
    stored = codebooks if quantized else floats
    if stream_index != len(kinds) or count_offset != len(counts) or not coder.is_empty() or offset != len(stored):
        raise ValueError("the payload holds more than its streams")
    values = {name: _placed(owners[name], int(owned[name][0]), pieces[name]).reshape(shapes[name]) for name in layers}
    return {name: torch.from_numpy(owner).reshape(shapes[name]) for name, owner in owners.items()}, values, heads


def _placed(owner: np.ndarray, free: int, pieces: list[Tensor]) -> Tensor:
    """One layer's dense float32 values (flat) from its owner map and each task's decoded weights in
    task order: task t's weights at the positions it owns, in row-major order, 0 where free (what
    ``values[owner == t] = weights_t`` gives for every t). One stable sort by owner id (numpy sorts
    uint8 by radix, in linear time) lists every task's positions in that order at once."""
    values = torch.zeros(len(owner))
    if free < len(owner):
        order = np.argsort(owner, kind="stable")[free:]
        values[torch.from_numpy(order)] = torch.cat(pieces)
    return values
