"""Class-incremental evaluation: no task id at test time.

A sub-network method (Ada-QPacknet, PackNet, WSN) needs the task id to choose its sub-network. Here
it infers it: every learned task's sub-network runs on the input, the task that claims it most
strongly wins (``task_scores``: lowest predictive entropy, highest maximum softmax, energy,
entropy after per-head temperature calibration, or SupSup's one-shot gradient), and the predicted
class is that task's prediction. Two protocols: per sample (each test sample's task inferred
alone, in batches that mix the tasks) and per batch (test batches of B samples of one task, the
task inferred once per batch: an assumption about the test stream that some papers make; every
table row says which). A sample counts as correct only when both the task and the class
within it are right. A network trained with one head over all classes (a classic strategy with
``heads="single"``) scores every class seen so far in one pass instead.

Two choices keep the numbers honest:

- Per sample, test batches mix the seen tasks' samples in a seeded random order. The networks'
  batch-statistics BatchNorm would otherwise normalise each batch over one task's samples and leak
  its id. (Per batch, the batch is one task's by the protocol's own assumption.)
- The task-given accuracy is measured on the same batches, so the class-incremental accuracy can
  never exceed it.

Sub-network methods never change a frozen task, so the final network restricted to its first k
sub-networks is exactly the network that existed after task k: row k of the class-incremental
accuracy matrix is measured from the final network with k candidate tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import methods, metrics
from .errors import ConfigError

if TYPE_CHECKING:
    from .continual import ContinualLearner
    from .data import Scenario

CRITERIA = ("entropy", "max_softmax", "energy", "calibrated_entropy", "mahalanobis", "supsup", "infomax")
# Criteria that score a whole test batch assumed to share its task: only "<criterion>@<B>".
BATCH_ONLY = ("infomax",)
ONE_HEAD = "one_head"  # the "criterion" of a single-head network: its argmax over seen classes
PER_SAMPLE, PER_BATCH = "per_sample", "per_batch"
# Temperatures tried when a head is calibrated on its task's validation split (log-spaced, >= 1):
# a head that classifies its own validation split perfectly would otherwise be sharpened without
# bound (its likelihood keeps rising as T -> 0) and then claim every sample of every task.
TEMPERATURES = torch.logspace(0, 2, 81, dtype=torch.float64)


def parse_inference(name: str) -> tuple[str, int | None]:
    """``"entropy"`` -> ("entropy", None): per sample; ``"supsup@16"`` -> ("supsup", 16): test
    batches of 16 samples of one task, the task inferred once per batch."""
    criterion, _, size = name.partition("@")
    if criterion not in CRITERIA:
        raise ConfigError(f"inference {name!r}: unknown criterion {criterion!r}; valid choices: {', '.join(CRITERIA)} (per sample), or <criterion>@<batch size>")
    if not size:
        if criterion in BATCH_ONLY:
            raise ConfigError(f"inference {name!r}: {criterion} scores a batch of one task's samples; use {criterion}@<batch size>")
        return criterion, None
    if not size.isdigit() or int(size) < 2:
        raise ConfigError(f"inference {name!r}: the batch size after '@' must be a whole number >= 2 (a batch of one is per sample)")
    return criterion, int(size)


def _entropy(logits: Tensor) -> Tensor:
    log_p = torch.log_softmax(logits.double(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def _padded(logits_per_task: Sequence[Tensor]) -> Tensor:
    # (tasks, samples, widest head); a narrower head's missing classes get logit 0.
    width = max(z.shape[1] for z in logits_per_task)
    return torch.stack([torch.nn.functional.pad(z.double(), (0, width - z.shape[1])) for z in logits_per_task])


def supsup_scores(logits_per_task: Sequence[Tensor]) -> Tensor:
    """(N, tasks) SupSup's one-shot task score (Wortsman et al. 2020, "One-Shot" inference): the
    outputs superposed with weights alpha = 1/k, ``z = sum_t alpha_t z_t``, and minus the gradient
    of the output entropy H(softmax(z)) with respect to each alpha_t (one backward pass). The task
    whose output lowers the entropy fastest scores highest. Superposed here over the sub-networks'
    outputs (their heads differ), not over their masks."""
    stacked = _padded(logits_per_task)
    alpha = torch.full(stacked.shape[:2], 1.0 / len(logits_per_task), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        mixed = (alpha[:, :, None] * stacked).sum(0)
        (gradient,) = torch.autograd.grad(_entropy(mixed).sum(), alpha)  # samples are independent
    return -gradient.T


@dataclass(frozen=True)
class Calibration:
    """What each learned task keeps from its own validation split for task inference (computed
    when needed by ``calibrate``): its head's temperature, and the class means and the inverse of
    the tied covariance of its sub-network's features (the input of its head)."""

    temperatures: list[float] | None = None
    gaussians: list[tuple[Tensor, Tensor]] | None = None  # (class means (C, d), precision (d, d))


def mahalanobis_scores(features_per_task: Sequence[Tensor], gaussians: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """(N, tasks) minus the Mahalanobis distance of each task's features to the nearest of its
    class means, under its tied covariance (Lee et al. 2018): a sample far from every class a task
    saw in validation is unlikely to be that task's."""
    columns = []
    for features, (means, precision) in zip(features_per_task, gaussians):
        # (f - m)' P (f - m) = f'Pf - 2 f'Pm + m'Pm, without an (N, classes, d) tensor.
        projected = features.double() @ precision
        distance = (projected * features.double()).sum(1, keepdim=True) - 2 * projected @ means.T + ((means @ precision) * means).sum(1)
        columns.append(-distance.min(1).values)
    return torch.stack(columns, dim=1)


def task_scores(
    logits_per_task: Sequence[Tensor], criterion: str, calibration: Calibration | None = None,
    features_per_task: Sequence[Tensor] | None = None,
) -> Tensor:
    """(N, tasks) how strongly each task's sub-network claims each sample: higher wins.

    entropy: minus the predictive entropy; max_softmax: the highest log probability; energy:
    log-sum-exp of the logits (minus the free energy, Liu et al. 2020); calibrated_entropy: minus the
    entropy of the logits divided by the head's temperature (``fit_temperature``), over log(head
    width), so heads of any width and confidence compare; mahalanobis: ``mahalanobis_scores`` of the
    sub-networks' features; supsup: ``supsup_scores``. (infomax scores batches: ``pick_task``.)
    """
    if criterion not in CRITERIA or criterion in BATCH_ONLY:
        raise ConfigError(f"unknown per-sample criterion {criterion!r}; valid choices: {', '.join(c for c in CRITERIA if c not in BATCH_ONLY)}")
    if not logits_per_task:
        raise ValueError("task inference needs the logits of at least one task")
    if criterion == "supsup":
        return supsup_scores(logits_per_task)
    if criterion == "mahalanobis":
        if calibration is None or calibration.gaussians is None or features_per_task is None:
            raise ValueError("mahalanobis needs each task's features and its validation Gaussians (calibrate)")
        return mahalanobis_scores(features_per_task, calibration.gaussians)
    if criterion == "calibrated_entropy":
        if calibration is None or calibration.temperatures is None:
            raise ValueError("calibrated_entropy needs one temperature per task (calibrate: fit_temperature on each validation split)")
        columns = [
            -_entropy(z.double() / t) / math.log(max(z.shape[1], 2))
            for z, t in zip(logits_per_task, calibration.temperatures)
        ]
    elif criterion == "entropy":
        columns = [-_entropy(z) for z in logits_per_task]
    elif criterion == "max_softmax":
        columns = [torch.log_softmax(z.double(), dim=1).max(1).values for z in logits_per_task]
    else:
        columns = [torch.logsumexp(z.double(), dim=1) for z in logits_per_task]
    return torch.stack(columns, dim=1)


def infomax_scores(logits_per_task: Sequence[Tensor], groups: Tensor) -> Tensor:
    """(groups, tasks) for test batches assumed to come from one task: the mutual information of
    each task's predictions over the batch, H(mean p) - mean H(p). The right head is confident on
    every sample and spreads the batch over its classes; a wrong head, confident too, tends to put
    the whole batch in one of its classes."""
    count = torch.bincount(groups).double()
    columns = []
    for logits in logits_per_task:
        log_p = torch.log_softmax(logits.double(), dim=1)
        p = log_p.exp()
        mean_p = torch.zeros(len(count), p.shape[1], dtype=torch.float64).index_add_(0, groups, p) / count[:, None]
        mean_entropy = torch.zeros(len(count), dtype=torch.float64).index_add_(0, groups, -(p * log_p).sum(1)) / count
        columns.append(_entropy(mean_p.clamp_min(1e-300).log()) - mean_entropy)
    return torch.stack(columns, dim=1)


def score_table(
    logits_per_task: Sequence[Tensor], criterion: str = "entropy", calibration: Calibration | None = None,
    groups: Tensor | None = None, features_per_task: Sequence[Tensor] | None = None,
) -> Tensor:
    """(N, tasks) each sample's score for each task under ``criterion`` (``task_scores``).

    ``groups`` (N,) (the per-batch protocol): samples with the same group id (0, 1, ...) are
    assumed to share a task; each gets its group's total score (infomax: the group's score).
    """
    if criterion in BATCH_ONLY:
        if groups is None:
            raise ValueError(f"{criterion} scores a batch of one task's samples: it needs groups (the per-batch protocol)")
        return infomax_scores(logits_per_task, groups)[groups]
    scores = task_scores(logits_per_task, criterion, calibration, features_per_task)
    if groups is None:
        return scores
    sums = torch.zeros(int(groups.max()) + 1, scores.shape[1], dtype=scores.dtype).index_add_(0, groups, scores)
    return sums[groups]  # a group's sum ranks its tasks as its mean does


def pick_task(
    logits_per_task: Sequence[Tensor], criterion: str = "entropy", calibration: Calibration | None = None,
    groups: Tensor | None = None, features_per_task: Sequence[Tensor] | None = None,
) -> Tensor:
    """(N,) the inferred task of each sample: the highest-scoring one of ``score_table`` (the first
    one on a tie); with ``groups``, every sample of a group gets the group's task."""
    return score_table(logits_per_task, criterion, calibration, groups, features_per_task).argmax(1)


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature (of ``TEMPERATURES``) whose softmax(logits / T) has the lowest mean negative
    log-likelihood of ``labels``: temperature scaling (Guo et al. 2017), a grid search so that it is
    deterministic."""
    log_p = torch.log_softmax(logits.double()[None] / TEMPERATURES[:, None, None], dim=2)
    nll = -log_p.gather(2, labels.view(1, -1, 1).expand(len(TEMPERATURES), -1, 1)).mean((1, 2))
    return float(TEMPERATURES[int(nll.argmin())])


def class_gaussian(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Class means (C, d) and the pseudo-inverse of the tied (pooled within-class) covariance.

    With fewer validation samples than feature dimensions (a conv net's wide features) the
    covariance is singular and directions outside the validation span count as zero distance; on
    batch-statistics BatchNorm networks the validation features come from single-task batches of
    ``eval_batch_size``, not from the protocol's batches."""
    features = features.double()
    means = torch.stack([features[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    centred = features - means[labels]
    return means, torch.linalg.pinv(centred.T @ centred / len(features), hermitian=True)


def calibrate(learner: ContinualLearner, criteria: Sequence[str]) -> Calibration:
    """What ``criteria`` need from each learned task's validation split, with the task's own
    sub-network and head: data the task had when it was learned, so no later task's data is used."""
    need_temperature, need_gaussian = "calibrated_entropy" in criteria, "mahalanobis" in criteria
    if not (need_temperature or need_gaussian):
        return Calibration()
    temperatures, gaussians = [], []
    for index in range(len(learner.per_task)):
        val = learner.scenario.tasks[index].val
        x, y = val.__getitems__(range(len(val)))
        logits, features = _outputs(learner, list(x.split(learner.config.eval_batch_size)), index)
        temperatures.append(fit_temperature(logits, y))
        gaussians.append(class_gaussian(features, y))
    return Calibration(temperatures if need_temperature else None, gaussians if need_gaussian else None)


def _outputs(learner: ContinualLearner, batches: Sequence[Tensor], index: int) -> tuple[Tensor, Tensor]:
    """Task ``index``'s logits and features (the input of its head) over ``batches``, on the CPU."""
    captured: list[Tensor] = []
    head = learner.model.heads[index]
    handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().cpu()))
    try:
        logits = _logits(learner, batches, index)
    finally:
        handle.remove()
    return logits, torch.cat(captured)


def _logits(learner: ContinualLearner, batches: Sequence[Tensor], index: int) -> Tensor:
    """Task ``index``'s logits over ``batches`` (its view is set once), on the CPU."""
    return torch.cat([learner.logits(xb, index, view_set=i > 0) for i, xb in enumerate(batches)])


def batch_dependent(model: torch.nn.Module) -> bool:
    """Whether a sample's output depends on the rest of its batch (BatchNorm with batch statistics)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def mixed_test_set(scenario: Scenario, seen: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The test samples of the first ``seen`` tasks, shuffled together: (inputs, task, label)."""
    inputs, tasks, labels = [], [], []
    for index, task in enumerate(scenario.tasks[:seen]):
        x, y = task.test.__getitems__(range(len(task.test)))
        inputs.append(x)
        labels.append(y)
        tasks.append(torch.full_like(y, index))
    order = torch.randperm(sum(len(y) for y in labels), generator=torch.Generator().manual_seed(seed))
    return torch.cat(inputs)[order], torch.cat(tasks)[order], torch.cat(labels)[order]


def single_task_batches(scenario: Scenario, seen: int, seed: int, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-batch protocol's test set: each of the first ``seen`` tasks' test samples in a seeded
    order, cut into batches of ``size`` samples of that task alone (its last one smaller; a last
    single sample joins the batch before it, since batch-statistics BatchNorm cannot normalise one
    sample): (inputs, task, label, batch id)."""
    inputs, tasks, labels, groups, first = [], [], [], [], 0
    for index, task in enumerate(scenario.tasks[:seen]):
        order = torch.randperm(len(task.test), generator=torch.Generator().manual_seed(seed * 1000 + index))
        x, y = task.test.__getitems__(order.tolist())
        inputs.append(x)
        labels.append(y)
        tasks.append(torch.full_like(y, index))
        ids = torch.arange(len(y)) // size
        if len(y) > size and len(y) % size == 1:
            ids[-1] -= 1
        groups.append(first + ids)
        first = int(groups[-1][-1]) + 1
    return torch.cat(inputs), torch.cat(tasks), torch.cat(labels), torch.cat(groups)


def class_offsets(scenario: Scenario) -> Tensor:
    """Index of each task's first class in a single head over every class (tasks in order)."""
    sizes = torch.tensor((0, *scenario.classes_per_task))
    return sizes.cumsum(0)


@dataclass
class TestOutputs:
    """What the sub-networks of the first ``seen`` tasks output on those tasks' test samples under
    one protocol: ``logits[t]`` (and ``features[t]``, the input of head t) for every sample."""

    seen: int
    true_task: Tensor
    label: Tensor
    groups: Tensor | None  # per batch: the test batch of each sample; per sample: None
    logits: list[Tensor]
    features: list[Tensor] | None
    seconds_per_batch: float
    protocol: str
    batch_size: int

    def restricted(self, seen: int) -> "TestOutputs":
        """The same outputs for the first ``seen`` tasks only: their samples and sub-networks.
        Exact for a network whose outputs do not depend on the batch (``batch_dependent``)."""
        rows = self.true_task < seen
        features = None if self.features is None else [f[rows] for f in self.features[:seen]]
        groups = None
        if self.groups is not None:
            groups = torch.unique(self.groups[rows], return_inverse=True)[1]  # ids 0, 1, ... again
        return TestOutputs(
            seen, self.true_task[rows], self.label[rows], groups, [z[rows] for z in self.logits[:seen]], features,
            self.seconds_per_batch, self.protocol, self.batch_size,
        )


@torch.no_grad()
def test_outputs(learner: ContinualLearner, seen: int, batch: int | None = None, features: bool = False) -> TestOutputs:
    """Run the sub-networks of the first ``seen`` tasks on their test samples under a protocol.

    Per sample (``batch=None``): test batches of ``eval_batch_size`` mix the seen tasks in an order
    shuffled by the run's seed. Per batch (``batch=B``): test batches of B samples of one task
    (``single_task_batches``); a network whose outputs do not depend on the batch computes them in
    batches of ``eval_batch_size`` and the grouping is applied afterwards (same outputs, faster).
    """
    if not 1 <= seen <= len(learner.per_task):
        raise ValueError(f"seen={seen}: the learner has learned {len(learner.per_task)} task(s)")
    if batch is None:
        size, groups = learner.config.eval_batch_size, None
        x, true_task, label = mixed_test_set(learner.scenario, seen, learner.config.seed)
        bounds = list(range(0, len(label), size)) + [len(label)]
    else:
        size = batch
        x, true_task, label, groups = single_task_batches(learner.scenario, seen, learner.config.seed, batch)
        if batch_dependent(learner.model):  # the protocol's batches are what the network sees
            bounds = [0, *(torch.nonzero(groups[1:] != groups[:-1]).flatten() + 1).tolist(), len(label)]
        else:
            bounds = list(range(0, len(label), learner.config.eval_batch_size)) + [len(label)]
    batches = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    started = time.perf_counter()
    if learner.config.heads == "single":
        if batch is not None:
            raise ValueError("a single-head network infers no task: its evaluation is per sample only")
        logits, found = [_logits(learner, batches, 0)], None
    elif features:
        logits, found = map(list, zip(*(_outputs(learner, batches, t) for t in range(seen))))
    else:
        logits, found = [_logits(learner, batches, t) for t in range(seen)], None
    # Per protocol batch: per batch of B samples of one task even where they ran in larger batches.
    seconds = (time.perf_counter() - started) / (len(batches) if groups is None else int(groups.max()) + 1)
    return TestOutputs(seen, true_task, label, groups, logits, found, seconds, PER_SAMPLE if batch is None else PER_BATCH, size)


def score_outputs(
    outputs: TestOutputs, criteria: Sequence[str], calibration: Calibration | None = None,
    class_offsets_: Tensor | None = None, tables: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Class-incremental results of ``outputs`` for each criterion (``evaluate_step``'s keys);
    ``class_offsets_`` (``class_offsets``) marks the outputs of a single-head network; ``tables``
    gives criteria's ``score_table`` already computed."""
    seen, true_task, label = outputs.seen, outputs.true_task, outputs.label
    if class_offsets_ is not None:
        offsets = class_offsets_
        logits = outputs.logits[0][:, : int(offsets[seen])]
        predicted_class = logits.argmax(1)
        # The task of a class: the last task whose first class is at or below it.
        inferred = {ONE_HEAD: torch.searchsorted(offsets[1:], predicted_class, right=True)}
        predicted = {ONE_HEAD: predicted_class - offsets[inferred[ONE_HEAD]]}
        columns = torch.arange(logits.shape[1])
        start, stop = offsets[true_task, None], offsets[true_task + 1, None]
        given = torch.where((columns >= start) & (columns < stop), logits, -torch.inf).argmax(1) - offsets[true_task]
        passes = 1
    else:
        per_task = outputs.logits
        tables = tables or {}
        inferred = {
            c: tables[c].argmax(1) if c in tables else pick_task(per_task, c, calibration, outputs.groups, outputs.features)
            for c in criteria
        }
        # Every task's own prediction, (tasks, samples); heads may differ in width: pad with -inf.
        padded = torch.full((seen, len(label), max(p.shape[1] for p in per_task)), -torch.inf)
        for t, logits in enumerate(per_task):
            padded[t, :, : logits.shape[1]] = logits
        own_prediction = padded.argmax(2)
        rows = torch.arange(len(label))
        predicted = {c: own_prediction[inferred[c], rows] for c in criteria}
        given = own_prediction[true_task, rows]
        passes = seen

    def per_true_task(correct: Tensor) -> list[float]:
        return [100.0 * float(correct[true_task == t].double().mean()) for t in range(seen)]

    out = {}
    for name in inferred:
        right_task = inferred[name] == true_task
        confusion = torch.zeros(seen, seen, dtype=torch.int64)
        confusion.index_put_((true_task, inferred[name]), torch.ones_like(true_task), accumulate=True)
        out[name] = {
            "accuracy_per_task": per_true_task(right_task & (predicted[name] == label)),
            "task_id_accuracy": 100.0 * float(right_task.double().mean()),
            "confusion": confusion.tolist(),
            "task_given_accuracy_per_task": per_true_task(given == label),
            "forward_passes_per_sample": passes,
            "seconds_per_batch": outputs.seconds_per_batch,
            "protocol": outputs.protocol,
            "batch_size": outputs.batch_size,
        }
    return out


def evaluate_step(
    learner: ContinualLearner, seen: int, criteria: Sequence[str] = ("entropy", "max_softmax"),
    batch: int | None = None, calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Class-incremental evaluation over the first ``seen`` tasks of ``learner``'s scenario, per
    sample or per batch of ``batch`` samples of one task (``test_outputs``).

    Returns ``{criterion: {...}}`` with, per criterion: ``accuracy_per_task`` (percent, by true
    task), ``task_id_accuracy`` (percent of samples whose task was inferred right), ``confusion``
    (seen x seen counts, rows = true task, columns = inferred task) and ``task_given_accuracy_per_task``
    (the same batches with the true task's head); plus ``forward_passes_per_sample``,
    ``seconds_per_batch`` (all candidate passes, per test batch), ``protocol`` and ``batch_size``.
    A single-head learner has one entry, ``"one_head"``, per sample.
    """
    outputs = test_outputs(learner, seen, batch, features="mahalanobis" in criteria)
    offsets = class_offsets(learner.scenario) if learner.config.heads == "single" else None
    return score_outputs(outputs, criteria, calibration, offsets)


def check_class_incremental(method: str, heads: str) -> None:
    """Refuse a method whose class-incremental matrix this module cannot measure exactly: a
    multi-head network that changes after a task (per-task classic strategies, joint training)."""
    if heads != "single" and not methods.spec(method).frozen_tasks:
        frozen = ", ".join(name for name, s in methods.SPECS.items() if s.frozen_tasks)
        raise ValueError(
            f"method={method!r} with heads={heads!r}: class-incremental evaluation needs a method whose sub-networks "
            f"never change ({frozen}) or heads='single' (a classic strategy)"
        )


def class_incremental_report(learner: ContinualLearner, inference: Sequence[str] = ("entropy", "max_softmax")) -> dict[str, Any]:
    """Class-incremental results of a finished run for each way of inferring the task in
    ``inference`` (``parse_inference``: ``"entropy"`` per sample, ``"supsup@16"`` per batch of 16):
    the accuracy matrix, ACC, BWT and forgetting (``metrics``' definitions over it) and the final
    step of ``evaluate_step``, with ``criterion``, ``protocol`` and ``batch_size``.

    A sub-network learner's matrix is measured here, row k with the first k sub-networks (exact:
    frozen tasks never change). A single-head learner's matrix is the one its run measured after
    every task (its network changed as it learned); the final step is measured again here, and its
    one entry is ``"one_head"`` whatever ``inference`` asks.
    """
    check_class_incremental(learner.config.method, learner.config.heads)
    tasks = len(learner.per_task)
    if learner.config.heads == "single":
        final = evaluate_step(learner, tasks)[ONE_HEAD]
        return {ONE_HEAD: _summary(learner.acc_matrix, final, ONE_HEAD)}
    parsed = {name: parse_inference(name) for name in inference}
    calibration = calibrate(learner, [c for c, _ in parsed.values()])
    report = {}
    for batch in dict.fromkeys(b for _, b in parsed.values()):
        criteria = list(dict.fromkeys(c for c, b in parsed.values() if b == batch))
        if batch_dependent(learner.model):
            steps = [evaluate_step(learner, k, criteria, batch, calibration) for k in range(1, tasks + 1)]
        else:  # every sample's outputs are its own: measure once, restrict to each step's tasks
            full = test_outputs(learner, tasks, batch, features="mahalanobis" in criteria)
            # A sample's score for a task does not depend on the other tasks, except SupSup's
            # (its superposition weighs the k seen tasks): score once, restrict per step.
            tables = {c: score_table(full.logits, c, calibration, full.groups, full.features) for c in criteria if c != "supsup"}
            steps = [
                score_outputs(full.restricted(k), criteria, calibration, tables={c: t[full.true_task < k, :k] for c, t in tables.items()})
                for k in range(1, tasks + 1)
            ]
        for name, (criterion, b) in parsed.items():
            if b == batch:
                report[name] = _summary([s[criterion]["accuracy_per_task"] for s in steps], steps[-1][criterion], criterion)
                if criterion == "calibrated_entropy":
                    report[name]["temperatures"] = calibration.temperatures
    return report


def _summary(matrix: list[list[float]], final: dict[str, Any], criterion: str) -> dict[str, Any]:
    return {
        "criterion": criterion,
        "acc_matrix": matrix,
        "acc": metrics.average_accuracy(matrix),
        "bwt": metrics.backward_transfer(matrix),
        "forgetting": metrics.forgetting(matrix),
        **final,
    }
