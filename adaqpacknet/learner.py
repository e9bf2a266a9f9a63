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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from . import methods, metrics
from .config import Config
from .continual import ContinualLearner, tensor_bytes
from .data import Scenario, Task
from .models import HEAD, HEAD_BIAS, MultiHeadNet
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
from .packing import PACKED_FILE, PROBE_SIZE, PROBES_FILE, PackedNetwork, pack, probe_batch
from .pruning import budget_prune_ratios, magnitude_keep_mask, sample_prune_ratios
from .quantization import BitSearchResult, search_bit_widths
from .results import checkpoint_fault, write_bytes
from .training import evaluate, fit, load_trainable_state, trainable_state

FLOAT_BITS = 32


class AdaQPacknet(ContinualLearner):
    """Ada-QPacknet on one scenario (and PackNet, ``method="packnet"``: one fixed prune ratio per
    task, no search, no quantisation); ``run()`` learns every task, writing results as it goes.

    State lives in the model: owner maps are buffers of each layer's ``WeightMask``, frozen weights
    hold their quantised values, and ``codebooks`` keeps the codebook of every (task, layer).
    """

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        methods.check_learner(self, config)
        super().__init__(config, scenario)
        self.layer_names = list(prunable_layers(self.model))
        self.codebooks: dict[str, Tensor] = {}  # "task/layer" -> codebook (float32)
        # Logits of each task's probe batch, recorded when the task was frozen (0-based task index):
        # the packed file must reproduce them bit for bit.
        self.probe_logits: dict[int, Tensor] = {}
        self._packed: tuple[int, bytes, dict[str, Any]] | None = None  # (tasks, file, ledger) cache
        self._open_step: TaskStep | None = None  # the task between start_task and freeze_task

    def build_network(self) -> MultiHeadNet:
        model = super().build_network()
        attach_owner_maps(model)
        _check_body_parameters(model)
        return model

    def show(self, index: int) -> None:
        show_task(self.model, index + 1, self.config.reuse_frozen)

    # --- the task loop ---------------------------------------------------------------------------

    def learn_task(self, index: int) -> dict[str, Any]:
        """Search, train, prune, quantise and freeze task ``index`` (0-based); returns its report.

        The four steps are public so that a notebook can stop between them and look (the method
        tour does): ``start_task`` -> ``search_sparsity`` -> ``quantize_task`` -> ``freeze_task``.
        """
        step = self.start_task(index)
        self.search_sparsity(step)
        self.quantize_task(step)
        return self.freeze_task(step)

    def _advance(self, step: "TaskStep", to: str) -> None:
        """Move ``step`` to stage ``to``, the step after its own (``TASK_STEPS``), or refuse: a step
        skipped or repeated would record a task that was never quantised (32 bits, accuracy 0) or
        change one already frozen."""
        order = " -> ".join(TASK_STEPS)
        if step is not self._open_step:
            state = "is frozen" if step.stage == TASK_STEPS[-1] else "is not this learner's open task"
            raise RuntimeError(f"{to} on task {step.index + 1}: the task {state}; each task goes {order}")
        expected = TASK_STEPS[TASK_STEPS.index(step.stage) + 1]
        if to != expected:
            raise RuntimeError(f"{to} on task {step.index + 1}: its last step was {step.stage}, so the next is {expected} ({order})")
        step.stage = to
        if to == TASK_STEPS[-1]:
            self._open_step = None

    def start_task(self, index: int) -> "TaskStep":
        """Seed the task's randomness and re-initialise the free weights: the first of the task's
        steps (``TASK_STEPS``). Tasks are learned in order, one at a time; the open task may start
        again (a step that failed or was interrupted leaves it open): its free weights are drawn anew,
        its head keeps what the abandoned step trained."""
        if self._open_step is not None and self._open_step.index != index:
            open_step = self._open_step
            remaining = TASK_STEPS[TASK_STEPS.index(open_step.stage) + 1 :]
            raise RuntimeError(f"start_task({index}): task {open_step.index + 1} is open after {open_step.stage}; finish it first ({' -> '.join(remaining)})")
        if index != len(self.per_task):
            raise RuntimeError(
                f"start_task({index}): {len(self.per_task)} tasks are learned, so the next is index {len(self.per_task)} "
                f"(tasks are learned in order)"
            )
        seed = self.begin_task(index)  # dropout
        step = TaskStep(
            index=index,
            task=self.scenario.tasks[index],
            generator=torch.Generator().manual_seed(seed),  # initialisation, ratios, batch order
            free=free_masks(self.model),
            started=time.perf_counter(),
        )
        self._reinitialise(step.free, step.generator)
        self._open_step = step
        return step

    def search_sparsity(self, step: "TaskStep") -> None:
        """Train and prune ``population`` candidates; leave the fittest one's weights in place."""
        self._advance(step, "search_sparsity")
        cfg, index, owner_id = self.config, step.index, step.index + 1
        search_start = time.perf_counter()
        start_state = trainable_state(self.model, index)
        winner_state = start_state
        for number in range(cfg.population):
            load_trainable_state(self.model, index, start_state)
            if not methods.spec(cfg.method).searches:  # PackNet: its fixed ratio
                ratios = {name: cfg.prune_ratio(index) for name in self.layer_names}
            elif cfg.capacity_rule == "budget":
                ratios = budget_prune_ratios(
                    {name: int(step.free[name].sum()) for name in self.layer_names},
                    {name: step.free[name].numel() for name in self.layer_names},
                    self.scenario.num_tasks - index,  # this task and those still to come
                    cfg.capacity_budget,
                    (cfg.budget_share_min, cfg.budget_share_max),
                    step.generator,
                )
            else:
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
        self._advance(step, "quantize_task")
        quantize_start = time.perf_counter()
        show_training(self.model, step.index + 1, step.keep, self.config.reuse_frozen)
        step.float_accuracy = evaluate(self.model, step.task.val, step.index, self.config.eval_batch_size, self.device)
        step.bit_search = self._quantize(step.task, step.keep, step.float_accuracy)
        step.timings["quantize_s"] = time.perf_counter() - quantize_start

    def freeze_task(self, step: "TaskStep") -> dict[str, Any]:
        """The survivors become owned by the task; the pruned weights return to the free pool."""
        self._advance(step, "freeze_task")
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
            show_training(self.model, task.index + 1, trainable, self.config.reuse_frozen)
            report = fit(self.model, task.index, task.train, task.val, trainable, epochs, self.settings, self.device, step.generator, label)
            step.timings["train_s"] += report.seconds
            step.epochs_run += report.epochs_run

        if cfg.prune_schedule == "fixed_mask":
            # Reference-code-faithful: the magnitude mask is fixed at the start and trained with, for
            # the whole budget of a task (Config.epochs_per_task), as every other schedule.
            keep = prune()
            train(keep, cfg.epochs_per_task, desc)
            return keep
        train(free, cfg.epochs, desc)
        keep = prune()
        if cfg.finetune_epochs > 0:
            train(keep, cfg.finetune_epochs, f"{desc} retrain")
        return keep

    def _score(self, task: Task, keep: dict[str, Tensor], free: dict[str, Tensor], ratios: dict[str, float]) -> dict[str, Any]:
        """Validation fitness of a candidate: w * accuracy + (1 - w) * pruned / free weights."""
        show_training(self.model, task.index + 1, keep, self.config.reuse_frozen)
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

    def packed_logits_identical(self, path: str | Path) -> bool:
        """Whether the packed file at ``path`` gives every frozen task's probe logits bit for bit as
        recorded when the task was frozen. Loaded on this learner's device, where they were recorded:
        bit-exact logits need the same device (a GPU's kernels round otherwise than the CPU's)."""
        network = PackedNetwork.load(path, device=self.device)
        with torch.no_grad():
            return all(
                torch.equal(network(probe_batch(self.scenario.tasks[index].test).to(self.device), index).cpu(), logits)
                for index, logits in self.probe_logits.items()
            )

    # --- results and checkpoints -----------------------------------------------------------------

    def write_outputs(self, directory: Path) -> None:
        self.write_packed(directory)

    def extra_tensors(self) -> dict[str, Tensor]:
        tensors = {f"codebook/{k}": v for k, v in self.codebooks.items()}
        tensors.update({f"probe/{k}": v for k, v in self.probe_logits.items()})
        return tensors

    def load_extra_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.codebooks = {k[len("codebook/"):]: v for k, v in tensors.items() if k.startswith("codebook/")}
        self.probe_logits = {int(k[len("probe/"):]): v for k, v in tensors.items() if k.startswith("probe/")}

    # --- what a checkpoint may hold (checked before anything is restored: ContinualLearner.resume) ---

    def _coded_layers(self) -> list[str]:
        """The names of a task's ``layer_bits`` and codebooks: every body layer, the head and its bias."""
        return [*self.layer_names, HEAD, HEAD_BIAS]

    def task_report_problem(self, report: dict[str, Any], index: int) -> str | None:
        """Beyond the timings: the bit widths ``pack`` codes each layer with (32 without a quantiser,
        else min_bits..max_bits) and the owned weights ``method_results`` counts."""
        cfg, sizes = self.config, self.layer_sizes()
        widths = range(FLOAT_BITS, FLOAT_BITS + 1) if cfg.quantizer == "none" else range(cfg.min_bits, cfg.max_bits + 1)
        bits, owned = report.get("layer_bits"), report.get("owned_weights")
        if not isinstance(bits, dict) or sorted(bits) != sorted(self._coded_layers()) or not all(
            type(b) is int and b in widths for b in bits.values()
        ):
            return f"'layer_bits' is not a bit width in {widths.start}..{widths.stop - 1} for each of {self._coded_layers()}"
        if not isinstance(owned, dict) or sorted(owned) != sorted(sizes) or not all(
            type(n) is int and 0 <= n <= sizes[name] for name, n in owned.items()
        ):
            return f"'owned_weights' is not a count of weights for each of {list(sizes)}"
        return super().task_report_problem(report, index)

    def extra_tensors_problem(self, tensors: dict[str, Tensor], per_task: list[dict[str, Any]]) -> str | None:
        """The codebooks of every (task, layer) ``pack`` reads (none without a quantiser), 1-D float32
        of at most 2^bits levels, and each task's probe logits, float32 (probe samples, classes)."""
        expected: dict[str, tuple[tuple[int, ...], int]] = {}  # name -> (shape, most rows when a codebook)
        if self.config.quantizer != "none":
            for task, report in enumerate(per_task, start=1):
                expected.update({f"codebook/{task}/{name}": ((), 2 ** report["layer_bits"][name]) for name in self._coded_layers()})
        for index in range(len(per_task)):
            rows = min(PROBE_SIZE, len(self.scenario.tasks[index].test))
            expected[f"probe/{index}"] = ((rows, self.scenario.classes_per_task[index]), 0)
        names = sorted(set(tensors) ^ set(expected))
        if names:
            return f"the extra tensors are not this run's: {'missing' if names[0] in expected else 'unexpected'} extra/{names[0]}"
        for name, (shape, levels) in expected.items():
            tensor = tensors[name]
            fits = tensor.dim() == 1 and tensor.numel() <= levels if levels else tuple(tensor.shape) == shape
            if tensor.dtype != torch.float32 or not fits:
                wanted = f"1-D of at most {levels} levels" if levels else f"of shape {shape}"
                return f"extra/{name} is {tensor.dtype} {tuple(tensor.shape)}, expected float32 {wanted}"
        return None

    def check_checkpoint_tensors(self, tensors: dict[str, Tensor], per_task: list[dict[str, Any]], path: Path) -> None:
        """Beyond the layout: every owner map names only the tasks done (0 = free, 1..done)."""
        super().check_checkpoint_tensors(tensors, per_task, path)
        for name, owner in tensors.items():
            if name.endswith(".owner") and owner.numel() and int(owner.max()) > len(per_task):
                raise checkpoint_fault(path, f"{name} names task {int(owner.max())}, but {len(per_task)} task(s) are done")

    def extra_tensor_bytes_bound(self) -> int:
        """Codebooks of at most 2^max_bits float32 levels per (task, layer) and the probe logits."""
        tasks, layers = self.scenario.num_tasks, len(self._coded_layers())
        codebooks = 0 if self.config.quantizer == "none" else tasks * layers * 4 * 2**self.config.max_bits
        probes = 4 * PROBE_SIZE * sum(self.scenario.classes_per_task)
        return codebooks + probes + 1024 * tasks * (layers + 1)  # + each tensor's header entry

    def storage(self) -> tuple[int, str]:
        # One rule for every owner-map method (PackNet too): its packed file, measured on disk.
        stored = "float32 owned weights and heads" if self.config.quantizer == "none" else "codes and codebooks"
        return self.pack()[1]["packed_bytes"], f"the packed file on disk (entropy-coded owner maps, {stored}, metadata)"

    def state(self) -> tuple[int, str]:
        # The owner maps, codebooks and owned (quantised) weights are all in the packed file, and no
        # float copy of a frozen weight is kept; the probe logits only check the packed file. The free
        # weights are what the next task trains on: re-initialised when it starts (nothing kept),
        # unless free_init="keep" trains on from their values.
        if self.config.free_init != "keep":
            return 0, (
                f"0: owner maps, codebooks and owned weights are in the packed file (model_bytes); the free weights are "
                f"re-initialised when the next task starts (free_init='{self.config.free_init}')"
            )
        free, layers = free_masks(self.model), prunable_layers(self.model)
        return tensor_bytes(raw_weight(layers[name]).detach()[free[name]] for name in self.layer_names), (
            "the float32 free weights (owned by no task), which the next task trains on from their values "
            "(free_init='keep'); owner maps, codebooks and owned weights are in the packed file (model_bytes)"
        )

    def method_results(self) -> dict[str, Any]:
        owners = owner_maps(self.model)
        total_weights = sum(o.numel() for o in owners.values())
        owned = [r["owned_weights"] for r in self.per_task]
        bits = [{name: r["layer_bits"][name] for name in self.layer_names} for r in self.per_task]
        ledger = dict(self.pack()[1]) if self.per_task else {}
        sizes = {key: ledger.pop(key, None) for key in ("packed_bytes", "entropy_bound_bytes")}
        ledger.pop("dense_float32_bytes", None)  # a key of every method's results
        return {
            "capacity_used": capacity_used(self.model),
            "bit_weighted_capacity": metrics.bit_weighted_capacity(owned, bits, total_weights),
            "bit_widths": [r["bits"] for r in self.per_task],
            **sizes,
            "packed_file": PACKED_FILE if self.per_task else None,
            "bits_ledger": ledger,
        }


# A task's steps, in order (``AdaQPacknet.learn_task``); ``TaskStep.stage`` is the last one done.
TASK_STEPS = ("start_task", "search_sparsity", "quantize_task", "freeze_task")


@dataclass
class TaskStep:
    """A task between ``start_task`` and ``freeze_task``: what each step hands to the next, and
    ``stage``, the last step done (``TASK_STEPS``)."""

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
    stage: str = "start_task"


def _check_body_parameters(model: nn.Module) -> None:
    # A body parameter outside the masked layers (a bias, an affine BatchNorm) would be shared and
    # changed by every task: forgetting. The networks are built without any; refuse one that has.
    masked = {id(raw_weight(layer)) for layer in prunable_layers(model).values()}
    extra = [name for name, p in model.body.named_parameters() if id(p) not in masked]
    if extra:
        raise ValueError(f"body parameters outside the owner-mapped layers would be shared by all tasks: {extra}")

