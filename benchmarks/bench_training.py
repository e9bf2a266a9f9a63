"""Training overhead: one epoch of the learner's masked training against a plain PyTorch loop over
the same network and data (the limit), and against avalanche-lib's PackNet, on permuted
Fashion-MNIST.

Each method trains task 2 while task 1's weights are frozen: the learner's masked training
(``training.fit`` in the task's first phase, where every weight is visible, so the mask product is
skipped while the gradients of frozen weights are filled with 0 and Adam is primed; no weight decay,
so nothing is restored), a plain loop (``MultiHeadNet``, Adam,
cross-entropy, the package's batch loader: no masks), and avalanche's PackNet (``Naive`` +
``PackNetPlugin`` through the package's adapter, with its own data loader). Epoch times are the
gradient steps alone: the learner's per-epoch validation is excluded.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

from common import REPEATS, summary, timed_in_turns, write

from adaqpacknet.config import Config
from adaqpacknet.continual import scenario_of
from adaqpacknet.methods import learner_for
from adaqpacknet.models import build_model
from adaqpacknet.ownership import free_masks, show_training
from adaqpacknet.training import fit, loader, pick_device

EPOCHS = 1 + REPEATS  # one warm-up epoch, then the timed ones


def masked_trainer(config: Config, scenario) -> Callable[[], float]:
    """The learner (PackNet mode) after task 1: one epoch of task 2's free weights per call."""
    packnet = config.replace(method="packnet", quantizer="none", population=1)
    learner = learner_for(packnet, scenario)
    learner.learn_task(0)
    task = scenario.tasks[1]
    free = free_masks(learner.model)
    show_training(learner.model, 2, free)
    generator = torch.Generator().manual_seed(config.seed)

    def epoch() -> float:
        report = fit(learner.model, 1, task.train, task.val, free, 1, learner.settings, learner.device, generator, "masked")
        return report.history[0]["train_seconds"]

    return epoch


def plain_trainer(config: Config, scenario, device: torch.device) -> Callable[[], float]:
    """The same network without masks, parametrisations or restores: the limit. One epoch per call."""
    torch.manual_seed(config.seed)
    model = build_model("mlp", scenario.input_shape, scenario.classes_per_task).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config.seed)

    def epoch() -> float:
        model.train()
        start = time.perf_counter()
        for x, y in loader(scenario.tasks[1].train, config.batch_size, shuffle=True, generator=generator):
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=False)
            loss = loss_fn(model(x, 1), y)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return epoch


def avalanche_epochs(config: Config, scenario) -> list[float]:
    """avalanche-lib's PackNet on task 2 (after task 1), timed by a plugin around each epoch."""
    from avalanche.core import SupervisedPlugin

    class EpochTimer(SupervisedPlugin):
        keeps_no_tensors = True  # classic.plugin_state_bytes: nothing to count in the run's state

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def before_training_epoch(self, strategy, **kwargs) -> None:
            self.start = time.perf_counter()

        def after_training_epoch(self, strategy, **kwargs) -> None:
            self.times.append(time.perf_counter() - self.start)

    # avalanche prunes after `epochs` and then trains `finetune_epochs` more: EPOCHS in all.
    theirs = config.replace(method="avalanche_packnet", epochs=EPOCHS - 1, finetune_epochs=1)
    learner = learner_for(theirs, scenario)
    learner.learn_task(0)
    timer = EpochTimer()
    learner.strategy.plugins.append(timer)
    learner.learn_task(1)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    config = Config(scenario="permuted_fashion_mnist", num_tasks=2, epochs=1, finetune_epochs=1, batch_size=args.batch_size,
                    data_root=args.data_root, progress=False, seed=0)
    device = pick_device(config.device)
    scenario = scenario_of(config)
    measured = timed_in_turns({
        "plain PyTorch loop (limit)": plain_trainer(config, scenario, device),
        "adaqpacknet masked training": masked_trainer(config, scenario),
    }, device=device, own_time=True)
    # avalanche trains a task's epochs in one call: its epochs are timed in a run of their own.
    measured["avalanche-lib PackNet"] = summary(avalanche_epochs(config, scenario)[1:])  # the first is the warm-up
    limit = measured["plain PyTorch loop (limit)"]["median_s"]
    samples = (len(scenario.tasks[1].train) // config.batch_size) * config.batch_size
    rows = [
        {
            "training": name, "epoch_s (median)": stats["median_s"], "min_s": stats["min_s"], "max_s": stats["max_s"],
            "x plain loop": stats["median_s"] / limit, "samples/s": samples / stats["median_s"],
            "steps/s": samples // config.batch_size / stats["median_s"],
        }
        for name, stats in measured.items()
    ]
    notes = (
        f"Permuted Fashion-MNIST, MLP 784-100-100, task 2 of 2 ({samples} training samples per epoch), batch "
        f"{config.batch_size}, Adam, seed 0; the plain loop's and the learner's epochs taken in turns. Targets (issue 7): "
        f"masked <= 1.15 x plain loop, and <= avalanche's PackNet."
    )
    write("training_overhead", "Training overhead: time per epoch", rows, device, notes, {"epoch_times_s": measured})


if __name__ == "__main__":
    main()
