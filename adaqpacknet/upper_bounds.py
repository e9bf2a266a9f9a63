"""The two upper bounds of task-incremental accuracy (shared method.md §5).

- ``Independent`` (``method="independent"``): a fresh network per task, trained on that task
  alone; no forgetting and no transfer, at T times the storage of one network.
- ``Joint`` (``method="joint"``): one network (shared body, a head per task) trained on every
  task at once, in mixed batches; not continual learning, so its results have one row of
  accuracies, after training, and no BWT or forgetting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from . import methods
from .config import Config
from .continual import ContinualLearner, float32_bytes, task_seed, tensor_bytes
from .data import Scenario
from .data.scenarios import copy_to
from .models import MultiHeadNet, build_model
from .ownership import prunable_layers
from .training import DivergedError, EpochKeeper, evaluate, fit, loader, on_device


class PerTaskNetworks(nn.Module):
    """One ``MultiHeadNet`` per task; ``forward(x, task)`` runs task ``task``'s own network."""

    def __init__(self, networks: list[MultiHeadNet]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    # Views, not submodules (each parameter is saved once): the body's architecture, for counting,
    # and each task's own head.
    @property
    def body(self) -> nn.Module:
        return self.networks[0].body

    @property
    def heads(self) -> list[nn.Linear]:
        return [net.heads[t] for t, net in enumerate(self.networks)]

    def forward(self, x: Tensor, task: int) -> Tensor:
        return self.networks[task](x, task)


class Independent(ContinualLearner):
    """One network per task, each trained on its task alone."""

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        methods.check_learner(self, config)
        super().__init__(config, scenario)

    def build_network(self) -> PerTaskNetworks:
        shape, classes = self.scenario.input_shape, self.scenario.classes_per_task
        networks = []
        for index in range(self.scenario.num_tasks):
            torch.manual_seed(task_seed(self.config.seed, index))  # each network its own initialisation
            networks.append(build_model(self.model_name, shape, classes))
        return PerTaskNetworks(networks)

    def learn_task(self, index: int) -> dict[str, Any]:
        started = time.perf_counter()
        seed = self.begin_task(index)
        network, task = self.model.networks[index], self.scenario.tasks[index]
        every_weight = {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in prunable_layers(network).items()}
        report = fit(
            network, index, task.train, task.val, every_weight, self.config.epochs_per_task, self.settings, self.device,
            torch.Generator().manual_seed(seed), f"task {index + 1}",
        )
        result = {
            "task": index + 1, "name": task.name, "classes": list(task.classes),
            "best_epoch": report.best_epoch, "val_accuracy": report.best_val_accuracy, "epochs_run": report.epochs_run,
            "timings": {"train_s": report.seconds, "total_s": time.perf_counter() - started},
        }
        self.per_task.append(result)
        return result

    def model_state(self) -> dict[str, Tensor]:
        # The trained networks only: the others are rebuilt from their seeds.
        return self.expected_model_state(len(self.per_task))

    def expected_model_state(self, done: int) -> dict[str, Tensor]:
        # The networks of the tasks done (``model_state``), as a checkpoint after ``done`` tasks holds them.
        return {k: v for k, v in self.model.state_dict().items() if int(k.split(".")[1]) < done}

    def load_model_state(self, state: dict[str, Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        done = len({k.split(".")[1] for k in state})
        if unexpected or any(int(k.split(".")[1]) < done for k in missing):
            raise ValueError(f"the checkpoint does not match the networks: missing {missing}, unexpected {unexpected}")

    def storage(self) -> tuple[int, str]:
        T = len(self.per_task)
        parts = [part for net, head in zip(self.model.networks[:T], self.model.heads[:T]) for part in (net.body, head)]
        return float32_bytes(*parts), "one float32 network (body and head) per task"

    def state(self) -> tuple[int, str]:
        return 0, "0: each task trains a network of its own from its own seed's initialisation, reading nothing of earlier tasks"


class TaskLabelled(Dataset):
    """Several tasks' datasets as one, each sample with its task index: ``(X, Y, task)`` batches."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = list(datasets)
        self.starts = torch.tensor([0, *torch.tensor([len(d) for d in datasets]).cumsum(0).tolist()])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        tasks = torch.bucketize(indices, self.starts[1:], right=True)
        xs, ys = [], []
        for task in tasks.unique().tolist():
            local = indices[tasks == task] - self.starts[task]
            x, y = self.datasets[task].__getitems__(local.tolist())
            xs.append(x)
            ys.append(y)
        # Samples come back grouped by task; the batch is still a uniform random draw.
        return torch.cat(xs), torch.cat(ys), tasks.sort(stable=True).values


class Joint(ContinualLearner):
    """One network trained on every task at once (multi-head): the joint upper bound."""

    sequential = False

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        methods.check_learner(self, config)
        super().__init__(config, scenario)

    def learn_from(self, start_task: int, out_dir: str | Path | None) -> None:
        """Train on every task at once, unless the run in ``out_dir`` is finished (``run``)."""
        if start_task == self.scenario.num_tasks:
            return
        self.learn_all()
        self.acc_matrix = [self.evaluate_all()]
        if out_dir is not None:
            self.save_checkpoint(out_dir)

    def learn_task(self, index: int) -> dict[str, Any]:
        raise ValueError("joint training learns every task at once: call run() (or learn_all())")

    def evaluate_all(self) -> list[float]:
        return [
            evaluate(self.model, task.test, index, self.config.eval_batch_size, self.device)
            for index, task in enumerate(self.scenario.tasks)
        ]

    def learn_all(self) -> None:
        """Adam on the sum of every sample's loss under its own task's head; best mean validation kept."""
        started = time.perf_counter()
        cfg, tasks = self.config, self.scenario.tasks
        seed = task_seed(cfg.seed, 0)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        data = TaskLabelled([on_device(t.train, self.device) for t in tasks])
        params = list(self.model.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def snapshot() -> list[Tensor]:
            return [p.detach().clone() for p in params]

        keeper = EpochKeeper(optimizer, cfg.lr_factor, cfg.lr_patience, cfg.early_stop_patience, snapshot, snapshot())
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        history = []
        for epoch in range(1, cfg.epochs_per_task + 1):
            self.model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=self.device)  # on the device: no synchronisation per step
            for x, y, task_of in loader(data, cfg.batch_size, shuffle=True, generator=generator):
                # Each task's rows, from the task ids the loader gives on the CPU: a mask or unique()
                # on the device would make the host wait for the GPU at every step. The same rows
                # as a boolean mask selects, in the same order: the same loss, bit for bit.
                rows = [(t, copy_to((task_of == t).nonzero().squeeze(1), self.device)) for t in task_of.unique().tolist()]
                x, y = x.to(self.device), y.to(self.device)
                features = self.model.body(x)
                loss = sum(loss_fn(self.model.heads[t](features.index_select(0, r)), y.index_select(0, r)) for t, r in rows) / len(y)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
            if not math.isfinite(float(loss_sum)):
                raise DivergedError(
                    f"joint training: the training loss is {float(loss_sum)} in epoch {epoch}/{cfg.epochs_per_task} (lr {optimizer.param_groups[0]['lr']:.2e}); "
                    f"training stops here: lower lr, or check the data for non-finite values"
                )
            val = [evaluate(self.model, t.val, i, cfg.eval_batch_size, self.device) for i, t in enumerate(tasks)]
            mean_val = sum(val) / len(val)
            stop = keeper.end_epoch(mean_val)  # the schedule and early stopping every other method gets
            history.append({"epoch": epoch, "val_accuracy": mean_val, "seconds": time.perf_counter() - epoch_start})
            print(f"joint epoch {epoch}/{cfg.epochs_per_task}: mean val {mean_val:.2f}% ({history[-1]['seconds']:.1f}s)", flush=True)
            if stop:
                break
        with torch.no_grad():
            for p, best in zip(params, keeper.best_state):
                p.copy_(best)
        seconds = time.perf_counter() - started
        self.per_task = [{"task": i + 1, "name": t.name, "classes": list(t.classes), "timings": {}} for i, t in enumerate(tasks)]
        # One training for all tasks: its cost is booked once, on the last task.
        self.per_task[-1]["timings"] = {"train_s": seconds, "total_s": seconds}
        self.per_task[-1]["history"] = history
        self.per_task[-1]["epochs_run"] = len(history)

    def storage(self) -> tuple[int, str]:
        return float32_bytes(self.model.body, *self.model.heads), "one float32 network with every task's head"

    def state(self) -> tuple[int, str]:
        # Learning one more task means training again on every task's data: its training split, and its
        # validation split, by whose mean accuracy over the tasks the best epoch is kept.
        splits = [split for task in self.scenario.tasks[: len(self.per_task)] for split in (task.train, task.val)]
        return tensor_bytes(tensor for split in splits for tensor in (split.images, split.labels)), (
            "joint training's stored data: every task's training and validation images (uint8) and labels (int64), "
            "as the package holds them, since learning one more task trains on all of them again"
        )
