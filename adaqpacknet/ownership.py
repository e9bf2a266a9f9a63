"""Owner maps: which task owns each body weight, and the masks that follow from them.

Every prunable layer (each ``Conv2d`` / ``Linear`` of a network's body) gets a ``WeightMask``
parametrisation (``torch.nn.utils.parametrize``). It holds two buffers, so that the state travels
with ``state_dict`` like Avalanche's ``PackNetModule``:

- ``owner`` (uint8, the weight's shape): 0 = free, k = owned by task k (1-based);
- ``mask`` (float32): the view the forward pass uses, ``weight = original * mask`` (the product is
  skipped while every weight is visible). ``WeightMask.set_view`` is its only writer.

Views: ``show_task(model, t)`` for inference of task t (weights owned by tasks 1..t), and
``show_training(model, t, trainable)`` while task t trains (tasks 1..t-1 plus its own weights).
With ``reuse=False`` (the reuse ablation) a task sees its own weights only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

MAX_TASKS = 255  # owner ids are uint8


class WeightMask(nn.Module):
    """Parametrisation ``weight = original * mask`` that also stores the layer's owner map."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("owner", torch.zeros(shape, dtype=torch.uint8))
        # The view is rebuilt from the owner map before every use: not worth storing.
        self.register_buffer("mask", torch.ones(shape), persistent=False)
        # While every weight is visible (a task's first training phase, when all non-free weights
        # belong to earlier tasks) the product is the weight itself: skip it and its backward.
        self.all_visible = True

    def set_view(self, visible: Tensor) -> None:
        """Show the weights where ``visible`` (bool, the weight's shape) is True."""
        self.mask.copy_(visible.float())
        self.all_visible = bool(visible.all())

    def forward(self, weight: Tensor) -> Tensor:
        return weight if self.all_visible else weight * self.mask


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d / Linear of ``model.body``, by qualified name inside the body, in order."""
    return {
        name: module
        for name, module in model.body.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }


def attach_owner_maps(model: nn.Module) -> None:
    """Register a ``WeightMask`` on each prunable layer; all weights start free and visible."""
    for layer in prunable_layers(model).values():
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError(f"layer {layer} already has a weight parametrisation")
        parametrize.register_parametrization(layer, "weight", WeightMask(layer.weight.shape))


def weight_mask(layer: nn.Module) -> WeightMask:
    """The layer's ``WeightMask`` (raises if owner maps were never attached)."""
    if not parametrize.is_parametrized(layer, "weight"):
        raise ValueError("owner maps are not attached: call attach_owner_maps(model) first")
    return layer.parametrizations.weight[0]


def raw_weight(layer: nn.Module) -> nn.Parameter:
    """The trainable tensor of a layer: behind its mask parametrisation if it has one (owner maps,
    WSN's scores), else the plain ``weight``."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def owner_maps(model: nn.Module) -> dict[str, Tensor]:
    """Owner map of every prunable layer (live buffers, not copies)."""
    return {name: weight_mask(layer).owner for name, layer in prunable_layers(model).items()}


def free_masks(model: nn.Module) -> dict[str, Tensor]:
    """Boolean masks of the weights no task owns yet."""
    return {name: owner == 0 for name, owner in owner_maps(model).items()}


def task_view(owner: Tensor, task: int, reuse: bool = True) -> Tensor:
    """Where ``task`` (1-based) reads weights: owners 1..task, or only ``task`` without reuse."""
    return (owner >= (1 if reuse else task)) & (owner <= task)


def show_task(model: nn.Module, task: int, reuse: bool = True) -> None:
    """Inference view of ``task`` (1-based): weights owned by tasks 1..task (``reuse=False``: by
    ``task`` alone), nothing else."""
    for layer in prunable_layers(model).values():
        wm = weight_mask(layer)
        wm.set_view(task_view(wm.owner, task, reuse))


def show_training(model: nn.Module, task: int, trainable: dict[str, Tensor], reuse: bool = True) -> None:
    """Training view of ``task``: frozen weights of tasks 1..task-1 (none with ``reuse=False``)
    plus ``trainable`` ones."""
    for name, layer in prunable_layers(model).items():
        wm = weight_mask(layer)
        if bool((trainable[name] & (wm.owner != 0)).any()):
            raise ValueError(f"layer {name}: trainable weights must be free (owner 0)")
        earlier = task_view(wm.owner, task - 1) if reuse else torch.zeros_like(trainable[name])
        wm.set_view(earlier | trainable[name])


def assign(model: nn.Module, kept: dict[str, Tensor], task: int) -> None:
    """Freeze: ``kept`` free weights become owned by ``task``; the rest stay free."""
    if not 1 <= task <= MAX_TASKS:
        raise ValueError(f"task id {task} is outside 1..{MAX_TASKS}")
    for name, owner in owner_maps(model).items():
        clash = kept[name] & (owner != 0)
        if bool(clash.any()):
            raise ValueError(f"layer {name}: {int(clash.sum())} weights are already owned")
        owner[kept[name]] = task


def capacity_used(model: nn.Module) -> dict[str, float]:
    """Fraction of each layer's weights owned by some task, and ``"total"`` over all layers."""
    owners = owner_maps(model)
    result = {name: float((owner != 0).float().mean()) for name, owner in owners.items()}
    owned = sum(int((owner != 0).sum()) for owner in owners.values())
    total = sum(owner.numel() for owner in owners.values())
    result["total"] = owned / total
    return result
