"""The classic continual-learning strategies through avalanche-lib, on the package's data and networks.

Naive fine-tuning, EWC, SI, LwF, Replay, GEM and A-GEM come from avalanche-lib (pinned), and so does
``avalanche_packnet``, avalanche's own PackNet, the cross-check of the package's PackNet mode. This
module is the thin adapter: each of the scenario's tasks becomes an avalanche experience with its task label
(task-incremental), the package's ``MultiHeadNet`` is wrapped as a ``MultiTaskModule`` (batches that
mix tasks, from replay buffers and GEM memories, are split by task), and after every experience the
accuracy of every seen task is re-measured by the package's own ``evaluate``, as for every method.

Every strategy but ``avalanche_packnet`` trains with the package's validation schedule
(``_validation_schedule``: lr reset each task and reduced on validation plateaus, the best validation
epoch kept), and its results hold the final network's validation accuracy, by which notebooks 10-13
choose its key hyperparameter (``tuning.CLASSIC_GRID``).

With ``heads="single"`` a classic strategy is trained class-incrementally instead: one head over
every class, global labels, no task labels, and its accuracy matrix measured over all the classes
seen so far (``task_inference``).

avalanche reads one sample at a time, so each task's training images are transformed once into the
float tensors the package's own loader would make. avalanche-lib 0.6.0's SI is mended on the CPU
(``_record_si_weights_by_copy``).

Avalanche keeps a strategy's state (buffers, importances, the LwF teacher) outside the network, where
a checkpoint cannot reach it: an interrupted run of a classic strategy starts over. Its size is
measured from the plugins' tensors at the end of every task (``plugin_state_bytes``) and kept in the
task's report (``state_bytes``), so that a finished run loaded again still reports it.
"""

from __future__ import annotations

import collections
import os
import time
import warnings
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import methods
from .config import Config
from .continual import ContinualLearner, float32_bytes, tensor_bytes
from .data import Scenario
from .models import MultiHeadNet, build_model
from .packing import layout_bytes
from .task_inference import ONE_HEAD, class_offsets, evaluate_step
from .training import EpochKeeper, evaluate


def _avalanche():
    """Import avalanche-lib lazily: it is an optional extra, and its import is slow and noisy."""
    os.environ.setdefault("WANDB_MODE", "disabled")  # avalanche imports wandb; never let it log
    try:
        import avalanche  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "the classic strategies need avalanche-lib: pip install -e \".[baselines]\" (make install does)"
        ) from error
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_classification_dataset,
        _make_taskaware_tensor_classification_dataset,
    )
    from avalanche.models.dynamic_modules import MultiTaskModule
    from avalanche.core import SupervisedPlugin
    from avalanche.models.packnet import PackNetModel, PackNetPlugin, WeightAndBiasPackNetModule
    from avalanche.training import plugins, supervised

    _record_si_weights_by_copy(plugins.SynapticIntelligencePlugin)
    return {
        "benchmark_from_datasets": benchmark_from_datasets,
        "with_classes_timeline": with_classes_timeline,
        "with_task_labels": with_task_labels,
        "task_dataset": _make_taskaware_classification_dataset,
        "tensor_task_dataset": _make_taskaware_tensor_classification_dataset,
        "MultiTaskModule": MultiTaskModule,
        "PackNetModel": PackNetModel,
        "PackNetPlugin": PackNetPlugin,
        "PackNetLayer": WeightAndBiasPackNetModule,
        "plugins": plugins,
        "supervised": supervised,
        "SupervisedPlugin": SupervisedPlugin,
    }


def _record_si_weights_by_copy(plugin: type) -> None:
    """Mend avalanche-lib 0.6.0's SI on the CPU: it records the weights before and after each step
    as ``param.detach().cpu().flatten()``, which on the CPU is a view of the live parameter, not a
    copy. Both records then follow the weights, every step's change reads 0, the importances stay 0
    and SI trains exactly as naive fine-tuning. (On a GPU ``.cpu()`` copies, which is the intent.)
    The mend replaces the method on avalanche's class, for the whole process and every device: a
    copy is what the GPU path made already."""

    @torch.no_grad()
    def extract_weights(model: nn.Module, target: dict, excluded_parameters: set[str]) -> None:
        for name, param in plugin.allowed_parameters(model, excluded_parameters):
            target[name].data = param.detach().flatten().to("cpu", copy=True)

    plugin.extract_weights = staticmethod(extract_weights)


def _validation_schedule(learner: "ClassicStrategy", base: type):
    """An avalanche plugin that gives a classic strategy the package's validation schedule (``fit``):
    each task starts at the configured lr, the lr is multiplied by ``lr_factor`` after ``lr_patience``
    epochs without a gain in the task's validation accuracy, early stopping when configured, and the
    weights of the epoch with the best validation accuracy are put back when the task ends. It must
    come first among the strategy's plugins: EWC's importances, SI's, LwF's teacher and the replay
    and GEM memories are then taken from the kept weights (avalanche appends its own plugins after
    those it is given)."""
    cfg = learner.config

    class ValidationSchedule(base):
        def before_training_exp(self, strategy, *args, **kwargs) -> None:
            # avalanche keeps one optimizer, its lr and Adam's moments for every task: start each
            # task as fit does, a fresh Adam at the configured lr.
            strategy.optimizer.state = collections.defaultdict(dict)
            for group in strategy.optimizer.param_groups:
                group["lr"] = cfg.lr
            self.keeper = EpochKeeper(strategy.optimizer, cfg.lr_factor, cfg.lr_patience, cfg.early_stop_patience,
                                      lambda: {k: v.detach().clone() for k, v in learner.model.state_dict().items()})
            self.index = strategy.experience.current_experience
            self.history = []

        def after_training_epoch(self, strategy, *args, **kwargs) -> None:
            accuracy = learner.validation_accuracy(self.index, seen_tasks=self.index + 1)
            strategy.model.train()
            stop = self.keeper.end_epoch(accuracy)
            self.history.append({"epoch": len(self.history) + 1, "val_accuracy": accuracy, "lr": self.keeper.lr})
            if stop:
                strategy.stop_training()

        def after_training_exp(self, strategy, *args, **kwargs) -> None:
            learner.model.load_state_dict(self.keeper.best_state)

    return ValidationSchedule()


def _wrapper(net: MultiHeadNet, classes: int, multi_task_module: type) -> nn.Module:
    """``net`` as avalanche's ``MultiTaskModule``: ``forward(x, task_labels)``."""

    class Wrapped(multi_task_module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.max_class_label = classes  # width of mixed-task outputs (avalanche sets it late)

        def adaptation(self, experience) -> None:
            # The heads exist already: only record the task, which LwF's distillation reads.
            if self.training:
                self.known_train_tasks_labels = self.known_train_tasks_labels | set(experience.task_labels)

        def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
            return self.net(x, int(task_label))

        def forward_all_tasks(self, x: Tensor) -> dict[int, Tensor]:
            # LwF asks for every known head: one body pass, not one per task.
            features = self.net.body(x)
            return {task: self.net.heads[task](features) for task in self.known_train_tasks_labels}

        def forward(self, x: Tensor, task_labels) -> Tensor:
            if task_labels is None:
                return self.forward_all_tasks(x)
            if isinstance(task_labels, int):
                return self.net(x, task_labels)
            tasks = torch.unique(task_labels).tolist()
            if len(tasks) == 1:
                return self.net(x, tasks[0])
            # A mixed batch (replay, GEM/A-GEM memories): the body sees the whole batch, as in
            # joint training (batch-statistics BatchNorm would fail on a task with one sample),
            # and each sample gets its own task's head.
            features = self.net.body(x)
            out = x.new_zeros(x.shape[0], self.max_class_label)
            for task in tasks:
                rows = task_labels == task
                logits = self.net.heads[task](features[rows])
                out[rows, : logits.shape[1]] = logits
            return out

    return Wrapped()


class SingleHead(nn.Module):
    """``net``'s one head over every class, as avalanche's plain (task-unaware) model: ``forward(x)``."""

    def __init__(self, net: MultiHeadNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, 0)


class BatchStatNorm(nn.Module):
    """BatchNorm without affine parameters or running statistics, as a stateless module: the same
    function as the bodies' ``BatchNorm(affine=False, track_running_stats=False)``, which avalanche's
    PackNet refuses (it rejects any module with a ``running_mean`` attribute, even ``None``)."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, None, None, training=True, eps=self.eps)


def _stateless_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if child.affine or child.track_running_stats:
                raise ValueError(f"{name}: only BatchNorm without affine parameters or running statistics can be swapped")
            setattr(module, name, BatchStatNorm(child.eps))
        else:
            _stateless_norms(child)


def _packnet_network(net: MultiHeadNet, avl: dict[str, Any]) -> nn.Module:
    """avalanche's ``PackNetModel`` over ``net``'s body (pruned and owned), with ``net``'s heads
    kept whole and task-private, as the package's PackNet keeps them."""

    class PackNetHeads(avl["PackNetModel"]):
        def __init__(self) -> None:
            _stateless_norms(net.body)
            super().__init__(net.body)  # wraps every Linear / Conv of the body in place
            self.heads = net.heads
            for module in self.modules():
                # avalanche 0.6.0 marks bias-free layers as having a bias and then fails to freeze it.
                if isinstance(module, avl["PackNetLayer"]):
                    module.has_bias = module.wrappee.bias is not None

        @property
        def body(self) -> nn.Module:
            return self.wrappee

        def forward(self, x: Tensor, task_labels) -> Tensor:
            tasks = torch.as_tensor(task_labels).flatten().unique().tolist()
            if len(tasks) != 1:
                raise ValueError(f"a PackNet batch must hold one task, got tasks {tasks}")
            self.activate_task(min(tasks[0], self.task_count))
            return self.heads[tasks[0]](self.wrappee(x))

    return PackNetHeads()


def avalanche_owner_maps(network: nn.Module) -> dict[str, Tensor]:
    """Owner maps of an avalanche PackNet network in the package's convention (0 = free, t = task t).

    avalanche stores, per layer, ``task_index`` = k for weights owned by task k (0-based) and the
    task count for free ones.
    """
    maps = {}
    for name, module in network.body.named_modules():
        if hasattr(module, "task_index") and hasattr(module, "wrappee"):
            index = module.task_index.long()
            maps[name] = torch.where(index == int(network.task_count), 0, index + 1).to(torch.uint8)
    return maps


# Avalanche plugins that hold nothing a later task reads: the validation schedule's best-epoch weights
# are replaced before they are read again, the evaluation plugins keep no tensors, PackNet's plugin
# only its schedule (its owner maps are buffers of the network).
STATELESS_PLUGINS = ("ValidationSchedule", "EvaluationPlugin", "PeriodicEval", "Clock", "PackNetPlugin")

# How each strategy's ``state_bytes`` is counted (``plugin_state_bytes``), under continual.STATE_BYTES_RULE.
CLASSIC_STATE_DEFINITIONS = {
    "naive": "0: naive fine-tuning keeps nothing but the network",
    "ewc": (
        "EWC (mode 'separate'): for every learned task, a float32 copy of every parameter of the network (every head "
        "included, as avalanche saves them) and its float32 Fisher importance (EWCPlugin.saved_params, .importances)"
    ),
    "si": (
        "SI: float32 reference weights, importances and accumulated path integral of every regularised parameter "
        "(SynapticIntelligencePlugin.ewc_data, .syn_data['cum_trajectory']); its per-step copies (old_theta, "
        "new_theta, grad, trajectory) are overwritten before they are read"
    ),
    "lwf": "LwF: the teacher, a copy of the network after the last task (float32 parameters and buffers, every head)",
    "replay": (
        "Replay: the rehearsal buffer's samples as held, each a float32 input + int64 label + int64 task label "
        "(ReplayPlugin.storage_policy.buffer; the reservoir priorities decide nothing once a task's group is stored)"
    ),
    "gem": (
        "GEM: every task's memory, float32 inputs + int64 labels + int64 task labels (GEMPlugin.memory_x, "
        ".memory_y, .memory_tid); its gradient matrix G is recomputed at every step"
    ),
    "agem": (
        "A-GEM: every task's buffer samples as held, each a float32 input + int64 label + int64 task label "
        "(AGEMPlugin.buffers); its reference gradient is recomputed at every step"
    ),
    "avalanche_packnet": (
        "0: the free weights the next task trains are in model_bytes' float32 body, the owner map is model_bytes' "
        "uint8 map, the visible and unfrozen masks are recomputed from it (activate_task) and the optimizer is "
        "made anew each task"
    ),
}


def _dataset_bytes(dataset) -> int:
    """Bytes of an avalanche dataset's samples as the strategy loads them: every field of its
    collated batches (float32 inputs, int64 labels, int64 task labels)."""
    if len(dataset) == 0:
        return 0
    # A generator of its own: counting draws nothing from the global one.
    batches = torch.utils.data.DataLoader(dataset, batch_size=4096, collate_fn=dataset.collate_fn, generator=torch.Generator())
    return sum(tensor_bytes(batch) for batch in batches)


def plugin_state_bytes(plugin) -> int:
    """Bytes an avalanche plugin holds after a task that a later task's training reads
    (``CLASSIC_STATE_DEFINITIONS``): its memories of past samples, its per-parameter regularisation
    data, or its teacher network. A plugin without a rule here is an error, not a silent 0."""
    name = type(plugin).__name__
    if name == "ReplayPlugin":
        return _dataset_bytes(plugin.storage_policy.buffer)
    if name == "AGEMPlugin":
        return sum(_dataset_bytes(buffer) for buffer in plugin.buffers)
    if name == "GEMPlugin":
        return tensor_bytes([*plugin.memory_x.values(), *plugin.memory_y.values(), *plugin.memory_tid.values()])
    if name == "EWCPlugin":
        per_task = [*plugin.saved_params.values(), *plugin.importances.values()]
        return tensor_bytes(data.data for params in per_task for data in params.values())
    if name == "SynapticIntelligencePlugin":
        kept = [*plugin.ewc_data, plugin.syn_data["cum_trajectory"]]
        return tensor_bytes(data.data for params in kept for data in params.values())
    if name == "LwFPlugin":
        teacher = plugin.lwf.prev_model
        return 0 if teacher is None else tensor_bytes([*teacher.parameters(), *teacher.buffers()])
    if name in STATELESS_PLUGINS or getattr(plugin, "keeps_no_tensors", False):  # the latter: a plugin of one's own that says so
        return 0
    raise ValueError(f"avalanche plugin {name} has no state_bytes rule (classic.plugin_state_bytes): add one")


# The float copies of one scenario's training images, by task (``_train_inputs``), shared by every
# learner on that scenario in this process: a batch of runs (``runs.run_configs`` gives its
# runs one Scenario) makes them once, not once per run (~6 s and 1.7 GB for permuted Fashion-MNIST's
# 10 tasks). Keyed by the Scenario object itself, held weakly: only the last scenario's copies are
# kept, they go when it goes, and a learner given another Scenario (even one built from equal
# settings) never reads copies that are not of its own data.
_TRAIN_INPUTS: dict[str, Any] = {}


def _forget_train_inputs(ref: weakref.ref) -> None:
    if _TRAIN_INPUTS.get("scenario") is ref:
        _TRAIN_INPUTS.clear()


def _train_inputs(scenario: Scenario, index: int) -> Tensor:
    """Task ``index``'s training images of ``scenario`` as the float tensors the package's own
    loader makes (avalanche reads one sample at a time, so the package's per-batch transform would
    run once per sample: three quarters of naive's epoch time). Made once per scenario and task."""
    ref = _TRAIN_INPUTS.get("scenario")
    if ref is None or ref() is not scenario:
        _TRAIN_INPUTS.clear()  # the previous scenario's copies first: one scenario's at a time
        _TRAIN_INPUTS.update(scenario=weakref.ref(scenario, _forget_train_inputs), inputs={})
    inputs = _TRAIN_INPUTS["inputs"]
    if index not in inputs:
        dataset = scenario.tasks[index].train
        inputs[index] = torch.cat([dataset.transform(chunk.float().div_(255.0)) for chunk in dataset.images.split(4096)])
    return inputs[index]


def _si(cfg: Config, common: dict[str, Any], avl: dict[str, Any]):
    # Through the plugin: the strategy cannot exclude the per-task heads, whose gradients are None
    # while another task trains (they are task-private anyway). A single head is shared by every
    # task: it is regularised like the body.
    excluded = [] if cfg.heads == "single" else ["net.heads"]
    common["plugins"].append(avl["plugins"].SynapticIntelligencePlugin(cfg.si_lambda, eps=cfg.si_eps, excluded_parameters=excluded))
    return avl["supervised"].Naive(**common)


# Each classic strategy's avalanche strategy, from its Config fields and the arguments every one
# takes (``ClassicStrategy._strategy_arguments``, the validation schedule first among the plugins).
STRATEGIES: dict[str, Callable[[Config, dict[str, Any], dict[str, Any]], Any]] = {
    "naive": lambda cfg, common, avl: avl["supervised"].Naive(**common),
    "ewc": lambda cfg, common, avl: avl["supervised"].EWC(**common, ewc_lambda=cfg.ewc_lambda, mode="separate"),
    "si": _si,
    "lwf": lambda cfg, common, avl: avl["supervised"].LwF(**common, alpha=cfg.lwf_alpha, temperature=cfg.lwf_temperature),
    "replay": lambda cfg, common, avl: avl["supervised"].Replay(**common, mem_size=cfg.replay_mem_size),
    "gem": lambda cfg, common, avl: avl["supervised"].GEM(
        **common, patterns_per_exp=cfg.gem_patterns_per_exp, memory_strength=cfg.gem_memory_strength),
    "agem": lambda cfg, common, avl: avl["supervised"].AGEM(
        **common, patterns_per_exp=cfg.agem_patterns_per_exp, sample_size=cfg.agem_sample_size),
}


class ClassicStrategy(ContinualLearner):
    """A classic strategy (``methods.CLASSIC_METHODS``) run by avalanche-lib on the package's
    scenario and network, with the package's validation schedule (``_validation_schedule``)."""

    # The strategy's own state (buffers, importances, teacher) is not in the checkpoint.
    resumes_mid_run = False

    def __init__(self, config: Config, scenario: Scenario | None = None) -> None:
        methods.check_learner(self, config)
        self.avl = _avalanche()  # fail before any data is loaded when avalanche-lib is missing
        super().__init__(config, scenario)
        self.wrapped = self.wrap_network()
        self._strategy: Any = None  # built on first use (``strategy``)

    def wrap_network(self) -> nn.Module:
        """The network as avalanche trains it: one head (labels made global) or a MultiTaskModule."""
        if self.config.heads == "single":
            return SingleHead(self.model)
        return _wrapper(self.model, max(self.scenario.classes_per_task), self.avl["MultiTaskModule"])

    def build_network(self) -> MultiHeadNet:
        if self.config.heads == "single":
            return build_model(self.model_name, self.scenario.input_shape, [sum(self.scenario.classes_per_task)])
        return super().build_network()

    @property
    def strategy(self):
        """avalanche's strategy over the scenario's benchmark, built on first use: a finished run
        loaded from its folder never trains, and the benchmark costs the float copies of every task's
        training images and avalanche's class timeline (~8 s a run on permuted Fashion-MNIST)."""
        if self._strategy is None:
            self.benchmark = self._benchmark()
            self._strategy = self._build_strategy()
        return self._strategy

    @property
    def holds_cycles(self) -> bool:
        # avalanche's strategy and plugins refer to each other, and hold the tasks' float copies.
        return self._strategy is not None

    def _benchmark(self):
        avl = self.avl
        single = self.config.heads == "single"
        # One head over every class: task t's labels follow the classes of the tasks before it, and
        # every sample carries task label 0 (no task id to train or test with).
        offsets = class_offsets(self.scenario)

        def labels(index: int, dataset) -> Tensor:
            return dataset.labels + int(offsets[index]) if single else dataset.labels

        def train_experience(index: int):
            # The task's training images transformed once (shared by the learners on this scenario:
            # _train_inputs); avalanche only reads them.
            dataset = self.scenario.tasks[index].train
            inputs = _train_inputs(self.scenario, index)
            return avl["tensor_task_dataset"](inputs, labels(index, dataset), task_labels=0 if single else index)

        def test_experience(index: int):
            # Never read by avalanche (every method is evaluated by the package's own ``evaluate``);
            # the benchmark only needs a test stream of the same length.
            dataset = self.scenario.tasks[index].test
            return avl["task_dataset"](dataset, targets=labels(index, dataset).tolist(), task_labels=0 if single else index)

        tasks = range(self.scenario.num_tasks)
        benchmark = avl["benchmark_from_datasets"](
            train=[train_experience(i) for i in tasks], test=[test_experience(i) for i in tasks]
        )
        return avl["with_classes_timeline"](avl["with_task_labels"](benchmark))

    def _build_strategy(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no loggers specified": on purpose, we evaluate ourselves
            common = self._strategy_arguments()
            self.schedule = _validation_schedule(self, self.avl["SupervisedPlugin"])
            common["plugins"] = [self.schedule]  # first: avalanche appends a strategy's own plugins
            return STRATEGIES[self.config.method](self.config, common, self.avl)

    def _strategy_arguments(self) -> dict[str, Any]:
        """What every avalanche strategy is built with: the network, a fresh Adam, the batch sizes,
        the epochs per task, the device and an evaluator without loggers."""
        cfg = self.config
        return dict(
            model=self.wrapped,
            optimizer=torch.optim.Adam(self.wrapped.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=cfg.batch_size,
            train_epochs=cfg.epochs_per_task,  # avalanche_packnet: pruning after ``epochs`` (AvalanchePackNet)
            eval_mb_size=cfg.eval_batch_size,
            device=self.device,
            evaluator=self.avl["plugins"].EvaluationPlugin(loggers=[]),
        )

    def learn_task(self, index: int) -> dict[str, Any]:
        started = time.perf_counter()
        strategy = self.strategy  # built before the task's seeding, as when it was built with the learner
        self.begin_task(index)  # avalanche draws from the global generators (batch order, buffers)
        task = self.scenario.tasks[index]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # avalanche's own, about itself
            # drop_last: a last batch of one breaks batch-statistics BatchNorm (the package's own
            # training loader drops it too).
            strategy.train(self.benchmark.train_stream[index], num_workers=0, drop_last=True)
        self.model.eval()
        seconds = time.perf_counter() - started
        report = {
            "task": index + 1, "name": task.name, "classes": list(task.classes),
            "epochs_run": self.config.epochs_per_task,
            # Measured now: a finished run loaded again from its checkpoint has no strategy state.
            "state_bytes": sum(plugin_state_bytes(plugin) for plugin in strategy.plugins),
            "timings": {"train_s": seconds, "total_s": seconds},
        }
        report.update(self.schedule_report())
        self.per_task.append(report)
        print(f"task {index + 1} ({self.config.method}): trained in {seconds:.1f}s", flush=True)
        return report

    def schedule_report(self) -> dict[str, Any]:
        """The task's epochs as the validation schedule ran them (its best epoch kept)."""
        history = self.schedule.history
        return {"epochs_run": len(history), "best_epoch": self.schedule.keeper.best_epoch, "val_accuracy": self.schedule.keeper.best, "history": history}

    def validation_accuracy(self, index: int, seen_tasks: int | None = None) -> float:
        """Accuracy (%) of task ``index`` (0-based) on its validation split: with its own head, or,
        with a single head, over the classes of the first ``seen_tasks`` tasks (default: every task
        learned), as the class-incremental test scores (``task_inference.evaluate_step``)."""
        val = self.scenario.tasks[index].val
        if self.config.heads == "single":
            offsets = class_offsets(self.scenario)
            seen = int(offsets[seen_tasks or len(self.per_task)])
            return evaluate(self.model, val, 0, self.config.eval_batch_size, self.device, label_offset=int(offsets[index]), num_classes=seen)
        return evaluate(self.model, val, index, self.config.eval_batch_size, self.device)

    def evaluate_seen(self) -> list[float]:
        if self.config.heads == "single":
            # Class-incremental: every seen task's test samples, scored over all the seen classes.
            return evaluate_step(self, len(self.per_task))[ONE_HEAD]["accuracy_per_task"]
        return super().evaluate_seen()

    def method_results(self) -> dict[str, Any]:
        # The final network on every task's validation split: what a hyperparameter is chosen by
        # (tuning.select_on_validation), as the test accuracy matrix's last row is ACC.
        per_task = [self.validation_accuracy(i) for i in range(len(self.per_task))]
        return {"validation": {"acc_per_task": per_task, "acc": sum(per_task) / len(per_task) if per_task else None}}

    def storage(self) -> tuple[int, str]:
        return float32_bytes(self.model.body, *self.model.heads[: len(self.per_task)]), "one float32 network with every learned head (buffers and regularisation state not counted: state_bytes)"

    def task_report_problem(self, report: dict[str, Any], index: int) -> str | None:
        # ``state`` reports the last task's state_bytes, measured when it was learned.
        if type(report.get("state_bytes")) is not int or report["state_bytes"] < 0:
            return "'state_bytes' is not a count of bytes"
        return super().task_report_problem(report, index)

    def state(self) -> tuple[int, str]:
        # Measured at the end of the last task (learn_task), from the strategy's plugins.
        return int(self.per_task[-1]["state_bytes"]), CLASSIC_STATE_DEFINITIONS[self.config.method]


class AvalanchePackNet(ClassicStrategy):
    """avalanche-lib's own PackNet (``method="avalanche_packnet"``), the cross-check of the package's
    PackNet: the same schedule (``epochs``, prune, ``finetune_epochs``) and prune ratios, avalanche's
    owner bookkeeping. It trains without the validation schedule (avalanche's plugin owns the epochs)."""

    def wrap_network(self) -> nn.Module:
        self.model = _packnet_network(self.model, self.avl).to(self.device)
        return self.model

    def _build_strategy(self):
        cfg = self.config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no loggers specified"
            # Through Naive: avalanche's PackNet strategy drops the plugins it is given. Pruning
            # after ``epochs``, then ``finetune_epochs`` more: the package's PackNet schedule.
            packnet = self.avl["PackNetPlugin"](
                post_prune_epochs=cfg.finetune_epochs,
                prune_proportion=[cfg.prune_ratio(i) for i in range(self.scenario.num_tasks)],
            )
            return self.avl["supervised"].Naive(**self._strategy_arguments(), plugins=[packnet])

    def schedule_report(self) -> dict[str, Any]:
        return {}  # epochs_run as configured: avalanche's plugin runs every epoch

    def layer_sizes(self) -> dict[str, int]:
        return {name: m.numel() for name, m in avalanche_owner_maps(self.model).items()}  # wrapper names

    def method_results(self) -> dict[str, Any]:
        maps = avalanche_owner_maps(self.model)
        owned = {name: int((m != 0).sum()) for name, m in maps.items()}
        total = sum(m.numel() for m in maps.values())
        return {
            "capacity_used": {**{n: owned[n] / maps[n].numel() for n in maps}, "total": sum(owned.values()) / total},
            "owned_weights": [{n: int((m == t + 1).sum()) for n, m in maps.items()} for t in range(len(self.per_task))],
        }

    def storage(self) -> tuple[int, str]:
        heads = [h.weight.numel() + h.bias.numel() for h in self.model.heads[: len(self.per_task)]]
        body = sum(m.numel() for m in avalanche_owner_maps(self.model).values())
        return layout_bytes(body, heads)["packnet_raw"], "PackNet's own layout: float32 body weights + uint8 owner map + float32 heads"
