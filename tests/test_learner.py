"""The learner end to end on scikit-learn's digits: zero forgetting, determinism, resume."""

import copy

import pytest
import torch

from adaqpacknet.config import Config
from adaqpacknet.learner import AdaQPacknet
from adaqpacknet.models import HEAD
from adaqpacknet.ownership import owner_maps, prunable_layers, raw_weight
from adaqpacknet.results import CorruptFileError, read_json

from conftest import SMALL, small_config


def without_timings(results: dict) -> dict:
    results = copy.deepcopy(results)
    results.pop("timings")
    results.pop("resumed_in")
    for task in results["per_task"]:
        task.pop("timings")
    return results


@pytest.fixture(scope="module")
def permuted_run():
    learner = AdaQPacknet(small_config())
    states = []
    for index in range(learner.scenario.num_tasks):
        learner.learn_task(index)
        learner.acc_matrix.append(learner.evaluate_seen())
        states.append(
            {
                "weights": {n: raw_weight(l).detach().clone() for n, l in prunable_layers(learner.model).items()},
                "owners": {n: o.clone() for n, o in owner_maps(learner.model).items()},
                "heads": copy.deepcopy(learner.model.heads.state_dict()),
            }
        )
    return learner, states


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_frozen_weights_stay_bit_identical_under_adam(weight_decay):
    # A large lr (and weight decay) make any leak through the optimiser visible at once. Without
    # weight decay no snapshot is restored: the zeroed gradients alone must keep frozen weights.
    learner = AdaQPacknet(small_config(num_tasks=2, lr=0.05, weight_decay=weight_decay))
    learner.learn_task(0)
    owned = {n: (o == 1).clone() for n, o in owner_maps(learner.model).items()}
    before = {n: raw_weight(l).detach().clone() for n, l in prunable_layers(learner.model).items()}
    head_before = copy.deepcopy(learner.model.heads[0].state_dict())
    learner.learn_task(1)
    for name, layer in prunable_layers(learner.model).items():
        after = raw_weight(layer).detach()
        assert owned[name].any()
        assert torch.equal(after[owned[name]], before[name][owned[name]]), name
        assert not torch.equal(after[~owned[name]], before[name][~owned[name]]), "task 2 trained nothing"
    for key, value in learner.model.heads[0].state_dict().items():
        assert torch.equal(value, head_before[key])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_training_shortcuts_give_the_plain_loops_state_dict(weight_decay, monkeypatch):
    # The shortcuts of training.fit and ownership.WeightMask (no restore without weight decay,
    # primed second moments, no mask product while every weight is visible) are for speed only:
    # two tasks of a network with BatchNorm, trained both ways, end in the same bytes.
    from adaqpacknet import ownership, training

    def two_tasks() -> dict[str, torch.Tensor]:
        learner = AdaQPacknet(Config.from_dict({
            **SMALL, "scenario": "split_digits", "model": "small_conv", "num_tasks": 2, "epochs": 2, "weight_decay": weight_decay,
        }))
        learner.learn_task(0)
        learner.learn_task(1)
        return learner.model.state_dict()

    fast = two_tasks()
    monkeypatch.setattr(training, "SHORTCUTS", False)
    monkeypatch.setattr(ownership.WeightMask, "forward", lambda self, weight: weight * self.mask)
    plain = two_tasks()
    assert any("running" not in k and v.dim() == 4 for k, v in fast.items())  # a conv network
    assert fast.keys() == plain.keys()
    for key in fast:
        assert torch.equal(fast[key], plain[key]), key


def test_owner_maps_capacity_and_codebooks(permuted_run):
    learner, states = permuted_run
    capacity = []
    for t, state in enumerate(states, start=1):
        owned = sum(int((o != 0).sum()) for o in state["owners"].values())
        capacity.append(owned)
        for name, owner in state["owners"].items():
            # Each later state keeps every earlier owner id where it was (ownership never moves).
            for later in states[t:]:
                earlier_owned = owner != 0
                assert torch.equal(later["owners"][name][earlier_owned], owner[earlier_owned])
        report = learner.per_task[t - 1]
        for name, owner in state["owners"].items():
            values = state["weights"][name][owner == t]
            bits = report["layer_bits"][name]
            assert int(values.numel()) == report["owned_weights"][name]
            assert len(torch.unique(values)) <= 2**bits
            # The codebook was fitted on the task's own weights only: every level is used by one.
            codebook = learner.codebooks[f"{t}/{name}"]
            assert torch.equal(torch.unique(values), torch.unique(codebook)), name
        head = state["heads"][f"{t - 1}.weight"]
        assert len(torch.unique(head)) <= 2 ** report["layer_bits"][HEAD]
    assert all(a < b for a, b in zip(capacity, capacity[1:])) and capacity[0] > 0
    assert learner.results()["capacity_used"]["total"] == pytest.approx(capacity[-1] / sum(o.numel() for o in states[-1]["owners"].values()))


def test_search_picks_the_fittest_candidate_and_prunes_exactly_its_ratios(permuted_run):
    learner, _ = permuted_run
    for report in learner.per_task:
        fitness = [c["fitness"] for c in report["candidates"]]
        assert report["winner"] == fitness.index(max(fitness))
        winner = report["candidates"][report["winner"]]
        assert report["prune_ratios"] == winner["prune_ratios"]
        assert report["val_accuracy_float"] == winner["val_accuracy"]
        for c in report["candidates"]:
            assert c["fitness"] == pytest.approx(0.8 * c["val_accuracy"] / 100 + 0.2 * c["pruned_fraction"])
        for name, ratio in winner["prune_ratios"].items():
            free = report["free_weights"][name]
            assert 0.4 <= ratio <= 0.7
            assert report["owned_weights"][name] == free - round(ratio * free)


def test_zero_forgetting_re_measured(permuted_run):
    learner, _ = permuted_run
    results = learner.results()
    assert results["bwt"] == 0.0 and results["forgetting"] == 0.0
    matrix = results["acc_matrix"]
    for j in range(len(matrix)):
        assert len({row[j] for row in matrix[j:]}) == 1
    assert learner.evaluate_seen() == matrix[-1]
    assert results["acc"] > 50.0  # well above chance (10%) even after one epoch


def test_results_keys_and_json(permuted_run, tmp_path):
    from adaqpacknet.results import write_json

    learner, _ = permuted_run
    results = learner.results()
    for key in (
        "method", "scenario", "seed", "config", "environment", "acc_matrix", "acc", "bwt", "forgetting",
        "capacity_used", "bit_widths", "per_task", "timings",
    ):
        assert key in results
    for task in results["per_task"]:
        assert set(task["prune_ratios"]) == set(prunable_layers(learner.model))
        assert 1 <= task["bits"] <= 6
        assert {"train_s", "search_s", "quantize_s", "total_s"} <= set(task["timings"])
    write_json(tmp_path / "r.json", results)
    assert read_json(tmp_path / "r.json")["acc_matrix"] == results["acc_matrix"]


@pytest.mark.parametrize("scenario", ["permuted_digits", "split_digits"])  # MLP; conv net with BatchNorm
def test_same_seed_same_results(tmp_path, scenario):
    a = AdaQPacknet(small_config(scenario=scenario, num_tasks=2)).run(tmp_path / "a")
    b = AdaQPacknet(small_config(scenario=scenario, num_tasks=2)).run(tmp_path / "b")
    assert without_timings(a) == without_timings(b)
    c = AdaQPacknet(small_config(scenario=scenario, num_tasks=2, seed=1)).run()
    assert c["acc_matrix"] != a["acc_matrix"]


def test_interrupted_run_resumes_to_the_same_results(tmp_path, monkeypatch):
    config = small_config(num_tasks=3)
    reference = AdaQPacknet(config).run(tmp_path / "reference")

    original = AdaQPacknet.learn_task

    def crash_at_third_task(self, index):
        if index == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, index)

    monkeypatch.setattr(AdaQPacknet, "learn_task", crash_at_third_task)
    with pytest.raises(KeyboardInterrupt):
        AdaQPacknet(config).run(tmp_path / "resumed")
    assert read_json(tmp_path / "resumed" / "checkpoint.json")["tasks_done"] == 2
    assert not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(AdaQPacknet, "learn_task", original)
    resumed = AdaQPacknet(config).run(tmp_path / "resumed")
    assert without_timings(resumed) == without_timings(reference)


def test_resume_refuses_another_config_and_a_corrupt_checkpoint(tmp_path):
    config = small_config(num_tasks=1)
    AdaQPacknet(config).run(tmp_path)
    with pytest.raises(ValueError, match=r"different config \(keys \['epochs'\]\)"):
        AdaQPacknet(config.replace(epochs=2)).run(tmp_path)
    (tensors,) = tmp_path.glob("checkpoint-*.safetensors")
    payload = bytearray(tensors.read_bytes())
    payload[-1] ^= 0xFF
    tensors.write_bytes(bytes(payload))
    with pytest.raises(CorruptFileError, match=r"checkpoint-task001.safetensors does not match the checksum"):
        AdaQPacknet(config).run(tmp_path)


@pytest.mark.parametrize(
    "changes",
    [
        {"scenario": "split_digits"},
        {"quantizer": "linear", "bit_allocation": "per_layer"},
        {"quantizer": "none", "population": 1},
        {"prune_schedule": "fixed_mask", "search_keep": "retrain", "free_init": "uniform"},
    ],
)
def test_end_to_end_variants(changes):
    results = AdaQPacknet(small_config(**{"num_tasks": 2, **changes})).run()
    assert results["bwt"] == 0.0
    assert len(results["acc_matrix"]) == results["num_tasks"]
    assert results["acc"] > 40.0
    if changes.get("quantizer") == "none":
        assert results["bit_widths"] == [32] * results["num_tasks"]
        assert results["method"] == "ada_qpacknet_p1_float"  # one candidate, float weights


def test_missing_data_stops_before_any_model_is_built(tmp_path, monkeypatch):
    import adaqpacknet.continual as continual
    from adaqpacknet.data import DatasetNotFoundError

    monkeypatch.setattr(continual, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(DatasetNotFoundError, match="MNIST") as error:
        AdaQPacknet(Config(scenario="permuted_mnist", data_root=str(tmp_path)))
    assert str(tmp_path) in str(error.value)


def test_command_line_run(tmp_path):
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "adaqpacknet", "run", "--out", str(tmp_path), "scenario=split_digits",
               "num_tasks=2", "epochs=1", "batch_size=32", "progress=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "task 2/2 done" in done.stdout
    assert json.loads((tmp_path / "results.json").read_text())["bwt"] == 0.0
    bad = subprocess.run([sys.executable, "-m", "adaqpacknet", "run", "r_min=0.9", "r_max=0.1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "r_min=0.9 must not exceed r_max=0.1" in bad.stderr


def test_a_killed_process_resumes_to_the_same_results(tmp_path):
    """SIGKILL a real run after its first checkpoint; the restarted run ends where an unbroken one does."""
    import json
    import signal
    import subprocess
    import sys
    import time

    args = ["scenario=permuted_digits", "num_tasks=3", "epochs=2", "batch_size=16", "progress=false"]
    command = [sys.executable, "-m", "adaqpacknet", "run"]
    subprocess.run([*command, "--out", str(tmp_path / "whole"), *args], check=True, capture_output=True, timeout=300)
    victim = subprocess.Popen([*command, "--out", str(tmp_path / "killed"), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "checkpoint.json"
    deadline = time.monotonic() + 240
    while not state.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert json.loads(state.read_text())["tasks_done"] < 3, "the run ended before it could be killed"
    subprocess.run([*command, "--out", str(tmp_path / "killed"), *args], check=True, capture_output=True, timeout=300)
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert without_timings(resumed) == without_timings(whole)


def test_budget_rule_shares_capacity_between_the_tasks_and_keeps_the_reserve():
    config = small_config(num_tasks=3, capacity_rule="budget", capacity_budget=0.6, budget_share_min=1.0, budget_share_max=1.0)
    results = AdaQPacknet(config).run()
    assert results["method"] == "ada_qpacknet_budget" and results["bwt"] == 0.0
    for task, report in enumerate(results["per_task"]):
        for layer, owned in report["owned_weights"].items():
            size = results["weights"]["per_layer"][layer]
            # u = 1: each task owns 1/3 of the 60% of the layer the sequence may own (to rounding).
            assert abs(owned - 0.6 * size / 3) <= 2, (task, layer, owned)
    assert all(share <= 0.6 + 1e-6 for share in results["capacity_used"].values())


def test_without_reuse_a_task_neither_trains_nor_infers_with_earlier_weights(tmp_path):
    from adaqpacknet.runs import verify_packed_run

    learner = AdaQPacknet(small_config(num_tasks=2, reuse_frozen=False))
    results = learner.run(tmp_path)
    assert results["method"] == "ada_qpacknet_no_reuse" and results["bwt"] == 0.0
    x = learner.scenario.tasks[1].test[0][0].unsqueeze(0)
    learner.show(1)
    before = learner.model(x, 1).detach().clone()
    with torch.no_grad():  # task 1's weights changed: task 2 must not see it
        for name, layer in prunable_layers(learner.model).items():
            raw_weight(layer)[owner_maps(learner.model)[name] == 1] += 1.0
    learner.show(1)
    assert torch.equal(learner.model(x, 1), before)
    # The packed file (written by the run, before the change) knows the view: its networks give the run's accuracies and probe logits exactly.
    assert verify_packed_run(tmp_path)["ok"]


def test_the_task_steps_go_in_order_and_refuse_a_skip_or_a_repeat():
    # The tour's steps are public; each must follow the one before it. Skipping quantize_task used
    # to freeze a task recorded at 32 bits with validation accuracy 0.0, silently.
    learner = AdaQPacknet(small_config(num_tasks=2, population=1))
    with pytest.raises(RuntimeError, match=r"start_task\(1\): 0 tasks are learned, so the next is index 0"):
        learner.start_task(1)
    step = learner.start_task(0)
    with pytest.raises(RuntimeError, match=r"quantize_task on task 1: its last step was start_task, so the next is search_sparsity"):
        learner.quantize_task(step)
    with pytest.raises(RuntimeError, match=r"start_task\(1\): task 1 is open after start_task; finish it first \(search_sparsity"):
        learner.start_task(1)
    abandoned, step = step, learner.start_task(0)  # an open task may start again (an interrupted step)
    with pytest.raises(RuntimeError, match=r"search_sparsity on task 1: the task is not this learner's open task"):
        learner.search_sparsity(abandoned)
    learner.search_sparsity(step)
    with pytest.raises(RuntimeError, match=r"freeze_task on task 1: its last step was search_sparsity, so the next is quantize_task"):
        learner.freeze_task(step)
    with pytest.raises(RuntimeError, match=r"search_sparsity on task 1: its last step was search_sparsity"):
        learner.search_sparsity(step)
    learner.quantize_task(step)
    report = learner.freeze_task(step)
    assert report["task"] == 1 and report["val_accuracy_float"] > 0 and step.stage == "freeze_task"
    with pytest.raises(RuntimeError, match=r"freeze_task on task 1: the task is frozen; each task goes start_task -> search_sparsity"):
        learner.freeze_task(step)
    assert learner.learn_task(1)["task"] == 2  # the learner goes on as if nothing had been refused
