"""The task loop every method shares: learn a task, re-measure every seen task, checkpoint, resume.

A method subclasses ``ContinualLearner`` and implements ``learn_task`` (and, where it has them,
the view of one task's sub-network, extra checkpoint tensors, extra results and its storage).
Everything a results file must say about any method (shared method.md §4) is written here, once.
"""

from __future__ import annotations

import dataclasses
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import metrics
from .config import Config
from .data import Scenario, build_scenario, check_data_available
from .models import MultiHeadNet, body_parameter_count, build_model
from .ownership import prunable_layers
from .results import (
    SCHEMA_VERSION,
    CorruptFileError,
    environment,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from .training import TrainSettings, evaluate, pick_device

# Settings that may differ between a run and its resumption without changing any result.
RESUME_FREE_KEYS = ("progress", "device", "data_root", "download")


def task_seed(seed: int, task_index: int) -> int:
    """Seed of one task's randomness, so a resumed run draws exactly what an unbroken one would."""
    return (seed * 1_000_003 + task_index * 7_919 + 17) % (2**63)


def scenario_of(config: Config) -> Scenario:
    """The scenario ``config`` names, after checking that its data is there (before any work)."""
    check_data_available(config.scenario, config.data_root, config.download)
    return build_scenario(
        config.scenario,
        root=config.data_root,
        num_tasks=config.num_tasks,
        seed=config.seed,
        val_fraction=config.val_fraction,
        class_order=config.class_order,
        download=config.download,
    )


def float32_bytes(*modules: nn.Module) -> int:
    """Bytes of every parameter of ``modules`` stored as float32."""
    return 4 * sum(p.numel() for module in modules for p in module.parameters())


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of ``tensors`` as held: ``numel() * element_size()`` each, a tensor object counted once."""
    unique = {id(t): t for t in tensors}
    return sum(t.numel() * t.element_size() for t in unique.values())


# The one rule of ``state_bytes`` (every method's ``state()``), beside ``model_bytes`` (``storage()``).
STATE_BYTES_RULE = (
    "state_bytes = the bytes a method keeps after a task, beyond the bytes to predict (model_bytes), "
    "because its training of a later task reads them; counted from the objects it holds after the task, "
    "numel x element size of each tensor in its own dtype; scratch that a later task overwrites before "
    "reading it (per-step gradients, optimiser moments reset per task, the best epoch's weights) is not counted"
)


def _same_json(path: Path, data: Any) -> bool:
    """Whether ``path`` holds exactly ``data`` (after a JSON round trip); False if unreadable."""
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(data))
    except (OSError, ValueError):
        return False


class ContinualLearner(ABC):
    """One method on one scenario: ``run()`` learns every task in order, writing results as it goes.

    Subclasses implement ``learn_task(index)`` (returning the task's report, with a ``timings``
    dict) and may override ``show`` (the view of task ``index`` before it is evaluated),
    ``extra_tensors`` / ``load_extra_tensors`` (checkpointed state beyond the model's),
    ``method_results`` (keys beyond the common ones), ``storage`` (the method's natural storage
    in bytes), ``state`` (the bytes it keeps beyond those to go on learning) and ``write_outputs``
    (files beside the results).
    """

    # False for a method that learns every task at once: one row of accuracies, no BWT/forgetting.
    sequential = True
    # False for a method whose state between tasks lives outside the checkpoint (avalanche's
    # strategies): an interrupted run starts over rather than resume without it.
    resumes_mid_run = True

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        self.config = config
        self.device = pick_device(config.device)  # before the data: a missing GPU costs nothing
        self.scenario = scenario_of(config) if scenario is None else scenario
        ratios = config.prune_ratios  # Config checks the length only when num_tasks is given
        if ratios is not None and len(ratios) not in (1, self.scenario.num_tasks):
            raise ValueError(
                f"prune_ratios has {len(ratios)} entries for {self.scenario.num_tasks} tasks: give one ratio or one per task"
            )
        torch.set_num_threads(config.cpu_threads)  # CPU numbers depend on it: Config.cpu_threads
        # Recorded when the run starts: the commit whose code runs, not whatever HEAD is at the end.
        self.environment = environment(self.device)
        self.resumed_in: list[dict[str, Any]] = []  # environments of the processes that resumed
        self.model_name = self.scenario.default_model if config.model == "auto" else config.model
        torch.manual_seed(config.seed)
        self.model = self.build_network()
        self.model.to(self.device)
        self.acc_matrix: list[list[float]] = []
        self.per_task: list[dict[str, Any]] = []
        self.settings = TrainSettings(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainSettings)})

    def build_network(self) -> MultiHeadNet:
        """The scenario's network with one head per task."""
        return build_model(self.model_name, self.scenario.input_shape, self.scenario.classes_per_task)

    # --- hooks ------------------------------------------------------------------------------------

    @abstractmethod
    def learn_task(self, index: int) -> dict[str, Any]:
        """Learn task ``index`` (0-based), append its report to ``per_task`` and return it."""

    @property
    def holds_cycles(self) -> bool:
        """Whether this learner sits in reference cycles that hold large tensors, freed only by the
        cyclic garbage collector (``runs.run_configs`` collects after such a learner)."""
        return False

    def begin_task(self, index: int) -> int:
        """Check that task ``index`` (0-based) is the next one; seed torch, numpy and ``random`` from
        (seed, task), so a resumed run draws exactly what an unbroken one would. Returns the seed."""
        if index != len(self.per_task):
            raise ValueError(f"task {index} cannot be learned now: the next task is {len(self.per_task)}")
        seed = task_seed(self.config.seed, index)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return seed

    def show(self, index: int) -> None:
        """Prepare the network to run task ``index`` (0-based); the default has nothing to do."""

    def model_state(self) -> dict[str, Tensor]:
        """The network state a checkpoint keeps (default: all of it)."""
        return self.model.state_dict()

    def load_model_state(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)

    def layer_sizes(self) -> dict[str, int]:
        """Weights of each body layer (Conv/Linear), by name."""
        return {name: layer.weight.numel() for name, layer in prunable_layers(self.model).items()}

    def extra_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_extra_tensors(self, tensors: dict[str, Tensor]) -> None:
        pass

    def method_results(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def storage(self) -> tuple[int, str]:
        """Bytes of the learned tasks under the method's natural storage, and how they are counted."""

    def state(self) -> tuple[int, str]:
        """Bytes the method keeps after the tasks learned so far, beyond ``storage()``'s bytes to
        predict, in order to go on learning the next task, and how they are counted (results:
        ``state_bytes``, ``state_bytes_definition``). The one rule, for every method:

        state_bytes = the bytes a method keeps after a task, beyond the bytes to predict
        (model_bytes), because its training of a later task reads them; counted from the objects it
        holds after the task, numel x element size of each tensor in its own dtype; scratch that a
        later task overwrites before reading it is not counted (``STATE_BYTES_RULE``).

        The default: nothing is kept beyond the bytes to predict.
        """
        return 0, "0: nothing is kept beyond the bytes to predict"

    def write_outputs(self, directory: Path) -> None:
        pass

    # --- the task loop ------------------------------------------------------------------------------

    def run(self, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Learn every task; with ``out_dir``, checkpoint after each task and resume from it.

        Writes ``results.json`` (atomically) in ``out_dir`` and returns the same dictionary.
        """
        start_task = 0 if out_dir is None else self.resume(out_dir)
        self.learn_from(start_task, out_dir)
        results = self.results()
        if out_dir is not None:
            results_path = Path(out_dir) / "results.json"
            if start_task == self.scenario.num_tasks:
                if _same_json(results_path, results):
                    return results  # nothing to write: the file's modification time stays as it was
                # A kill between the last checkpoint and the results may have left the outputs stale.
                self.write_outputs(Path(out_dir))
            write_json(results_path, results)
        return results

    def learn_from(self, start_task: int, out_dir: str | Path | None) -> None:
        """Learn tasks ``start_task`` onwards in order, each re-measured and checkpointed (``run``)."""
        for index in range(start_task, self.scenario.num_tasks):
            self.learn_task(index)
            self.acc_matrix.append(self.evaluate_seen())
            print(
                f"task {index + 1}/{self.scenario.num_tasks} done: test accuracy {self.acc_matrix[-1][-1]:.2f}%, "
                f"mean over seen tasks {sum(self.acc_matrix[-1]) / len(self.acc_matrix[-1]):.2f}%",
                flush=True,
            )
            if out_dir is not None:
                self.save_checkpoint(out_dir)
                self.write_outputs(Path(out_dir))

    def evaluate_seen(self) -> list[float]:
        """Test accuracy (percent) of every learned task, each under its own view."""
        row = []
        for index in range(len(self.per_task)):
            self.show(index)
            row.append(evaluate(self.model, self.scenario.tasks[index].test, index, self.config.eval_batch_size, self.device))
        return row

    @torch.no_grad()
    def logits(self, x: Tensor, index: int, view_set: bool = False) -> Tensor:
        """Logits (on the CPU) of task ``index`` (0-based) for the batch ``x``, in eval mode.
        ``view_set=True`` skips setting the task's view: the previous call set it for this task."""
        if not view_set:
            self.show(index)
        self.model.eval()
        return self.model(x.to(self.device), index).cpu()

    # --- results and checkpoints -----------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        """The results dictionary (schema in the README), from the current state."""
        T = len(self.per_task)
        sequential = self.sequential and T > 0
        # A joint run's matrix is its one final row.
        final_mean = sum(self.acc_matrix[-1]) / len(self.acc_matrix[-1]) if T and not sequential else None
        keys = dict.fromkeys(key for r in self.per_task for key in r["timings"])
        timings = {key: sum(r["timings"].get(key, 0.0) for r in self.per_task) for key in keys}
        body = body_parameter_count(self.model)
        heads = [{"weight": h.weight.numel(), "bias": h.bias.numel()} for h in self.model.heads[:T]]
        model_bytes, definition = self.storage() if T else (None, None)
        state_bytes, state_definition = self.state() if T else (None, None)
        return {
            "schema_version": SCHEMA_VERSION,
            "method": self.config.label,
            "scenario": self.config.scenario,
            "model": self.model_name,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "environment": self.environment,
            "resumed_in": self.resumed_in,
            "num_tasks": T,
            "task_names": [t.name for t in self.scenario.tasks[:T]],
            "sequential": self.sequential,
            "train_samples": [len(t.train) for t in self.scenario.tasks[:T]],
            "acc_matrix": self.acc_matrix,
            "acc": metrics.average_accuracy(self.acc_matrix) if sequential else final_mean,
            "bwt": metrics.backward_transfer(self.acc_matrix) if sequential else None,
            "forgetting": metrics.forgetting(self.acc_matrix) if sequential else None,
            "metric_definitions": {
                "acc": metrics.ACC_DEFINITION,
                "bwt": metrics.BWT_DEFINITION,
                "forgetting": metrics.FORGETTING_DEFINITION,
            },
            "weights": {
                "body": body,
                "per_layer": self.layer_sizes(),
                "heads": heads,
            },
            "model_bytes": model_bytes,
            "model_bytes_definition": definition,
            "state_bytes": state_bytes,
            "state_bytes_definition": state_definition,
            "dense_float32_bytes": 4 * (body + sum(heads[0].values())) if T else None,
            **self.method_results(),
            "per_task": self.per_task,
            "timings": {**timings, "per_task": [r["timings"] for r in self.per_task]},
        }

    def save_checkpoint(self, directory: str | Path) -> None:
        """Tensors (model state and the method's extra state) and plain data, written atomically."""
        tensors = {f"model/{k}": v for k, v in self.model_state().items()}
        tensors.update({f"extra/{k}": v for k, v in self.extra_tensors().items()})
        state = {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "tasks_done": len(self.per_task),
            "acc_matrix": self.acc_matrix,
            "per_task": self.per_task,
            "environment": self.environment,
            "resumed_in": self.resumed_in,
        }
        save_checkpoint(directory, tensors, state, tag=f"task{len(self.per_task):03d}")

    def resume(self, directory: str | Path) -> int:
        """Load the checkpoint in ``directory`` if there is one; returns the next task index."""
        loaded = load_checkpoint(directory)
        if loaded is None:
            return 0
        tensors, state = loaded
        if state.get("schema_version") != SCHEMA_VERSION:
            raise CorruptFileError(
                f"the checkpoint in {directory} has schema version {state.get('schema_version')}; this package "
                f"writes version {SCHEMA_VERSION}: delete {directory} to start over"
            )
        saved = {k: v for k, v in state["config"].items() if k not in RESUME_FREE_KEYS}
        current = {k: v for k, v in self.config.to_dict().items() if k not in RESUME_FREE_KEYS}
        if saved != current:
            changed = sorted(k for k in current if saved.get(k) != current[k])
            raise ValueError(
                f"the checkpoint in {directory} was made with a different config (keys {changed}); "
                f"use another output folder or delete it to start over"
            )
        done = int(state["tasks_done"])
        if not self.resumes_mid_run and 0 < done < self.scenario.num_tasks:
            # Nothing loaded: the learner stays as built, and the run goes as a fresh one would.
            print(f"{directory}: {type(self).__name__} cannot resume mid-run (its state outside the network is not saved); starting over", flush=True)
            return 0
        self.load_model_state({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
        self.load_extra_tensors({k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")})
        self.acc_matrix = state["acc_matrix"]
        self.per_task = state["per_task"]
        # The results describe the process that trained the first task; each process that trained
        # more tasks is listed. Loading a finished run (a notebook reading the run cache) is a read,
        # not a resumption: the results stay byte-identical, so a workflow engine sees them unchanged.
        finished = done == self.scenario.num_tasks
        self.resumed_in = state["resumed_in"] if finished else [*state["resumed_in"], self.environment]
        self.environment = state["environment"]
        print(f"{'loaded finished run' if finished else 'resumed'} from {directory}: {done} task(s) already learned", flush=True)
        return done
