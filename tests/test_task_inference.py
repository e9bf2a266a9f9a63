"""Class-incremental evaluation: task inference over sub-networks, and single-head classic strategies."""

from types import SimpleNamespace

import pytest
import torch

from adaqpacknet.config import Config
from adaqpacknet.data import Scenario, Task, TaskDataset
from adaqpacknet.methods import learner_for
from adaqpacknet import task_inference
from adaqpacknet.task_inference import (
    ONE_HEAD,
    Calibration,
    class_incremental_report,
    evaluate_step,
    fit_temperature,
    parse_inference,
    pick_task,
    single_task_batches,
    supsup_scores,
)

import conftest

SMALL = {**conftest.SMALL, "scenario": "split_digits"}


def test_pick_task_prefers_low_entropy_and_high_maximum():
    confident = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    flat = torch.tensor([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
    for criterion in ("entropy", "max_softmax"):
        assert pick_task([confident, flat], criterion).tolist() == [0, 1]
    with pytest.raises(ValueError, match="valid choices: entropy, max_softmax, energy"):
        pick_task([confident], "margin")


def test_energy_prefers_the_larger_log_sum_exp():
    # Same softmax, larger logits: entropy ties (the first task wins), energy picks the second.
    small, large = torch.tensor([[1.0, 0.0]]), torch.tensor([[11.0, 10.0]])
    assert pick_task([small, large], "entropy").tolist() == [0]
    assert pick_task([small, large], "energy").tolist() == [1]


def test_calibrated_entropy_divides_by_each_heads_temperature():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.5, 0.0]])
    assert pick_task([a, b], "entropy").tolist() == [0]
    # Head 0 is overconfident on its own validation data (temperature 4), head 1 is not.
    assert pick_task([a, b], "calibrated_entropy", Calibration(temperatures=[4.0, 1.0])).tolist() == [1]
    with pytest.raises(ValueError, match="calibrated_entropy needs one temperature per task"):
        pick_task([a, b], "calibrated_entropy")


def test_fit_temperature_at_the_ends_of_its_grid():
    logits = torch.tensor([[3.0, -3.0], [-3.0, 3.0]] * 50)
    right = torch.tensor([0, 1] * 50)
    assert fit_temperature(logits, right) == pytest.approx(1.0)  # always right: never sharpened (T >= 1)
    assert fit_temperature(logits, 1 - right) == pytest.approx(100.0)  # always wrong: as flat as allowed


def test_supsup_score_is_minus_the_entropy_gradient():
    # Superposed outputs z = a0 z0 + a1 z1 at a = 1/2: growing a0 (a peaked output) lowers the
    # entropy, growing a1 (all zeros) changes nothing, so task 0 wins with score -dH/da0 > 0 = task 1's.
    z0, z1 = torch.tensor([[4.0, -4.0, 0.0]]), torch.zeros(1, 3)
    scores = supsup_scores([z0, z1])
    assert scores[0, 0] > 0 and scores[0, 1] == 0
    # The analytic gradient: dH/dz_j = -p_j (log p_j + H), dH/da_t = sum_j dH/dz_j z_tj.
    z = 0.5 * z0.double()
    p = torch.softmax(z, 1)
    entropy = -(p * p.log()).sum()
    assert float(scores[0, 0]) == pytest.approx(float(((p * (p.log() + entropy)) * z0.double()).sum()))
    assert pick_task([z1, z0], "supsup").tolist() == [1]


def test_mahalanobis_picks_the_task_whose_classes_are_nearest():
    # Task 0's classes sit at (0, 0) and (4, 0), task 1's at (0, 10) and (4, 10), identity covariance.
    gaussians = [
        (torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64), torch.eye(2, dtype=torch.float64)),
        (torch.tensor([[0.0, 10.0], [4.0, 10.0]], dtype=torch.float64), torch.eye(2, dtype=torch.float64)),
    ]
    features = torch.tensor([[3.5, 1.0], [0.5, 9.0]])
    logits = [torch.zeros(2, 2), torch.zeros(2, 2)]
    calibration = Calibration(gaussians=gaussians)
    assert pick_task(logits, "mahalanobis", calibration, features_per_task=[features, features]).tolist() == [0, 1]
    assert task_inference.mahalanobis_scores([features], gaussians[:1])[:, 0].tolist() == pytest.approx([-1.25, -81.25])


def test_infomax_picks_the_head_that_spreads_a_batch_over_its_classes():
    # One batch of 4 samples: both heads are equally confident on every sample (entropy ties), but
    # head 0 puts them in both its classes and head 1 puts all four in one.
    spread = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, 5.0]])
    one_class = torch.tensor([[5.0, -5.0]] * 4)
    groups = torch.zeros(4, dtype=torch.long)
    assert pick_task([one_class, spread], "entropy", groups=groups).tolist() == [0] * 4
    assert pick_task([one_class, spread], "infomax", groups=groups).tolist() == [1] * 4
    with pytest.raises(ValueError, match="infomax scores a batch"):
        pick_task([one_class, spread], "infomax")


def test_inference_names():
    assert parse_inference("entropy") == ("entropy", None)
    assert parse_inference("supsup@16") == ("supsup", 16)
    for bad, message in [("margin", "unknown criterion 'margin'"), ("entropy@1", "whole number >= 2"), ("infomax", "use infomax@<batch size>")]:
        with pytest.raises(ValueError, match=message):
            parse_inference(bad)


def test_single_task_batches_hold_one_task_each_and_cover_the_test_set():
    scenario = _separable_scenario(samples=37)
    x, task, label, groups = single_task_batches(scenario, 2, 0, 16)
    assert len(task) == 74 and torch.bincount(groups).tolist() == [16, 16, 5, 16, 16, 5]
    # A last batch of one sample joins the one before it (BatchNorm cannot normalise one sample).
    joined = single_task_batches(_separable_scenario(samples=33), 1, 0, 16)[3]
    assert torch.bincount(joined).tolist() == [16, 17]
    for g in groups.unique():
        assert len(task[groups == g].unique()) == 1


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
        self.model = torch.nn.Sequential()  # nothing batch-dependent

    def logits(self, x: torch.Tensor, index: int, view_set: bool = False) -> torch.Tensor:
        z = x.flatten(1)[:, index]
        return torch.stack([-z, z], dim=1)


def test_task_inference_finds_the_task_of_separable_data():
    learner = _ReadsItsPixel(_separable_scenario())
    inference = ["entropy", "max_softmax", "energy", "supsup", "entropy@16", "infomax@16"]
    report = class_incremental_report(learner, inference)
    assert list(report) == inference
    for name, result in report.items():
        assert result["task_id_accuracy"] == 100.0, name
        assert result["acc_matrix"] == [[100.0], [100.0, 100.0]]
        assert result["confusion"] == [[200, 0], [0, 200]]
        assert result["forward_passes_per_sample"] == 2
        assert (result["protocol"], result["batch_size"]) == (("per_batch", 16) if "@" in name else ("per_sample", 64))


EVERY_INFERENCE = ["entropy", "max_softmax", "energy", "calibrated_entropy", "mahalanobis", "supsup", "entropy@4", "infomax@4", "mahalanobis@4"]


@pytest.mark.parametrize("method", ["packnet", "wsn", "ada_qpacknet"])
def test_class_incremental_accuracy_never_exceeds_task_given_accuracy(method):
    # split_digits: a conv net with batch-statistics BatchNorm, so every step is measured as it is.
    changes = {"quantizer": "none", "population": 1} if method == "packnet" else {}
    learner = learner_for(Config.from_dict({**SMALL, "method": method, **changes}))
    learner.run()
    assert task_inference.batch_dependent(learner.model)
    report = class_incremental_report(learner, EVERY_INFERENCE)
    assert list(report) == EVERY_INFERENCE
    first = evaluate_step(learner, 1, ["entropy", "max_softmax"])
    for criterion, result in report.items():
        assert [len(row) for row in result["acc_matrix"]] == [1, 2, 3]
        for cil, given in zip(result["accuracy_per_task"], result["task_given_accuracy_per_task"]):
            assert cil <= given
        assert sum(map(sum, result["confusion"])) == sum(len(t.test) for t in learner.scenario.tasks)
        if "@" not in criterion:  # one task: nothing to confuse it with, the row is the task-given accuracy
            assert result["acc_matrix"][0] == first["entropy"]["task_given_accuracy_per_task"]


def test_measuring_once_and_restricting_equals_measuring_every_step():
    # An MLP (no batch statistics): the report measures the outputs once; each step restricted from
    # them must equal that step measured on its own.
    learner = learner_for(Config.from_dict({**SMALL, "scenario": "permuted_digits", "method": "packnet", "quantizer": "none", "population": 1}))
    learner.run()
    assert not task_inference.batch_dependent(learner.model)
    report = class_incremental_report(learner, EVERY_INFERENCE)
    calibration = task_inference.calibrate(learner, ["calibrated_entropy", "mahalanobis"])
    for name, result in report.items():
        criterion, batch = parse_inference(name)
        for k in range(1, 4):
            step = evaluate_step(learner, k, [criterion], batch, calibration)[criterion]
            assert result["acc_matrix"][k - 1] == step["accuracy_per_task"], (name, k)


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
    from adaqpacknet.experiments import class_incremental_runs, method_configs

    for method in ("naive", "joint"):
        with pytest.raises(ValueError, match="class-incremental evaluation needs a method whose sub-networks never change"):
            class_incremental_runs(method_configs([method], [0], SMALL), "unused-runs-root", ["entropy"])
