"""Training of a task's free weights with every earlier task's weights kept bit-identical.

Three guards keep frozen weights frozen (shared pitfalls: Adam's weight decay and momentum move
weights whose gradient is zero):
1. a fresh Adam per call, over the body's raw weights, the task's own head and any extra parameters
   (WSN's scores) only;
2. gradients of non-trainable positions zeroed before each step;
3. with weight decay, non-trainable positions restored from a snapshot after each step (Adam adds
   the decay to the gradient). Without it the restore would copy each weight onto itself: a fresh
   Adam's first moment of an always-zero gradient stays 0, so its step there is exactly 0 (the
   second moment is free: ``_prime_second_moments``). The restore costs about a tenth of an MLP
   epoch on the CPU, so it runs only when it can matter.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .ownership import prunable_layers, raw_weight


# False runs the plain loop: restore after every step and no primed second moments.
# tests/test_learner.py checks that both give the same state_dict, bit for bit (with the
# skipped mask product of ownership.WeightMask undone too).
SHORTCUTS = True


@dataclass(frozen=True)
class TrainSettings:
    """The optimisation settings ``fit`` needs: a slice of ``Config``, same names and meaning."""

    batch_size: int
    lr: float
    weight_decay: float
    lr_patience: int
    lr_factor: float
    early_stop_patience: int  # 0 = off
    eval_batch_size: int
    progress: bool


@dataclass
class FitReport:
    """What one ``fit`` call did: per-epoch history and the epoch whose weights were kept."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class EpochKeeper:
    """The validation schedule of every training loop (``fit``, the classic strategies' plugin,
    joint training), epoch by epoch: the lr times ``lr_factor`` after ``lr_patience`` epochs without
    a gain (``ReduceLROnPlateau``), the state of the best validation epoch kept (``snapshot()`` then),
    and early stopping after ``early_stop_patience`` flat epochs (0: off).

    ``snapshot`` returns what ``restore`` puts back at the end; ``best_state`` starts as the state
    before the first epoch (``initial``) or None."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_factor: float, lr_patience: int, early_stop_patience: int,
                 snapshot: Callable[[], Any], initial: Any = None) -> None:
        # PyTorch reduces after `patience + 1` flat epochs; the protocol (WSN) after `lr_patience`.
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=lr_factor, patience=lr_patience - 1)
        self.optimizer, self.early_stop_patience, self.snapshot = optimizer, early_stop_patience, snapshot
        self.best, self.best_epoch, self.flat, self.epochs = -1.0, 0, 0, 0
        self.best_state = initial

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def end_epoch(self, val_accuracy: float) -> bool:
        """Record an epoch's validation accuracy; True when training should stop early."""
        self.epochs += 1
        self.scheduler.step(val_accuracy)
        if val_accuracy > self.best:
            self.best, self.best_epoch, self.flat = val_accuracy, self.epochs, 0
            self.best_state = self.snapshot()
            return False
        self.flat += 1
        return bool(self.early_stop_patience) and self.flat >= self.early_stop_patience


def assigned_gpus() -> str | None:
    """The GPUs this process was given (``CUDA_VISIBLE_DEVICES``, set by SLURM's --gpus, by
    ``make reproduce GPUS=...`` and by most schedulers), or None where none was: unset, empty, or a
    value that hides every GPU ("-1", "NoDevFiles")."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return None if visible in ("", "-1", "NoDevFiles") else visible


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one, and the CPU when none was given to this process. A
    process given GPUs (``assigned_gpus``) whose CUDA is unusable (a driver older than torch's CUDA
    build, a CPU build of torch) fails rather than train for hours on one CPU thread."""
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
    if name == "auto" and not available and assigned_gpus() is not None:
        raise RuntimeError(
            f"device='auto': this process was given GPU(s) CUDA_VISIBLE_DEVICES={assigned_gpus()} but torch cannot use CUDA "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}; an NVIDIA driver older than the build, or a CPU build?). "
            f"Fix the driver or the torch build, or train on the CPU on purpose with device='cpu' (or unset CUDA_VISIBLE_DEVICES)"
        )
    device = torch.device(("cuda" if available else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        # Reproducible convolutions: cuDNN's autotuner and non-deterministic kernels off.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return device


def _show_bars(progress: bool) -> bool:
    # Bars on a terminal or in Jupyter; in a redirected log they would be a flood of redraws,
    # and the per-epoch summary line says what matters.
    return progress and (sys.stderr.isatty() or "ipykernel" in sys.modules)


def _keep_batch(batch):
    # TaskDataset.__getitems__ already returns an (images, labels) batch: collate nothing.
    return batch


def loader(dataset: Dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader over a ``TaskDataset`` that fetches whole batches with ``__getitems__``.

    Shuffled (training) loaders drop a last incomplete batch: batch-statistics BatchNorm fails on
    a batch of one, and reshuffling each epoch means no sample is left out for good.
    """
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=_keep_batch, drop_last=shuffle
    )


def on_device(dataset: Dataset, device: torch.device) -> Dataset:
    """``dataset`` with its tensors on ``device`` when that is a GPU and the dataset is held in
    memory (``TaskDataset.to``: MNIST-sized tasks as uint8, a few MB to a GB), else as it is. One
    copy per call instead of one per batch: a copy from pageable host memory makes the host wait
    for every kernel queued before it."""
    return dataset.to(device) if device.type == "cuda" and hasattr(dataset, "to") else dataset


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, head: int, batch_size: int, device: torch.device,
    label_offset: int = 0, num_classes: int | None = None,
) -> float:
    """Accuracy in percent of head ``head`` on ``dataset`` under the model's current mask view.
    For a single head over every task's classes: ``label_offset`` is added to the dataset's labels
    and only the head's first ``num_classes`` outputs (the classes seen so far) compete."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)  # summed on the device: one sync, at the end
    total = 0
    for x, y in loader(on_device(dataset, device), batch_size, shuffle=False):
        logits = model(x.to(device), head)[:, :num_classes]
        correct += (logits.argmax(1) == y.to(device) + label_offset).sum()
        total += len(y)
    return 100.0 * int(correct) / max(total, 1)


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the message names the task and the epoch."""


def fit(
    model: nn.Module,
    head: int,
    train_data: Dataset,
    val_data: Dataset,
    trainable: dict[str, Tensor],
    epochs: int,
    settings: TrainSettings,
    device: torch.device,
    generator: torch.Generator,
    desc: str = "",
    extra_params: list[nn.Parameter] | None = None,
) -> FitReport:
    """Train the ``trainable`` positions of each body layer's weight, head ``head`` and ``extra_params``.

    The caller sets the network's view first (which weights the forward pass uses). Uses Adam with
    the lr halved on validation plateaus; keeps the parameters of the epoch with the best
    validation accuracy (early stopping, when on, ends training after a flat spell).
    """
    start = time.perf_counter()
    layers = prunable_layers(model)
    weights = {name: raw_weight(layer) for name, layer in layers.items()}
    frozen = {name: ~trainable[name] for name in layers}
    restore = settings.weight_decay > 0 or not SHORTCUTS  # guard 3 (module docstring)
    primed = not SHORTCUTS  # see _prime_second_moments; the plain loop never primes
    snapshots = {name: w.detach().clone() for name, w in weights.items()} if restore else {}
    head_module = model.heads[head]
    params = list(weights.values()) + list(head_module.parameters()) + list(extra_params or [])
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)

    def snapshot() -> list[Tensor]:
        return [p.detach().clone() for p in params]

    keeper = EpochKeeper(optimizer, settings.lr_factor, settings.lr_patience, settings.early_stop_patience, snapshot, snapshot())
    loss_fn = nn.CrossEntropyLoss()
    train_on_device = on_device(train_data, device)
    report = FitReport()
    for epoch in range(1, epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        # Sums stay on the device: a per-batch float() would synchronise the GPU at every step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        batches = loader(train_on_device, settings.batch_size, shuffle=True, generator=generator)
        bar = tqdm(batches, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not _show_bars(settings.progress), mininterval=1.0)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=False)
            logits = model(x, head)
            loss = loss_fn(logits, y)
            loss.backward()
            with torch.no_grad():
                for name, w in weights.items():
                    # A fill, not a product: a NaN or inf gradient must not reach a frozen weight.
                    w.grad.masked_fill_(frozen[name], 0.0)
            optimizer.step()
            if not restore and not primed:
                _prime_second_moments(optimizer, weights, trainable)
                primed = True
            if restore:
                with torch.no_grad():
                    for name, w in weights.items():
                        w.copy_(torch.where(trainable[name], w, snapshots[name]))
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the steps queued on the GPU are part of the epoch's time
        train_seconds = time.perf_counter() - epoch_start  # the gradient steps alone (benchmarks/)
        val_acc = evaluate(model, val_data, head, settings.eval_batch_size, device)
        seconds = time.perf_counter() - epoch_start  # before the keeper copies the best state
        stop = keeper.end_epoch(val_acc)
        row = {
            "epoch": epoch,
            "loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": 100.0 * int(correct) / max(seen, 1),
            "val_accuracy": val_acc,
            "lr": keeper.lr,
            "seconds": seconds,
            "train_seconds": train_seconds,
        }
        if not math.isfinite(row["loss"]):
            raise DivergedError(
                f"{desc or 'training'}: the training loss is {row['loss']} in epoch {epoch}/{epochs} (lr {row['lr']:.2e}); "
                f"training stops here: lower lr, or check the data for non-finite values"
            )
        report.history.append(row)
        report.epochs_run = epoch
        # One plain line per epoch, readable in headless logs where bars do not render.
        print(
            f"{desc} epoch {epoch}/{epochs}: loss {row['loss']:.4f} train {row['train_accuracy']:.2f}% "
            f"val {val_acc:.2f}% lr {row['lr']:.2e} ({row['seconds']:.1f}s)",
            flush=True,
        )
        if stop:
            break
    with torch.no_grad():
        for p, best in zip(params, keeper.best_state):
            p.copy_(best)
    report.best_epoch, report.best_val_accuracy = keeper.best_epoch, keeper.best
    report.seconds = time.perf_counter() - start
    return report


@torch.no_grad()
def _prime_second_moments(optimizer: torch.optim.Adam, weights: dict[str, Tensor], trainable: dict[str, Tensor]) -> None:
    """Set Adam's second moment to 1 at the non-trainable positions, after its first step.

    Their gradient is always zero, so their first moment stays exactly 0 and their step is 0
    whatever the second moment holds: nothing any weight does changes. What changes is speed: the
    second moment would otherwise stay exactly 0 there, and the CPU square root of this torch
    build runs about 5x slower on zeros (benchmarks/: a quarter of the masked-training overhead).
    Only without weight decay, where the zero gradient is guaranteed.
    """
    for name, w in weights.items():
        optimizer.state[w]["exp_avg_sq"].masked_fill_(~trainable[name], 1.0)


def trainable_state(model: nn.Module, head: int) -> dict[str, Tensor]:
    """A copy of what training task ``head + 1`` can change: every body weight and its head."""
    state = {f"body/{name}": raw_weight(layer).detach().clone() for name, layer in prunable_layers(model).items()}
    state.update({f"head/{k}": v.detach().clone() for k, v in model.heads[head].state_dict().items()})
    return state


def load_trainable_state(model: nn.Module, head: int, state: dict[str, Tensor]) -> None:
    """Put back a ``trainable_state`` copy."""
    with torch.no_grad():
        for name, layer in prunable_layers(model).items():
            raw_weight(layer).copy_(state[f"body/{name}"])
        model.heads[head].load_state_dict({k[len("head/"):]: v for k, v in state.items() if k.startswith("head/")})
