"""WSN, Winning SubNetworks (Kang et al., ICML 2022), on the package's networks and scenarios.

Every body layer keeps one float32 weight tensor shared by all tasks and one score per weight.
While task t trains, its mask is the top-c share of each layer's |scores| (c = ``wsn_capacity``),
with a straight-through estimator passing the gradient to the scores; the forward pass uses
``weight * mask``. Weights that an earlier task's mask selected are frozen (the same three guards
as Ada-QPacknet's training); the others train. When the task ends its mask is stored (one bit per
weight per task), and inference for task t uses mask t and head t. Storage, counted as the packed
file of the owner-map methods is: float32 for every weight some mask selects, the masks
entropy-coded, float32 heads. Kept beyond those to go on learning (``state``): the float32 weights
no mask selects, which later tasks train on, and every weight's float32 score.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import methods
from .config import Config
from .continual import ContinualLearner, tensor_bytes
from .data import Scenario
from .models import MultiHeadNet
from .ownership import prunable_layers, raw_weight
from .packing import entropy_coded_bytes
from .training import fit


class _TopShare(torch.autograd.Function):
    """1 for the ``share`` largest scores of a tensor, 0 elsewhere; the gradient passes straight."""

    @staticmethod
    def forward(ctx, scores: Tensor, share: float) -> Tensor:
        k = top_count(scores.numel(), share)
        # Ranked, not thresholded: ties at the threshold would select more than the capacity.
        top = torch.topk(scores.flatten(), k, sorted=False).indices
        mask = torch.zeros(scores.numel(), device=scores.device, dtype=scores.dtype)
        mask[top] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def top_count(numel: int, share: float) -> int:
    """How many of ``numel`` weights a mask of capacity ``share`` selects (at least one)."""
    return max(1, min(numel, round(share * numel)))


class ScoreMask(nn.Module):
    """Parametrisation ``weight = original * mask``: the mask is learned from scores, or stored.

    ``task_masks`` (bool, one row per task) holds every finished task's mask; ``active`` picks
    the stored mask to use (a task index), or ``None`` to use the scores' current top share.
    """

    def __init__(self, shape: torch.Size, num_tasks: int, capacity: float) -> None:
        super().__init__()
        self.capacity = capacity
        self.scores = nn.Parameter(torch.empty(shape))
        # WSN initialises scores like weights (kaiming uniform); only their ranking matters.
        nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))
        self.register_buffer("task_masks", torch.zeros((num_tasks, *shape), dtype=torch.bool))
        self.active: int | None = None

    def current_mask(self) -> Tensor:
        return _TopShare.apply(self.scores.abs(), self.capacity)

    def forward(self, weight: Tensor) -> Tensor:
        if self.active is None:
            return weight * self.current_mask()
        return weight * self.task_masks[self.active].to(weight.dtype)


def score_masks(model: nn.Module) -> dict[str, ScoreMask]:
    """The ``ScoreMask`` of every prunable layer."""
    return {name: layer.parametrizations.weight[0] for name, layer in prunable_layers(model).items()}


class WSN(ContinualLearner):
    """WSN on one scenario (``method="wsn"``): ``run()`` learns every task, writing results."""

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        methods.check_learner(self, config)
        super().__init__(config, scenario)

    def build_network(self) -> MultiHeadNet:
        model = super().build_network()
        for layer in prunable_layers(model).values():
            parametrize.register_parametrization(
                layer, "weight", ScoreMask(layer.weight.shape, self.scenario.num_tasks, self.config.wsn_capacity)
            )
        return model

    def show(self, index: int) -> None:
        for mask in score_masks(self.model).values():
            mask.active = index

    def used_before(self, index: int) -> dict[str, Tensor]:
        """Weights selected by any mask of tasks 0..index-1: frozen while task ``index`` trains."""
        return {name: m.task_masks[:index].any(0) for name, m in score_masks(self.model).items()}

    def learn_task(self, index: int) -> dict[str, Any]:
        started = time.perf_counter()
        seed = self.begin_task(index)  # dropout and score ties
        generator = torch.Generator().manual_seed(seed)  # batch order
        task = self.scenario.tasks[index]
        masks = score_masks(self.model)
        for mask in masks.values():
            mask.active = None
        trainable = {name: ~used for name, used in self.used_before(index).items()}
        report = fit(
            self.model, index, task.train, task.val, trainable, self.config.epochs_per_task, self.settings, self.device,
            generator, f"task {index + 1}", extra_params=[m.scores for m in masks.values()],
        )
        with torch.no_grad():
            for mask in masks.values():
                mask.task_masks[index] = mask.current_mask().bool()
        reused = {
            name: int((m.task_masks[index] & ~trainable[name]).sum()) for name, m in masks.items()
        }
        result = {
            "task": index + 1,
            "name": task.name,
            "classes": list(task.classes),
            "selected_weights": {name: int(m.task_masks[index].sum()) for name, m in masks.items()},
            "reused_weights": reused,
            "best_epoch": report.best_epoch,
            "val_accuracy": report.best_val_accuracy,
            "epochs_run": report.epochs_run,
            "timings": {"train_s": report.seconds, "total_s": time.perf_counter() - started},
        }
        self.per_task.append(result)
        return result

    def storage(self) -> tuple[int, str]:
        # Counted like the packed file of the owner-map methods: a weight no mask selects costs
        # nothing, and each task's mask is entropy-coded (packing.entropy_coded_bytes).
        T = len(self.per_task)
        masks = score_masks(self.model)
        selected = sum(int(m.task_masks[:T].any(0).sum()) for m in masks.values())
        coded = entropy_coded_bytes([m.task_masks[t].cpu().numpy() for m in masks.values() for t in range(T)], 2)
        heads = sum(h.weight.numel() + h.bias.numel() for h in self.model.heads[:T])
        return 4 * selected + coded + 4 * heads, (
            "WSN: float32 weights that some task's mask selects + entropy-coded masks (one order-0 ANS stream per task "
            "and layer) + float32 heads"
        )

    def state(self) -> tuple[int, str]:
        # What the next task reads beyond the bytes to predict: the weights no mask selects keep their
        # values and train on, and the scores (never reset) rank the next task's mask.
        T = len(self.per_task)
        layers, masks = prunable_layers(self.model), score_masks(self.model)
        unselected = [raw_weight(layers[name]).detach()[~m.task_masks[:T].any(0)] for name, m in masks.items()]
        return tensor_bytes([*unselected, *(m.scores for m in masks.values())]), (
            "WSN: the float32 weights no task's mask selects (the next task trains on from their values) + the float32 "
            "score of every body weight (kept between tasks: the next task's mask is learned from them)"
        )

    def method_results(self) -> dict[str, Any]:
        used = self.used_before(len(self.per_task))
        total = sum(u.numel() for u in used.values())
        capacity = {name: float(u.float().mean()) for name, u in used.items()}
        capacity["total"] = sum(int(u.sum()) for u in used.values()) / total
        return {"capacity_used": capacity}
