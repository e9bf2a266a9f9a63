"""Class-incremental evaluation: task inference over sub-networks, and single-head classic strategies."""

from types import SimpleNamespace

import pytest
import torch

from adaqpacknet.config import Config
from adaqpacknet.data import Scenario, Task, TaskDataset
from adaqpacknet.methods import learner_for
from adaqpacknet.task_inference import ONE_HEAD, class_incremental_report, evaluate_step, pick_task

SMALL = dict(scenario="split_digits", num_tasks=3, epochs=1, finetune_epochs=1, batch_size=32, progress=False, device="cpu")


def test_pick_task_prefers_low_entropy_and_high_maximum():
    confident = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    flat = torch.tensor([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
    for criterion in ("entropy", "max_softmax"):
        assert pick_task([confident, flat], criterion).tolist() == [0, 1]
    with pytest.raises(ValueError, match="valid choices: entropy, max_softmax"):
        pick_task([confident], "margin")


def _separable_scenario(samples: int = 200) -> Scenario:
    """Two tasks of two classes on disjoint input halves: task 0 writes its class into pixel 0 (as
    +-3), task 1 into pixel 1; everything else is 0. Images are uint8, so the sign is an offset."""
    generator = torch.Generator().manual_seed(0)
    tasks = []
    for index in range(2):
        labels = torch.randint(0, 2, (samples,), generator=generator)
        images = torch.full((samples, 1, 1, 2), 128, dtype=torch.uint8)
        images[:, 0, 0, index] = torch.where(labels == 1, 255, 0).to(torch.uint8)
        centred = lambda x: (x - 128 / 255) * 6  # noqa: E731  pixel 0/255 -> -3/+3, 128 -> 0
        data = TaskDataset(images, labels, centred)
        tasks.append(Task(index, f"task{index}", (2 * index, 2 * index + 1), data, data, data))
    return Scenario("separable", tuple(tasks), (1, 1, 2), "mlp")


class _ReadsItsPixel:
    """Two known sub-networks: task t's logits are (-z, z) with z = its own pixel, so each is
    confident on its own task's samples and exactly uniform (zero logits) on the other's."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario, self.per_task = scenario, [{}, {}]
        self.config = SimpleNamespace(eval_batch_size=64, heads="per_task", seed=0, method="packnet")

    def logits(self, x: torch.Tensor, index: int) -> torch.Tensor:
        z = x.flatten(1)[:, index]
        return torch.stack([-z, z], dim=1)


def test_task_inference_finds_the_task_of_separable_data():
    learner = _ReadsItsPixel(_separable_scenario())
    report = class_incremental_report(learner)
    for criterion in ("entropy", "max_softmax"):
        result = report[criterion]
        assert result["task_id_accuracy"] == 100.0
        assert result["acc_matrix"] == [[100.0], [100.0, 100.0]]
        assert result["confusion"] == [[200, 0], [0, 200]]
        assert result["forward_passes_per_sample"] == 2


@pytest.mark.parametrize("method", ["packnet", "wsn", "ada_qpacknet"])
def test_class_incremental_accuracy_never_exceeds_task_given_accuracy(method):
    changes = {"quantizer": "none", "population": 1} if method == "packnet" else {}
    learner = learner_for(Config.from_dict({**SMALL, "method": method, **changes}))
    learner.run()
    report = class_incremental_report(learner)
    assert set(report) == {"entropy", "max_softmax"}
    first = evaluate_step(learner, 1)
    for criterion, result in report.items():
        assert [len(row) for row in result["acc_matrix"]] == [1, 2, 3]
        for cil, given in zip(result["accuracy_per_task"], result["task_given_accuracy_per_task"]):
            assert cil <= given
        assert sum(map(sum, result["confusion"])) == sum(len(t.test) for t in learner.scenario.tasks)
        # One task: nothing to confuse it with, so the first row is the task-given accuracy.
        assert result["acc_matrix"][0] == first[criterion]["task_given_accuracy_per_task"]


def test_single_head_strategy_is_evaluated_over_every_seen_class():
    learner = learner_for(Config.from_dict({**SMALL, "method": "naive", "heads": "single"}))
    results = learner.run()
    assert results["method"] == "naive_single_head"
    assert len(learner.model.heads) == 1 and learner.model.heads[0].out_features == 6
    report = class_incremental_report(learner)
    assert set(report) == {ONE_HEAD}
    result = report[ONE_HEAD]
    # The run measured its class-incremental matrix as it learned; the final row is re-measured here.
    assert result["acc_matrix"] == results["acc_matrix"]
    assert result["accuracy_per_task"] == results["acc_matrix"][-1]
    assert result["forward_passes_per_sample"] == 1
    for cil, given in zip(result["accuracy_per_task"], result["task_given_accuracy_per_task"]):
        assert cil <= given


def test_single_head_is_refused_for_sub_network_methods():
    with pytest.raises(ValueError, match="heads='single' trains one of"):
        Config.from_dict({**SMALL, "method": "packnet", "heads": "single"})
    with pytest.raises(ValueError, match="unknown heads 'shared'; valid choices: per_task, single"):
        Config.from_dict({**SMALL, "method": "naive", "heads": "shared"})


def test_class_incremental_runs_refuse_methods_whose_networks_change():
    from adaqpacknet.experiments import class_incremental_runs

    for method in ("naive", "joint"):
        with pytest.raises(ValueError, match="class-incremental evaluation needs a method whose sub-networks never change"):
            class_incremental_runs([method], [0], SMALL, "unused-runs-root", ["entropy"])
