"""Continual-learning scenarios (method.md section 3): sequences of tasks built from sources.

A scenario is a tuple of `Task`s, each with train / val / test `TaskDataset`s whose labels are
remapped to 0..k-1 in the task's class order. Validation is held out of each task's training data
(seeded by the run seed, stratified by class), one split per source image set: the tasks of a
permuted scenario share it, so no task validates on images another task trains on; test is the source's test split
restricted to the task's classes and is only for reporting. Both evaluation splits are shuffled
once, with fixed seeds, so that no evaluation batch holds only a few classes.

Images stay uint8 in memory and are transformed per batch on access (to float in [0, 1], then the
scenario's `BatchTransform`: pad, normalise, repeat channels, permute pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, shorten
from .sources import Source, check_source, load_source, stratified_split

CLASS_ORDERS = ("fixed", "shuffled")
# Seed of the order of every task's test split (the same for every run; see _make_task).
EVAL_ORDER_SEED = 20230814


@dataclass(frozen=True)
class ScenarioSpec:
    """Static description of a scenario; `build_scenario` turns it into tensors.

    kind: "permuted" (one source, one pixel permutation per task), "split" (one source, disjoint
    class groups) or "multi_dataset" (one source per task, in the order of ``sources``).
    """

    kind: str
    sources: tuple[str, ...]
    num_tasks: int
    classes_per_task: int
    val_fraction: float
    default_model: str
    required_sources: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W) of the images the tasks feed the network


def _spec(kind: str, sources: tuple[str, ...], num_tasks: int, cpt: int, val: float, model: str, shape: tuple[int, int, int]) -> ScenarioSpec:
    return ScenarioSpec(kind, sources, num_tasks, cpt, val, model, required_sources=sources, input_shape=shape)


# Validation fractions follow WSN (10% permuted MNIST and TinyImageNet, 5% otherwise), except the
# 8x8 digits scenarios: ~1437 training images would leave a tiny 5% validation split.
SCENARIOS: dict[str, ScenarioSpec] = {
    "permuted_mnist": _spec("permuted", ("mnist",), 10, 10, 0.1, "mlp", (1, 28, 28)),
    "permuted_fashion_mnist": _spec("permuted", ("fashion_mnist",), 10, 10, 0.1, "mlp", (1, 28, 28)),
    "permuted_digits": _spec("permuted", ("digits",), 10, 10, 0.1, "mlp", (1, 8, 8)),
    "split_cifar100": _spec("split", ("cifar100",), 10, 10, 0.05, "alexnet", (3, 32, 32)),
    "split_fashion_mnist": _spec("split", ("fashion_mnist",), 5, 2, 0.05, "small_conv", (1, 28, 28)),
    "split_digits": _spec("split", ("digits",), 5, 2, 0.1, "small_conv", (1, 8, 8)),
    "five_datasets": _spec("multi_dataset", ("cifar10", "mnist", "svhn", "fashion_mnist", "notmnist"),
                           5, 10, 0.05, "resnet18_reduced", (3, 32, 32)),
    "tinyimagenet": _spec("split", ("tinyimagenet",), 40, 5, 0.1, "tinyimagenet_conv", (3, 64, 64)),
}


# ----------------------------------------------------------------------------- transforms

class BatchTransform:
    """Float [0, 1] batch (N, C, H, W) -> model input: pad, normalise, repeat channels, permute.

    A module-level class rather than a closure so that datasets pickle for DataLoader workers.
    Padding happens before normalisation (black border, as torchvision's Pad on the raw image in
    the 5-datasets reference code); ``mean``/``std`` are the unpadded train statistics.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 0, channels: int | None = None,
                 permutation: Tensor | None = None) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        if not all(self.std):
            raise ValueError(f"std={self.std}: a zero would divide by zero")
        self.pad, self.channels, self.permutation = pad, channels, permutation
        # float32 tensors made once (and moved with ``to``): from lists, torchvision would make them
        # anew for every batch, a copy from the host that makes the GPU's host wait at every step.
        self._mean, self._std = torch.tensor(self.mean, dtype=torch.float32), torch.tensor(self.std, dtype=torch.float32)

    def __call__(self, x: Tensor) -> Tensor:
        # Imported here: torchvision costs ~1.5 s to import, and planning a grid (adaqpacknet.grid,
        # every Snakemake start) needs this module's scenario names, not its transforms.
        from torchvision.transforms.v2 import functional as TF

        if self.pad:
            x = TF.pad(x, [self.pad], fill=0.0)
        x = TF.normalize(x, self._mean.to(x.device), self._std.to(x.device))  # no copy when already there
        if self.channels is not None and x.shape[-3] != self.channels:
            x = x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]).contiguous()
        if self.permutation is not None:
            x = x.flatten(-3)[..., self.permutation].reshape(x.shape)
        return x

    def to(self, device: torch.device | str) -> "BatchTransform":
        """The same transform for batches on ``device`` (its permutation moved there)."""
        permutation = None if self.permutation is None else self.permutation.to(device)
        moved = BatchTransform(self.mean, self.std, self.pad, self.channels, permutation)
        moved._mean, moved._std = self._mean.to(device), self._std.to(device)
        return moved

    def __repr__(self) -> str:
        perm = "none" if self.permutation is None else f"{self.permutation.numel()} pixels"
        return (f"BatchTransform(mean={self.mean}, std={self.std}, pad={self.pad}, "
                f"channels={self.channels}, permutation={perm})")


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images, on the [0, 1] scale.

    Uses a 256-bin histogram per channel: exact, and no float copy of the whole dataset.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        var = (counts * (values - mean) ** 2).sum() / counts.sum()
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1e-8))  # a constant channel must not divide by zero
    return tuple(means), tuple(stds)


# ----------------------------------------------------------------------------- datasets

def copy_to(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (on the CPU) on ``device``; to a GPU from pinned memory, asynchronously: a copy
    from pageable memory makes the host wait for every kernel queued before it, at every step."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class TaskDataset(torch.utils.data.Dataset):
    """Images kept as uint8, transformed per batch on access.

    ``transform`` receives a float32 (N, C, H, W) batch scaled to [0, 1]. ``__getitems__`` returns
    a (X, Y) tuple of batched tensors; PyTorch's DataLoader calls it when present, so pass a
    ``collate_fn`` that returns its argument unchanged.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 NCHW, got {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be int64 of shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self._images, self._labels, self._transform = images, labels, transform

    @property
    def images(self) -> Tensor:
        return self._images

    @property
    def labels(self) -> Tensor:
        return self._labels

    @property
    def transform(self) -> Callable[[Tensor], Tensor]:
        return self._transform

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a TaskDataset of {len(self)} samples")
        i %= len(self)
        # A batch of one through the same batch transform, so single samples match __getitems__.
        return self._transform(self._images[i : i + 1].float().div_(255.0))[0], self._labels[i]

    def to(self, device: torch.device | str) -> "TaskDataset":
        """This dataset with its uint8 images, labels and transform on ``device``: batches are then
        gathered and transformed there (``training.on_device``)."""
        transform = self._transform.to(device) if hasattr(self._transform, "to") else self._transform
        return TaskDataset(self._images.to(device), self._labels.to(device), transform)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = copy_to(torch.as_tensor(indices, dtype=torch.int64), self._images.device)
        return self._transform(self._images[idx].float().div_(255.0)), self._labels[idx]


@dataclass(frozen=True, eq=False)
class Task:
    """One task: ``classes`` are the source's class ids in head order (head label i = classes[i])."""

    index: int
    name: str
    classes: tuple[int, ...]
    train: TaskDataset
    val: TaskDataset
    test: TaskDataset


@dataclass(frozen=True, eq=False)
class Scenario:
    """A built scenario: its tasks in training order, the model input shape and default network."""

    name: str
    tasks: tuple[Task, ...]
    input_shape: tuple[int, int, int]
    default_model: str

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def classes_per_task(self) -> tuple[int, ...]:
        return tuple(len(t.classes) for t in self.tasks)


# ----------------------------------------------------------------------------- building

def _get_spec(name: str) -> ScenarioSpec:
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {shorten(name)}; valid choices: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def required_sources(name: str) -> tuple[str, ...]:
    """The sources scenario ``name`` needs on disk."""
    return _get_spec(name).required_sources


def check_data_available(name: str, root: str | Path = "data", download: bool = False) -> None:
    """Raise DatasetNotFoundError (before any training) if a source of scenario ``name`` is missing.

    Checks that files exist only; nothing is decoded.
    """
    for source in required_sources(name):
        check_source(source, root, download)


def _make_task(index: int, name: str, classes: Sequence[int], source: Source, transform: BatchTransform,
               val_fraction: float, seed: int, split_key: int) -> Task:
    classes_t = torch.as_tensor(list(classes), dtype=torch.int64)
    remap = torch.full((source.num_classes,), -1, dtype=torch.int64)
    remap[classes_t] = torch.arange(len(classes_t))

    def subset(labels: Tensor) -> tuple[Tensor, Tensor]:
        idx = torch.isin(labels, classes_t).nonzero().squeeze(1)
        return idx, remap[labels[idx]]

    train_idx, train_y = subset(source.train.labels)
    # Seeded by (run seed, split_key): tasks drawn from the same images (a permuted scenario's)
    # share one split, so that one task's validation images are never another's training images;
    # tasks on disjoint images (split, multi-dataset) each have their own key, the task index.
    rng = np.random.default_rng([seed, split_key])
    keep, held = stratified_split(train_y, val_fraction, rng)
    test_idx, test_y = subset(source.test.labels)
    # Evaluation splits in a shuffled order: batch-statistics BatchNorm normalises each evaluation
    # batch by its own statistics, and a split stored class by class (notMNIST's folders, a
    # stratified split's sorted indices) would give batches of two or three classes, which moves
    # accuracy by up to 12 pp. Validation is shuffled by the run's draw, test once for all runs
    # (EVAL_ORDER_SEED), so that every seed and method is tested on the same batches (and the tasks of a
    # permuted scenario on the same images in the same order).
    held = held[torch.from_numpy(rng.permutation(len(held)))]
    test_order = torch.from_numpy(np.random.default_rng(EVAL_ORDER_SEED).permutation(len(test_idx)))
    test_idx, test_y = test_idx[test_order], test_y[test_order]
    return Task(
        index=index,
        name=name,
        classes=tuple(int(c) for c in classes),
        train=TaskDataset(source.train.images[train_idx[keep]], train_y[keep], transform),
        val=TaskDataset(source.train.images[train_idx[held]], train_y[held], transform),
        test=TaskDataset(source.test.images[test_idx], test_y, transform),
    )


def _class_range_name(classes: Sequence[int]) -> str:
    lo, hi = min(classes), max(classes)
    if list(classes) == list(range(lo, hi + 1)):
        return f"classes {lo}-{hi}"
    return "classes " + ",".join(str(c) for c in classes)


def build_scenario(name: str, *, root: str | Path = "data", num_tasks: int | None = None, seed: int = 0,
                   val_fraction: float | None = None, download: bool = False,
                   class_order: str = "fixed") -> Scenario:
    """Build scenario ``name`` (a key of SCENARIOS) from the data under ``root``.

    num_tasks: first ``num_tasks`` tasks (default: the scenario's). seed: pixel permutations
    (torch.Generator), validation splits and the "shuffled" class order. val_fraction: share of each
    task's training data held out for validation, in (0, 1). class_order: "fixed" (task k = classes
    k*c..k*c+c-1, as WSN) or "shuffled" (seeded class groups; split scenarios only).
    Same arguments -> identical tensors.
    """
    spec = _get_spec(name)
    if val_fraction is None:
        val_fraction = spec.val_fraction
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.integer, np.floating)) or not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {shorten(val_fraction)}")
    if class_order not in CLASS_ORDERS:
        raise ConfigError(f"unknown class_order {shorten(class_order)}; valid choices: {', '.join(CLASS_ORDERS)}")
    if class_order != "fixed" and spec.kind != "split":
        raise ConfigError(f"class_order={class_order!r} applies to split scenarios only, not {name!r}")
    if isinstance(seed, np.integer):  # seeds from numpy or configs are fine
        seed = int(seed)
    if isinstance(num_tasks, np.integer):
        num_tasks = int(num_tasks)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {shorten(seed)}")

    check_data_available(name, root, download)  # fail fast, naming every missing source
    sources = [load_source(s, root, download) for s in spec.sources]

    if spec.kind == "multi_dataset":
        max_tasks = len(sources)
    elif spec.kind == "split":
        max_tasks = sources[0].num_classes // spec.classes_per_task
    else:
        max_tasks = None  # permutations: as many as asked
    if num_tasks is None:
        num_tasks = spec.num_tasks
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1 or (
            max_tasks is not None and num_tasks > max_tasks):
        valid = f"1..{max_tasks}" if max_tasks is not None else ">= 1"
        raise ConfigError(f"num_tasks={shorten(num_tasks)} is not possible for scenario {name!r}; valid range: {valid}")

    tasks = []
    if spec.kind == "permuted":
        source = sources[0]
        mean, std = channel_stats(source.train.images)
        num_pixels = int(np.prod(source.train.images.shape[1:]))
        gen = torch.Generator().manual_seed(seed)
        classes = tuple(range(source.num_classes))
        for k in range(num_tasks):
            # Task 0 keeps the original image; task k's permutation never depends on num_tasks.
            perm = torch.arange(num_pixels) if k == 0 else torch.randperm(num_pixels, generator=gen)
            transform = BatchTransform(mean, std, permutation=perm)
            tasks.append(_make_task(k, f"perm-{k}", classes, source, transform, val_fraction, seed, split_key=0))
    elif spec.kind == "split":
        source = sources[0]
        order = torch.arange(source.num_classes)
        if class_order == "shuffled":
            order = torch.randperm(source.num_classes, generator=torch.Generator().manual_seed(seed))
        transform = BatchTransform(*channel_stats(source.train.images))
        cpt = spec.classes_per_task
        for k in range(num_tasks):
            classes = order[k * cpt : (k + 1) * cpt].tolist()
            tasks.append(_make_task(k, _class_range_name(classes), classes, source, transform, val_fraction, seed, split_key=k))
    else:  # multi_dataset: everything to 3x32x32, each source normalised by its own statistics
        for k, source in enumerate(sources[:num_tasks]):
            height = source.train.images.shape[-1]
            transform = BatchTransform(*channel_stats(source.train.images), pad=(32 - height) // 2, channels=3)
            classes = tuple(range(source.num_classes))
            tasks.append(_make_task(k, source.name, classes, source, transform, val_fraction, seed, split_key=k))

    first = tasks[0].train
    input_shape = tuple(first.transform(first.images[:1].float().div(255.0)).shape[1:])
    return Scenario(name=name, tasks=tuple(tasks), input_shape=input_shape, default_model=spec.default_model)
