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
from .errors import ConfigError, CorruptFileError, shorten
from .models import MultiHeadNet, body_parameter_count, build_model
from .ownership import prunable_layers
from .files import read_regular
from .results import (
    MAX_RUN_JSON_BYTES,
    SCHEMA_VERSION,
    accuracy_matrix_problem,
    checkpoint_fault,
    checkpoint_tag,
    checkpoint_tensors_file,
    environment,
    is_finite_number,
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
    """Whether ``path`` holds exactly ``data`` (after a JSON round trip); False if it is missing or
    not JSON (it is written again). The run writes this file itself: a link, FIFO, device or folder
    in its place, or a file past ``MAX_RUN_JSON_BYTES``, is refused with CorruptFileError."""
    try:
        return json.loads(read_regular(path, MAX_RUN_JSON_BYTES, follow_symlinks=False)) == json.loads(json.dumps(data))
    except CorruptFileError:
        raise
    except (FileNotFoundError, ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        return False


# Room for a safetensors header beyond the tensors' bytes: a fixed part and each tensor's entry
# (name, dtype, shape, offsets: under 200 bytes for the package's names).
HEADER_BYTES, HEADER_BYTES_PER_TENSOR = 64 << 10, 1 << 10


def _layout_problem(tensors: dict[str, Tensor], expected: dict[str, Tensor], prefix: str) -> str | None:
    """What differs between ``tensors`` and ``expected`` (names, shapes, dtypes), or None."""
    for kind, names in (("missing", set(expected) - set(tensors)), ("unexpected", set(tensors) - set(expected))):
        if names:
            first = sorted(names)[:3]
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            return f"{kind} {', '.join(prefix + name for name in first)}{more}"
    for key, want in expected.items():
        got = tensors[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{prefix}{key} is {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}"
    return None


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
            raise ConfigError(
                f"prune_ratios has {len(ratios)} entries for {self.scenario.num_tasks} tasks: give one ratio or one per task"
            )
        # Training drops the last partial batch: a task with fewer training images than a batch would
        # take no gradient step and still report results. Config bounds batch_size by the nominal
        # split sizes (config.smallest_train_split); the real ones are known only now, before any work.
        smallest = min(len(task.train) for task in self.scenario.tasks)
        if config.batch_size > smallest:
            raise ConfigError(
                f"batch_size={config.batch_size} is larger than the smallest training split of {config.scenario} "
                f"({smallest} images): no gradient step would be taken; valid range 1..{smallest}"
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

    def expected_model_state(self, done: int) -> dict[str, Tensor]:
        """The network tensors a checkpoint after ``done`` tasks holds (``model_state`` then): their
        names, shapes and dtypes, checked before any is loaded. Default: the whole network as built."""
        return self.model.state_dict()

    def extra_tensors_problem(self, tensors: dict[str, Tensor], per_task: list[dict[str, Any]]) -> str | None:
        """What is wrong with the ``extra_tensors`` of a checkpoint whose task reports are
        ``per_task`` (already checked), or None. Default: there are none."""
        return f"unexpected tensors {', '.join('extra/' + k for k in sorted(tensors)[:3])}" if tensors else None

    def extra_tensor_bytes_bound(self) -> int:
        """The most bytes ``extra_tensors`` can hold after every task (``checkpoint_bytes_bound``)."""
        return 0

    def task_report_problem(self, report: dict[str, Any], index: int) -> str | None:
        """What is wrong with a checkpoint's report of task ``index`` (0-based) for this learner's
        ``results`` and later tasks, or None. Default: its ``timings``, summed by ``results``."""
        timings = report.get("timings")
        if not isinstance(timings, dict) or not all(is_finite_number(v) and v >= 0 for v in timings.values()):
            return "'timings' is not an object of finite non-negative seconds"
        return None

    def checkpoint_bytes_bound(self) -> int:
        """The most bytes a checkpoint tensor file of this learner can need: the network as built
        (every tensor ``model_state`` can hold, in its dtype), the method's extra state after the
        last task and the safetensors header. A file past it is refused before it is read."""
        state = self.model.state_dict()
        return tensor_bytes(state.values()) + self.extra_tensor_bytes_bound() + HEADER_BYTES + HEADER_BYTES_PER_TENSOR * len(state)

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
        save_checkpoint(directory, tensors, state, tag=checkpoint_tag(len(self.per_task)))

    def resume(self, directory: str | Path) -> int:
        """Load the checkpoint in ``directory`` if there is one; returns the next task index.

        Nothing is restored until all of it is checked (``load_checkpoint``, ``check_checkpoint``,
        ``check_checkpoint_tensors``): a checkpoint that is not this run's, or not one this learner
        could have written, raises CorruptFileError naming the file and the field, before any task
        trains."""
        loaded = load_checkpoint(directory, self.checkpoint_bytes_bound(), self.check_checkpoint)
        if loaded is None:
            return 0
        tensors, state = loaded
        done = state["tasks_done"]
        if not self.resumes_mid_run and 0 < done < self.scenario.num_tasks:
            # Nothing loaded: the learner stays as built, and the run goes as a fresh one would.
            print(f"{directory}: {type(self).__name__} cannot resume mid-run (its state outside the network is not saved); starting over", flush=True)
            return 0
        self.check_checkpoint_tensors(tensors, state["per_task"], Path(directory) / state["tensors_file"])
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

    def check_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Raise CorruptFileError naming ``path`` unless the checkpoint state (already of
        ``CHECKPOINT_SCHEMA``) is one this run could have written: its schema version, this run's
        config, a number of tasks this scenario has, the accuracy matrix of that many tasks for this
        learner (``sequential`` or joint), the reports this learner reads and its tensor file's name."""
        if state["schema_version"] != SCHEMA_VERSION:
            raise checkpoint_fault(path, f"schema version {state['schema_version']}; this package writes version {SCHEMA_VERSION}")
        saved = {k: v for k, v in state["config"].items() if k not in RESUME_FREE_KEYS}
        current = {k: v for k, v in self.config.to_dict().items() if k not in RESUME_FREE_KEYS}
        if saved != current:
            changed = sorted(k for k in {*saved, *current} if saved.get(k, ...) != current.get(k, ...))
            # Not corruption: a valid checkpoint of another config, never to be deleted on our word.
            raise ConfigError(f"{path} was made with a different config (keys {shorten(changed)}): use another output folder")
        done, tasks = state["tasks_done"], self.scenario.num_tasks
        if done > tasks or (not self.sequential and done not in (0, tasks)):
            allowed = f"0..{tasks}" if self.sequential else f"0 or {tasks} (joint training learns every task at once)"
            raise checkpoint_fault(path, f"tasks_done={done}, but this scenario has {tasks} tasks (allowed: {allowed})")
        problem = accuracy_matrix_problem(state["acc_matrix"], done, self.sequential)
        if problem:
            raise checkpoint_fault(path, problem)
        for index, report in enumerate(state["per_task"]):
            problem = self.task_report_problem(report, index)
            if problem:
                raise checkpoint_fault(path, f"per_task[{index}]: {problem}")
        expected = checkpoint_tensors_file(checkpoint_tag(done))
        if state["tensors_file"] != expected:
            raise checkpoint_fault(path, f"tensors_file={shorten(state['tensors_file'])} is not {expected!r}, the file of {done} task(s)")

    def check_checkpoint_tensors(self, tensors: dict[str, Tensor], per_task: list[dict[str, Any]], path: Path) -> None:
        """Raise CorruptFileError naming ``path`` unless ``tensors`` are what ``save_checkpoint``
        writes after the tasks of ``per_task``: the network's tensors by name, shape and dtype, and
        the method's extra state (``extra_tensors_problem``)."""
        model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        extra = {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
        stray = sorted(k for k in tensors if not k.startswith(("model/", "extra/")))
        problem = (
            f"unexpected tensors {', '.join(stray[:3])}" if stray
            else _layout_problem(model, self.expected_model_state(len(per_task)), "model/") or self.extra_tensors_problem(extra, per_task)
        )
        if problem:
            raise checkpoint_fault(path, problem)
