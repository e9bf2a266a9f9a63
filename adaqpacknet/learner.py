"""The Ada-QPacknet learner: the task loop of shared method.md §2, with checkpoints and results.

For each task t (owner id t, head t-1):
1. re-initialise the free weights;
2. sparsity search: ``population`` candidates, each with per-layer prune ratios ~ U[r_min, r_max],
   trained and pruned, scored on validation by ``w * accuracy + (1 - w) * pruned fraction``;
3. (inside each candidate) train the free weights -> prune by magnitude -> retrain the survivors;
4. quantise the task's weights (and its head) to the smallest bit width within the tolerance;
5. freeze: the survivors become owned by task t, the pruned weights return to the free pool.
After every task the test accuracy of every seen task is re-measured from the frozen state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import math
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from . import metrics
from .config import Config
from .data import Scenario, Task, build_scenario, check_data_available
from .models import HEAD, HEAD_BIAS, build_model
from .ownership import (
    assign,
    attach_owner_maps,
    capacity_used,
    free_masks,
    owner_maps,
    prunable_layers,
    raw_weight,
    show_task,
    show_training,
)
from .packing import PACKED_FILE, PROBES_FILE, pack, probe_batch
from .pruning import magnitude_keep_mask, sample_prune_ratios
from .quantization import BitSearchResult, search_bit_widths
from .results import (
    CorruptFileError,
    SCHEMA_VERSION,
    environment,
    load_checkpoint,
    save_checkpoint,
    write_bytes,
    write_json,
)
from .training import TrainSettings, evaluate, fit, load_trainable_state, pick_device, trainable_state

FLOAT_BITS = 32
# Settings that may differ between a run and its resumption without changing any result.
RESUME_FREE_KEYS = ("progress", "device", "data_root", "download")


def task_seed(seed: int, task_index: int) -> int:
    """Seed of one task's randomness, so a resumed run draws exactly what an unbroken one would."""
    return (seed * 1_000_003 + task_index * 7_919 + 17) % (2**63)


class AdaQPacknet:
    """Ada-QPacknet on one scenario: ``run()`` learns every task, writing results as it goes.

    State lives in the model: owner maps are buffers of each layer's ``WeightMask``, frozen weights
    hold their quantised values, and ``codebooks`` keeps the codebook of every (task, layer).
    """

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        self.config = config
        self.scenario = scenario_of(config) if scenario is None else scenario
        self.device = pick_device(config.device)
        # Recorded when the run starts: the commit whose code runs, not whatever HEAD is at the end.
        self.environment = environment(self.device)
        self.resumed_in: list[dict[str, Any]] = []  # environments of the processes that resumed
        model_name = self.scenario.default_model if config.model == "auto" else config.model
        torch.manual_seed(config.seed)
        self.model = build_model(model_name, self.scenario.input_shape, self.scenario.classes_per_task)
        attach_owner_maps(self.model)
        _check_body_parameters(self.model)
        self.model.to(self.device)
        self.model_name = model_name
        self.layer_names = list(prunable_layers(self.model))
        self.codebooks: dict[str, Tensor] = {}  # "task/layer" -> codebook (float32)
        self.acc_matrix: list[list[float]] = []
        self.per_task: list[dict[str, Any]] = []
        # Logits of each task's probe batch, recorded when the task was frozen (0-based task index):
        # the packed file must reproduce them bit for bit.
        self.probe_logits: dict[int, Tensor] = {}
        self._packed: tuple[int, bytes, dict[str, Any]] | None = None  # (tasks, file, ledger) cache
        self.settings = TrainSettings(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainSettings)})

    # --- the task loop ---------------------------------------------------------------------------

    def run(self, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Learn every task; with ``out_dir``, checkpoint after each task and resume from it.

        Writes ``results.json`` (atomically) in ``out_dir`` and returns the same dictionary.
        """
        start_task = 0
        if out_dir is not None:
            start_task = self.resume(out_dir)
        for index in range(start_task, self.scenario.num_tasks):
            self.learn_task(index)
            self.acc_matrix.append(self.evaluate_seen())
            print(
                f"task {index + 1}/{self.scenario.num_tasks} done: bits {self.per_task[-1]['bits']}, "
                f"test accuracy {self.acc_matrix[-1][-1]:.2f}%, mean over seen tasks "
                f"{sum(self.acc_matrix[-1]) / len(self.acc_matrix[-1]):.2f}%",
                flush=True,
            )
            if out_dir is not None:
                self.save_checkpoint(out_dir)
                self.write_packed(out_dir)
        results = self.results()
        if out_dir is not None:
            self.write_packed(out_dir)  # after a resumption too: the file always matches the results
            write_json(Path(out_dir) / "results.json", results)
        return results

    def learn_task(self, index: int) -> dict[str, Any]:
        """Search, train, prune, quantise and freeze task ``index`` (0-based); returns its report.

        The four steps are public so that a notebook can stop between them and look (the method
        tour does): ``start_task`` -> ``search_sparsity`` -> ``quantize_task`` -> ``freeze_task``.
        """
        step = self.start_task(index)
        self.search_sparsity(step)
        self.quantize_task(step)
        return self.freeze_task(step)

    def start_task(self, index: int) -> "TaskStep":
        """Seed the task's randomness and re-initialise the free weights."""
        if index != len(self.per_task):
            raise ValueError(f"task {index} cannot be learned now: the next task is {len(self.per_task)}")
        seed = task_seed(self.config.seed, index)
        torch.manual_seed(seed)  # dropout
        step = TaskStep(
            index=index,
            task=self.scenario.tasks[index],
            generator=torch.Generator().manual_seed(seed),  # initialisation, ratios, batch order
            free=free_masks(self.model),
            started=time.perf_counter(),
        )
        self._reinitialise(step.free, step.generator)
        return step

    def search_sparsity(self, step: "TaskStep") -> None:
        """Train and prune ``population`` candidates; leave the fittest one's weights in place."""
        cfg, index, owner_id = self.config, step.index, step.index + 1
        search_start = time.perf_counter()
        start_state = trainable_state(self.model, index)
        winner_state = start_state
        for number in range(cfg.population):
            load_trainable_state(self.model, index, start_state)
            ratios = sample_prune_ratios(self.layer_names, cfg.r_min, cfg.r_max, step.generator)
            keep = self._train_candidate(step, ratios, f"task {owner_id} cand {number + 1}")
            candidate = self._score(step.task, keep, step.free, ratios)
            step.candidates.append(candidate)
            print(
                f"task {owner_id} candidate {number + 1}/{cfg.population}: val {candidate['val_accuracy']:.2f}% "
                f"pruned {100 * candidate['pruned_fraction']:.1f}% fitness {candidate['fitness']:.4f}",
                flush=True,
            )
            # Strictly better only: on a tie the earlier candidate stays the winner.
            if step.winner < 0 or candidate["fitness"] > step.candidates[step.winner]["fitness"]:
                step.winner, winner_state, step.keep = number, trainable_state(self.model, index), keep
        if cfg.search_keep == "retrain" and cfg.population > 1:
            # Reference-code behaviour: retrain from the task's starting point with the winning ratios.
            load_trainable_state(self.model, index, start_state)
            step.keep = self._train_candidate(step, step.candidates[step.winner]["prune_ratios"], f"task {owner_id} retrain")
        else:
            load_trainable_state(self.model, index, winner_state)
        step.timings["search_s"] = time.perf_counter() - search_start

    def quantize_task(self, step: "TaskStep") -> None:
        """Record the float validation accuracy, then run the bit-width search (unless float)."""
        quantize_start = time.perf_counter()
        show_training(self.model, step.index + 1, step.keep)
        step.float_accuracy = evaluate(self.model, step.task.val, step.index, self.config.eval_batch_size, self.device)
        step.bit_search = self._quantize(step.task, step.keep, step.float_accuracy)
        step.timings["quantize_s"] = time.perf_counter() - quantize_start

    def freeze_task(self, step: "TaskStep") -> dict[str, Any]:
        """The survivors become owned by the task; the pruned weights return to the free pool."""
        owner_id, search = step.index + 1, step.bit_search
        assign(self.model, step.keep, owner_id)
        self.probe_logits[step.index] = self.logits(probe_batch(step.task.test), step.index)
        report = {
            "task": owner_id,
            "name": step.task.name,
            "classes": list(step.task.classes),
            "prune_ratios": step.candidates[step.winner]["prune_ratios"],
            "candidates": step.candidates,
            "winner": step.winner,
            "free_weights": {name: int(step.free[name].sum()) for name in self.layer_names},
            "owned_weights": {name: int(step.keep[name].sum()) for name in self.layer_names},
            "bits": self._task_bits(search),
            "layer_bits": {name: self._layer_bits(search, name) for name in [*self.layer_names, HEAD, HEAD_BIAS]},
            "val_accuracy_float": step.float_accuracy,
            "val_accuracy_quantized": search.accuracy if search else step.float_accuracy,
            "within_tolerance": search.within_tolerance if search else True,
            "bit_search": search.trace if search else [],
            "epochs_run": step.epochs_run,
            "timings": {
                "train_s": step.timings["train_s"],
                "search_s": step.timings["search_s"],
                "quantize_s": step.timings["quantize_s"],
                "total_s": time.perf_counter() - step.started,
            },
        }
        self.per_task.append(report)
        return report

    @torch.no_grad()
    def logits(self, x: Tensor, index: int) -> Tensor:
        """Logits (on the CPU) of task ``index`` (0-based) for the batch ``x``, from the frozen state."""
        show_task(self.model, index + 1)
        self.model.eval()
        return self.model(x.to(self.device), index).cpu()

    def evaluate_seen(self) -> list[float]:
        """Test accuracy (percent) of every learned task, each under its own frozen view."""
        row = []
        for index in range(len(self.per_task)):
            show_task(self.model, index + 1)
            row.append(evaluate(self.model, self.scenario.tasks[index].test, index, self.config.eval_batch_size, self.device))
        return row

    # --- steps ------------------------------------------------------------------------------------

    def _reinitialise(self, free: dict[str, Tensor], generator: torch.Generator) -> None:
        """Fresh values for the free weights (method.md §2.1); frozen ones are untouched."""
        if self.config.free_init == "keep":
            return
        with torch.no_grad():
            for name, layer in prunable_layers(self.model).items():
                weight = raw_weight(layer)
                fresh = torch.empty(weight.shape)
                if self.config.free_init == "layer_default":
                    # Conv2d / Linear reset_parameters(): kaiming_uniform_ with a = sqrt(5).
                    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
                else:
                    fresh.uniform_(-1.0, 1.0, generator=generator)
                weight.copy_(torch.where(free[name], fresh.to(weight.device), weight))

    def _train_candidate(self, step: "TaskStep", ratios: dict[str, float], desc: str) -> dict[str, Tensor]:
        """Train one candidate; returns its keep mask (the surviving free weights)."""
        cfg, task, free = self.config, step.task, step.free
        weights = {name: raw_weight(layer) for name, layer in prunable_layers(self.model).items()}

        def prune() -> dict[str, Tensor]:
            return {name: magnitude_keep_mask(weights[name], free[name], ratios[name]) for name in self.layer_names}

        def train(trainable: dict[str, Tensor], epochs: int, label: str) -> None:
            report = fit(self.model, task.index, task.train, task.val, trainable, epochs, self.settings, self.device, step.generator, label)
            step.timings["train_s"] += report.seconds
            step.epochs_run += report.epochs_run

        if cfg.prune_schedule == "fixed_mask":
            # Reference-code-faithful: the magnitude mask is fixed at the start and trained with.
            keep = prune()
            train(keep, cfg.epochs, desc)
            return keep
        train(free, cfg.epochs, desc)
        keep = prune()
        if cfg.finetune_epochs > 0:
            train(keep, cfg.finetune_epochs, f"{desc} retrain")
        return keep

    def _score(self, task: Task, keep: dict[str, Tensor], free: dict[str, Tensor], ratios: dict[str, float]) -> dict[str, Any]:
        """Validation fitness of a candidate: w * accuracy + (1 - w) * pruned / free weights."""
        show_training(self.model, task.index + 1, keep)
        accuracy = evaluate(self.model, task.val, task.index, self.config.eval_batch_size, self.device)
        n_free = sum(int(free[name].sum()) for name in self.layer_names)
        n_kept = sum(int(keep[name].sum()) for name in self.layer_names)
        pruned_fraction = (n_free - n_kept) / n_free if n_free else 0.0
        w = self.config.fitness_accuracy_weight
        return {
            "prune_ratios": ratios,
            "val_accuracy": accuracy,
            "pruned_fraction": pruned_fraction,
            "fitness": w * accuracy / 100.0 + (1.0 - w) * pruned_fraction,
        }

    def _quantize(self, task: Task, keep: dict[str, Tensor], float_accuracy: float) -> BitSearchResult | None:
        """Bit-width search over the task's surviving weights and its head; writes the result."""
        cfg = self.config
        if cfg.quantizer == "none":
            return None
        layers = prunable_layers(self.model)
        head = self.model.heads[task.index]
        weights = {name: raw_weight(layers[name]) for name in self.layer_names}
        weights[HEAD], weights[HEAD_BIAS] = head.weight, head.bias
        positions = {name: keep[name] for name in self.layer_names}
        positions[HEAD] = torch.ones_like(head.weight, dtype=torch.bool)
        positions[HEAD_BIAS] = torch.ones_like(head.bias, dtype=torch.bool)
        values = {name: weights[name].detach()[positions[name]].clone() for name in weights}

        def write(dequantised: dict[str, Tensor]) -> None:
            with torch.no_grad():
                for name, v in dequantised.items():
                    weights[name][positions[name]] = v.to(weights[name].device)

        def score(dequantised: dict[str, Tensor]) -> float:
            write(dequantised)
            return evaluate(self.model, task.val, task.index, cfg.eval_batch_size, self.device)

        result = search_bit_widths(
            values,
            score,
            float_accuracy,
            cfg.quantizer,
            cfg.max_bits,
            cfg.min_bits,
            cfg.tolerance,
            per_layer=cfg.bit_allocation == "per_layer",
        )
        write({name: q.values() for name, q in result.quantized.items()})
        for name, q in result.quantized.items():
            self.codebooks[f"{task.index + 1}/{name}"] = q.codebook
        return result

    def _task_bits(self, search: BitSearchResult | None) -> int | dict[str, int]:
        if search is None:
            return FLOAT_BITS
        widths = set(search.bits.values())
        return widths.pop() if len(widths) == 1 else dict(search.bits)

    @staticmethod
    def _layer_bits(search: BitSearchResult | None, name: str) -> int:
        return FLOAT_BITS if search is None else search.bits[name]

    # --- the packed file ---------------------------------------------------------------------------

    def pack(self) -> tuple[bytes, dict[str, Any]]:
        """The packed file of every learned task and its bits ledger (``packing.pack``), cached."""
        if not self.per_task:
            raise ValueError("no task has been learned yet: there is nothing to pack")
        if self._packed is None or self._packed[0] != len(self.per_task):
            blob, ledger = pack(
                self.model,
                self.model_name,
                self.scenario.input_shape,
                [r["layer_bits"] for r in self.per_task],
                None if self.config.quantizer == "none" else self.codebooks,
                self.config.to_dict(),
            )
            self._packed = (len(self.per_task), blob, ledger)
        return self._packed[1], self._packed[2]

    def write_packed(self, directory: str | Path) -> Path:
        """Write ``packed.safetensors`` and the probe logits (``probes.safetensors``) atomically."""
        blob, _ = self.pack()
        path = Path(directory) / PACKED_FILE
        write_bytes(path, blob)
        probes = {f"task{index}/logits": logits.contiguous() for index, logits in self.probe_logits.items()}
        write_bytes(Path(directory) / PROBES_FILE, safetensors_save(probes, metadata={"device": str(self.device)}))
        return path

    # --- results and checkpoints -----------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        """The results dictionary (schema in the README), from the current state."""
        owners = owner_maps(self.model)
        total_weights = sum(o.numel() for o in owners.values())
        owned = [r["owned_weights"] for r in self.per_task]
        bits = [{name: r["layer_bits"][name] for name in self.layer_names} for r in self.per_task]
        T = len(self.acc_matrix)
        timings = {key: sum(r["timings"][key] for r in self.per_task) for key in ("train_s", "search_s", "quantize_s", "total_s")}
        ledger = dict(self.pack()[1]) if T else {}
        sizes = {key: ledger.pop(key, None) for key in ("packed_bytes", "entropy_bound_bytes", "dense_float32_bytes")}
        return {
            "schema_version": SCHEMA_VERSION,
            "method": self.config.method,
            "scenario": self.config.scenario,
            "model": self.model_name,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "environment": self.environment,
            "resumed_in": self.resumed_in,
            "num_tasks": T,
            "task_names": [t.name for t in self.scenario.tasks[:T]],
            "acc_matrix": self.acc_matrix,
            "acc": metrics.average_accuracy(self.acc_matrix) if T else None,
            "bwt": metrics.backward_transfer(self.acc_matrix) if T else None,
            "forgetting": metrics.forgetting(self.acc_matrix) if T else None,
            "metric_definitions": {
                "acc": metrics.ACC_DEFINITION,
                "bwt": metrics.BWT_DEFINITION,
                "forgetting": metrics.FORGETTING_DEFINITION,
            },
            "weights": {
                "body": total_weights,
                "per_layer": {name: o.numel() for name, o in owners.items()},
                "heads": [{"weight": h.weight.numel(), "bias": h.bias.numel()} for h in self.model.heads[:T]],
            },
            "capacity_used": capacity_used(self.model),
            "bit_weighted_capacity": metrics.bit_weighted_capacity(owned, bits, total_weights),
            "bit_widths": [r["bits"] for r in self.per_task],
            **sizes,
            "packed_file": PACKED_FILE if T else None,
            "bits_ledger": ledger,
            "per_task": self.per_task,
            "timings": {**timings, "per_task": [r["timings"] for r in self.per_task]},
        }

    def save_checkpoint(self, directory: str | Path) -> None:
        """Tensors (model state incl. owner maps, codebooks) and plain data, written atomically."""
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"codebook/{k}": v for k, v in self.codebooks.items()})
        tensors.update({f"probe/{k}": v for k, v in self.probe_logits.items()})
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
        model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        self.model.load_state_dict(model_state)
        self.codebooks = {k[len("codebook/"):]: v for k, v in tensors.items() if k.startswith("codebook/")}
        self.probe_logits = {int(k[len("probe/"):]): v for k, v in tensors.items() if k.startswith("probe/")}
        self.acc_matrix = state["acc_matrix"]
        self.per_task = state["per_task"]
        # The results describe the process that trained the first task; each resumption is listed.
        self.resumed_in = [*state["resumed_in"], self.environment]
        self.environment = state["environment"]
        done = int(state["tasks_done"])
        print(f"resumed from {directory}: {done} task(s) already learned", flush=True)
        return done


@dataclass
class TaskStep:
    """A task between ``start_task`` and ``freeze_task``: what each step hands to the next."""

    index: int
    task: Task
    generator: torch.Generator
    free: dict[str, Tensor]  # weights no earlier task owns
    started: float
    keep: dict[str, Tensor] = field(default_factory=dict)  # the winner's surviving free weights
    candidates: list[dict[str, Any]] = field(default_factory=list)
    winner: int = -1
    float_accuracy: float = 0.0
    bit_search: BitSearchResult | None = None
    epochs_run: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"train_s": 0.0, "search_s": 0.0, "quantize_s": 0.0})


def _check_body_parameters(model: nn.Module) -> None:
    # A body parameter outside the masked layers (a bias, an affine BatchNorm) would be shared and
    # changed by every task: forgetting. The networks are built without any; refuse one that has.
    masked = {id(raw_weight(layer)) for layer in prunable_layers(model).values()}
    extra = [name for name, p in model.body.named_parameters() if id(p) not in masked]
    if extra:
        raise ValueError(f"body parameters outside the owner-mapped layers would be shared by all tasks: {extra}")


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


def run(config: Config, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the learner for ``config`` and run it (resuming from ``out_dir`` if it holds a checkpoint)."""
    return AdaQPacknet(config).run(out_dir)
