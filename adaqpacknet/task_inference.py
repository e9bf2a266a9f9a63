"""Class-incremental evaluation: no task id at test time.

A sub-network method (Ada-QPacknet, PackNet, WSN) needs the task id to choose its sub-network. Here
it infers it: every learned task's sub-network runs on the input, the most confident one wins
(lowest predictive entropy by default, or highest maximum softmax probability), and the predicted
class is that task's prediction. A sample counts as correct only when both the task and the class
within it are right. A network trained with one head over all classes (a classic strategy with
``heads="single"``) scores every class seen so far in one pass instead.

Two choices keep the numbers honest:

- Test batches mix the seen tasks' samples in a seeded random order. The networks' batch-statistics
  BatchNorm would otherwise normalise each batch over one task's samples and leak its id.
- The task-given accuracy is measured on the same batches, so the class-incremental accuracy can
  never exceed it.

Sub-network methods never change a frozen task, so the final network restricted to its first k
sub-networks is exactly the network that existed after task k: row k of the class-incremental
accuracy matrix is measured from the final network with k candidate tasks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import metrics

if TYPE_CHECKING:
    from .continual import ContinualLearner
    from .data import Scenario

CRITERIA = ("entropy", "max_softmax")
# Methods whose task t network never changes after task t: their matrix can be measured at the end.
FROZEN_SUBNETWORK_METHODS = ("ada_qpacknet", "packnet", "wsn", "independent")
ONE_HEAD = "one_head"  # the "criterion" of a single-head network: its argmax over seen classes


def confidence(logits: Tensor, criterion: str) -> Tensor:
    """(N,) confidence of each row of ``logits`` (N, classes): higher is more confident."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; valid choices: {', '.join(CRITERIA)}")
    log_p = torch.log_softmax(logits.double(), dim=1)
    if criterion == "entropy":
        return (log_p.exp() * log_p).sum(1)  # minus the entropy
    return log_p.max(1).values


def pick_task(logits_per_task: Sequence[Tensor], criterion: str = "entropy") -> Tensor:
    """(N,) index of the most confident task's logits for each sample (the first one on a tie)."""
    if not logits_per_task:
        raise ValueError("pick_task needs the logits of at least one task")
    scores = torch.stack([confidence(logits, criterion) for logits in logits_per_task], dim=1)
    return scores.argmax(1)


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


def class_offsets(scenario: Scenario) -> Tensor:
    """Index of each task's first class in a single head over every class (tasks in order)."""
    sizes = torch.tensor((0, *scenario.classes_per_task))
    return sizes.cumsum(0)


@torch.no_grad()
def evaluate_step(learner: ContinualLearner, seen: int, criteria: Sequence[str] = CRITERIA) -> dict[str, Any]:
    """Class-incremental evaluation over the first ``seen`` tasks of ``learner``'s scenario.

    Returns ``{criterion: {...}}`` with, per criterion: ``accuracy_per_task`` (percent, by true
    task), ``task_id_accuracy`` (percent of samples whose task was inferred right), ``confusion``
    (seen x seen counts, rows = true task, columns = inferred task) and ``task_given_accuracy_per_task``
    (the same batches with the true task's head); plus ``forward_passes_per_sample`` and
    ``seconds_per_batch`` (all candidate passes and the choice, per batch of ``eval_batch_size``).
    A single-head learner has one entry, ``"one_head"``. The batches are shuffled by the run's seed.
    """
    scenario, batch = learner.scenario, learner.config.eval_batch_size
    single = learner.config.heads == "single"
    if not 1 <= seen <= len(learner.per_task):
        raise ValueError(f"seen={seen}: the learner has learned {len(learner.per_task)} task(s)")
    x, true_task, label = mixed_test_set(scenario, seen, learner.config.seed)
    batches = list(zip(x.split(batch), true_task.split(batch), label.split(batch)))
    started = time.perf_counter()
    if single:
        offsets = class_offsets(scenario)
        logits = torch.cat([learner.logits(xb, 0)[:, : int(offsets[seen])] for xb, _, _ in batches])
        predicted_class = logits.argmax(1)
        # The task of a class: the last task whose first class is at or below it.
        inferred = {ONE_HEAD: torch.searchsorted(offsets[1:], predicted_class, right=True)}
        predicted = {ONE_HEAD: predicted_class - offsets[inferred[ONE_HEAD]]}
        columns = torch.arange(logits.shape[1])
        start, stop = offsets[true_task, None], offsets[true_task + 1, None]
        given = torch.where((columns >= start) & (columns < stop), logits, -torch.inf).argmax(1) - offsets[true_task]
        passes = 1
    else:
        per_task = [torch.cat([learner.logits(xb, t) for xb, _, _ in batches]) for t in range(seen)]
        inferred = {c: pick_task(per_task, c) for c in criteria}
        # Every task's own prediction, (tasks, samples); heads may differ in width: pad with -inf.
        padded = torch.full((seen, len(label), max(p.shape[1] for p in per_task)), -torch.inf)
        for t, logits in enumerate(per_task):
            padded[t, :, : logits.shape[1]] = logits
        own_prediction = padded.argmax(2)
        rows = torch.arange(len(label))
        predicted = {c: own_prediction[inferred[c], rows] for c in criteria}
        given = own_prediction[true_task, rows]
        passes = seen
    seconds_per_batch = (time.perf_counter() - started) / len(batches)

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
            "seconds_per_batch": seconds_per_batch,
            "batch_size": batch,
        }
    return out


def check_class_incremental(method: str, heads: str) -> None:
    """Refuse a method whose class-incremental matrix this module cannot measure exactly: a
    multi-head network that changes after a task (per-task classic strategies, joint training)."""
    if heads != "single" and method not in FROZEN_SUBNETWORK_METHODS:
        raise ValueError(
            f"method={method!r} with heads={heads!r}: class-incremental evaluation needs a method whose sub-networks "
            f"never change ({', '.join(FROZEN_SUBNETWORK_METHODS)}) or heads='single' (a classic strategy)"
        )


def class_incremental_report(learner: ContinualLearner, criteria: Sequence[str] = CRITERIA) -> dict[str, Any]:
    """Class-incremental results of a finished run, per criterion: the accuracy matrix, ACC, BWT and
    forgetting (``metrics``' definitions over it) and the final step of ``evaluate_step``.

    A sub-network learner's matrix is measured here, row k with the first k sub-networks (exact:
    frozen tasks never change). A single-head learner's matrix is the one its run measured after
    every task (its network changed as it learned); the final step is measured again here.
    """
    check_class_incremental(learner.config.method, learner.config.heads)
    tasks = len(learner.per_task)
    final = evaluate_step(learner, tasks, criteria)
    if learner.config.heads == "single":
        matrices = {ONE_HEAD: learner.acc_matrix}
    else:
        steps = [evaluate_step(learner, k, criteria) for k in range(1, tasks)]
        matrices = {c: [s[c]["accuracy_per_task"] for s in steps] + [final[c]["accuracy_per_task"]] for c in final}
    return {
        criterion: {
            "acc_matrix": matrix,
            "acc": metrics.average_accuracy(matrix),
            "bwt": metrics.backward_transfer(matrix),
            "forgetting": metrics.forgetting(matrix),
            **final[criterion],
        }
        for criterion, matrix in matrices.items()
    }
