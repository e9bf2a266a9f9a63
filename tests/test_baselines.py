"""PackNet mode, WSN and the upper bounds on digits: each runs end to end and keeps its promises."""

import pytest
import torch

from adaqpacknet import tuning
from adaqpacknet.config import parse_override
from adaqpacknet.config import Config
from adaqpacknet.methods import VARIANTS
from adaqpacknet.methods import learner_for
from adaqpacknet.ownership import owner_maps, prunable_layers, raw_weight
from adaqpacknet.results import check_run_schema
from adaqpacknet.wsn import score_masks, top_count

import conftest

SMALL = {**conftest.SMALL, "scenario": "split_digits"}


def config(**changes) -> Config:
    return Config.from_dict({**SMALL, **changes})


def test_packnet_prunes_each_task_by_its_fixed_ratio_and_keeps_float_weights():
    learner = learner_for(config(method="packnet", quantizer="none", population=1, prune_ratios=[0.75, 0.5, 0.25]))
    results = learner.run()
    check_run_schema(results)
    assert results["method"] == "packnet"
    assert results["bwt"] == 0.0
    for task, ratio in zip(results["per_task"], [0.75, 0.5, 0.25]):
        assert len(task["candidates"]) == 1
        assert set(task["prune_ratios"].values()) == {ratio}
        for layer, free in task["free_weights"].items():
            assert task["owned_weights"][layer] == free - round(ratio * free)
        assert set(task["layer_bits"].values()) == {32}
    assert results["model_bytes"] == results["packed_bytes"]  # one storage rule: the packed file


def test_wsn_masks_respect_capacity_and_never_change_earlier_weights():
    learner = learner_for(config(method="wsn", wsn_capacity=0.3))
    used_by_first, weights_after_first = None, None
    for index in range(3):
        learner.learn_task(index)
        learner.acc_matrix.append(learner.evaluate_seen())
        masks = score_masks(learner.model)
        for name, mask in masks.items():
            assert int(mask.task_masks[index].sum()) == top_count(mask.task_masks[index].numel(), 0.3), (index, name)
        if index == 0:
            used_by_first = {name: m.task_masks[0].clone() for name, m in masks.items()}
            weights_after_first = {n: raw_weight(l).detach().clone() for n, l in prunable_layers(learner.model).items()}
    for name, layer in prunable_layers(learner.model).items():
        used = used_by_first[name]
        assert torch.equal(raw_weight(layer).detach()[used], weights_after_first[name][used]), name
        assert not torch.equal(raw_weight(layer).detach()[~used], weights_after_first[name][~used]), "later tasks trained nothing"
    results = learner.results()
    check_run_schema(results)
    assert results["bwt"] == 0.0  # stored masks over frozen weights: every task's accuracy is unchanged
    assert results["capacity_used"]["total"] <= 3 * 0.3 + 1e-9
    # Storage as the packed file counts: float32 for the weights some mask selects, masks coded
    # near 1 bit per weight per task (capacity 0.3: H(0.3) = 0.88 bit), float32 heads.
    selected = round(results["capacity_used"]["total"] * results["weights"]["body"])
    heads = 4 * sum(h["weight"] + h["bias"] for h in results["weights"]["heads"])
    masks = results["model_bytes"] - 4 * selected - heads
    assert 3 * results["weights"]["body"] * 0.8 / 8 < masks < 3 * results["weights"]["body"] / 8


def test_independent_networks_train_one_network_per_task():
    learner = learner_for(config(method="independent"))
    results = learner.run()
    check_run_schema(results)
    assert results["bwt"] == 0.0
    first, second = learner.model.networks[0], learner.model.networks[1]
    assert not torch.equal(first.body.fc1.weight, second.body.fc1.weight)
    assert results["model_bytes"] == 3 * results["dense_float32_bytes"]


def test_joint_training_reports_one_row_and_no_sequence_metrics():
    results = learner_for(config(method="joint")).run()
    check_run_schema(results)
    assert len(results["acc_matrix"]) == 1 and len(results["acc_matrix"][0]) == 3
    assert results["bwt"] is None and results["forgetting"] is None
    assert results["acc"] == pytest.approx(sum(results["acc_matrix"][0]) / 3)


def test_every_method_trains_the_same_epochs_per_task():
    # The equal budget of T1: epochs + finetune_epochs per task for every method's reported network;
    # the pruning methods split it into training and retraining, Ada-QPacknet once per candidate.
    budget = {"epochs": 2, "finetune_epochs": 1, "num_tasks": 2}
    for method, candidates in [("wsn", 1), ("independent", 1), ("naive", 1), ("replay", 1), ("ada_qpacknet", 2), ("ada_qpacknet_budget_p1", 1)]:
        results = learner_for(config(**budget, **VARIANTS[method])).run()
        assert [task["epochs_run"] for task in results["per_task"]] == [3 * candidates] * 2, method
    joint = learner_for(config(**budget, method="joint")).run()
    assert joint["per_task"][-1]["epochs_run"] == 3


def test_method_settings_are_validated():
    with pytest.raises(ValueError, match="valid choices: ada_qpacknet, packnet"):
        config(method="packnett")
    with pytest.raises(ValueError, match="set population=1"):
        config(method="packnet", quantizer="none")
    with pytest.raises(ValueError, match="set quantizer='none'"):
        config(method="packnet", population=1)
    with pytest.raises(ValueError, match="needs weight_decay=0"):
        config(method="avalanche_packnet", weight_decay=1e-4)
    with pytest.raises(ValueError, match="prune_ratios entry=1.5"):
        config(prune_ratios=[0.5, 1.5])
    with pytest.raises(ValueError, match="3 entries for num_tasks=2"):
        config(num_tasks=2, prune_ratios=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="wsn_capacity=0"):
        config(wsn_capacity=0.0)
    assert parse_override("prune_ratios=0.75,0.5") == ("prune_ratios", [0.75, 0.5])
    assert config(prune_ratios=[0.6]).prune_ratio(2) == 0.6
    assert config().prune_ratio(0) == pytest.approx(0.55)


def test_every_classic_strategy_runs_through_avalanche():
    for method in ("naive", "ewc", "si", "lwf", "replay", "gem", "agem"):
        results = learner_for(
            config(method=method, gem_patterns_per_exp=30, agem_patterns_per_exp=30, agem_sample_size=16, replay_mem_size=60)
        ).run()
        check_run_schema(results)
        assert results["method"] == method
        assert len(results["acc_matrix"]) == 3
        # One float32 network with every learned head.
        assert results["model_bytes"] == results["dense_float32_bytes"] + 4 * sum(h["weight"] + h["bias"] for h in results["weights"]["heads"][1:])


@pytest.mark.parametrize("heads", ["per_task", "single"])
def test_a_classic_strategy_keeps_its_best_validation_epoch(heads):
    # A large lr makes epochs differ; the schedule starts every task at the configured lr and the
    # weights of the best epoch (the first of equals) are those the task ends with.
    learner = learner_for(config(method="ewc", epochs=2, lr=0.02, lr_patience=1, heads=heads))  # 2 + 1 epochs
    results = learner.run()
    check_run_schema(results)
    for task in results["per_task"]:
        history = [row["val_accuracy"] for row in task["history"]]
        assert task["epochs_run"] == len(history) == 3
        assert task["best_epoch"] == 1 + history.index(max(history)) and task["val_accuracy"] == max(history)
        # lr_patience=1: halved after every epoch without a gain; every task starts again at 0.02.
        best, lr, expected = -1.0, 0.02, []
        for accuracy in history:
            best, lr = (accuracy, lr) if accuracy > best else (best, lr * 0.5)
            expected.append(lr)
        assert [row["lr"] for row in task["history"]] == pytest.approx(expected)
    assert any(row["lr"] < 0.02 for task in results["per_task"] for row in task["history"])
    last = results["per_task"][-1]
    assert learner.validation_accuracy(len(results["per_task"]) - 1) == last["val_accuracy"]
    assert results["validation"]["acc_per_task"][-1] == last["val_accuracy"]
    assert results["validation"]["acc"] == pytest.approx(sum(results["validation"]["acc_per_task"]) / 3)


def test_the_classic_grid_is_planned_and_chosen_on_validation():
    from adaqpacknet import experiments

    settings = {**SMALL, "replay_mem_size": 100}
    tune = {"ewc": {"ewc_lambda": [1, 100]}, "replay": {"replay_mem_size": [0.5, 1.25]}}
    configs = experiments.method_configs(["naive", "ewc", "replay"], [0, 1], settings, tune=tune)
    assert [(c.method, c.seed) for c in configs][:2] == [("naive", 0), ("naive", 1)]
    assert [c.ewc_lambda for c in configs if c.method == "ewc"] == [1.0, 1.0, 100.0, 100.0]
    assert [c.replay_mem_size for c in configs if c.method == "replay"] == [50, 50, 125, 125]
    assert len(experiments.method_configs(["ewc"], [0], settings, tune=None)) == 3  # the default grid
    # A float field given as an int is scaled as a float (0.5, not round(0.5) = 0).
    assert experiments.method_configs(["lwf"], [0], {**settings, "lwf_alpha": 1}, tune={"lwf": {"lwf_alpha": [0.5]}})[0].lwf_alpha == 0.5
    for bad, message in [
        ({"packnet": {"ewc_lambda": [1]}}, "only the classic strategies"),
        ({"ewc": {"heads": [1]}}, "not numeric Config fields"),
        ({"ewc": {"ewc_lambda": [0]}}, "must be a finite number > 0"),
        ({"ewc": {"ewc_lambda": []}}, "non-empty lists"),
    ]:
        with pytest.raises(ValueError, match=message):
            experiments.method_configs(["ewc"], [0], settings, tune=bad)

    def run(method, seed, value, validation, test):
        return {"method": method, "seed": seed, "scenario": "s", "config": {"ewc_lambda": value}, "validation": {"acc": validation}, "acc": test}

    runs = [run("naive", 0, 1.0, 50, 50), run("ewc", 0, 1.0, 70, 90), run("ewc", 0, 100.0, 80, 60), run("ewc", 1, 1.0, 75, 70), run("ewc", 1, 100.0, 75, 80)]
    kept, records = tuning.select_on_validation(runs, {"ewc": {"ewc_lambda": [1, 100]}})
    # Chosen on validation, never on test; on a tie the earlier point of the grid.
    assert kept == [runs[0], runs[2], runs[3]]
    assert [(r["seed"], r["chosen"]) for r in records] == [(0, {"ewc_lambda": 100.0}), (1, {"ewc_lambda": 1.0})]
    assert [p["test_acc"] for p in records[0]["points"]] == [90, 60]
    assert [r["edge"] for r in records] == [True, True]  # a two-point grid has no interior
    # A single-head strategy is tuned by its strategy's grid, as in T1.
    single = experiments.method_configs(["ewc_single_head"], [0], settings, tune={"ewc": {"ewc_lambda": [1, 100]}})
    assert [(c.label, c.ewc_lambda) for c in single] == [("ewc_single_head", 1.0), ("ewc_single_head", 100.0)]
    grid = [{"x": 1}, {"x": 2}, {"x": 3}]
    assert [tuning.at_grid_edge({"x": v}, grid) for v in (1, 2, 3)] == [True, False, True]
    assert not tuning.at_grid_edge({"x": 3}, [{"x": 3}])  # one value: no edge to speak of


def test_synaptic_intelligence_measures_importance_on_the_cpu():
    # avalanche-lib 0.6.0 records SI's weights as views on the CPU, so its importances stay 0 and
    # SI equals naive fine-tuning; the adapter mends that. A strong penalty must now change training.
    si, naive = learner_for(config(method="si", si_lambda=1e4)), learner_for(config(method="naive"))
    body = lambda learner: torch.cat([p.flatten() for p in learner.model.body.parameters()])  # noqa: E731
    for learner in (si, naive):
        learner.learn_task(0)
    # The first task has nothing to protect: same seed, same weights.
    assert torch.equal(body(si), body(naive))
    plugin = next(p for p in si.strategy.plugins if type(p).__name__ == "SynapticIntelligencePlugin")
    importances = torch.cat([v.data for v in plugin.ewc_data[1].values()])
    assert importances.gt(0).float().mean() > 0.5
    for learner in (si, naive):
        learner.learn_task(1)
    assert not torch.allclose(body(si), body(naive))


def test_packnet_owner_maps_match_avalanche_packnet_on_tie_free_weights():
    from adaqpacknet.classic import _avalanche, _packnet_network, avalanche_owner_maps
    from adaqpacknet.models import build_model
    from adaqpacknet.ownership import assign, free_masks
    from adaqpacknet.pruning import magnitude_keep_mask

    ours = learner_for(config(scenario="permuted_digits", method="packnet", quantizer="none", population=1, free_init="keep"))
    plain = build_model(ours.model_name, ours.scenario.input_shape, ours.scenario.classes_per_task)
    theirs = _packnet_network(plain, _avalanche())
    layers = prunable_layers(ours.model)
    generator = torch.Generator().manual_seed(0)
    for task in range(3):
        free = free_masks(ours.model)
        with torch.no_grad():
            for name, layer in layers.items():
                # Continuous random values: no two magnitudes tie, so the ranking is unique.
                fresh = torch.randn(raw_weight(layer).shape, generator=generator, dtype=torch.float64).float()
                raw_weight(layer).copy_(torch.where(free[name], fresh, raw_weight(layer)))
                target = getattr(theirs.body, name).wrappee.weight
                target.copy_(torch.where(free[name], fresh, target))
        # 0.5 of an even number of free weights: avalanche's floor and the package's round agree.
        assign(ours.model, {n: magnitude_keep_mask(raw_weight(l), free[n], 0.5) for n, l in layers.items()}, task + 1)
        theirs.activate_task(task)
        theirs.prune(0.5)
        theirs.freeze_pruned()
        mine, avalanche = owner_maps(ours.model), avalanche_owner_maps(theirs)
        assert set(mine) == set(avalanche)
        for name in mine:
            assert torch.equal(mine[name], avalanche[name]), (task, name)


def test_packnet_and_avalanche_packnet_reach_the_same_accuracy():
    # Same network, initial weights, schedule (train, prune half, retrain) and optimiser (Adam, fresh
    # per task). What differs: the batch order, and avalanche keeps its Adam state through pruning
    # where the package starts the retraining with a fresh one. The final ACC agrees within 1 pp.
    common = dict(scenario="permuted_fashion_mnist", num_tasks=2, epochs=1, finetune_epochs=1, batch_size=64, prune_ratios=[0.5])
    ours = learner_for(config(**common, method="packnet", quantizer="none", population=1, free_init="keep")).run()
    theirs = learner_for(config(**common, method="avalanche_packnet")).run()
    assert abs(ours["acc"] - theirs["acc"]) <= 1.0, (ours["acc_matrix"], theirs["acc_matrix"])
    assert theirs["bwt"] == 0.0 and ours["bwt"] == 0.0


def test_command_line_runs_a_baseline(tmp_path):
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "adaqpacknet", "run", "--out", str(tmp_path), "method=wsn", "scenario=split_digits",
               "num_tasks=2", "epochs=1", "batch_size=32", "progress=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["method"] == "wsn" and summary["bit_widths"] is None
    assert (tmp_path / "results.json").exists()


def _reloaded(method_config: Config, out_dir) -> dict:
    """The results of the finished run in ``out_dir``, loaded again by a fresh learner (no training)."""
    return learner_for(method_config).run(out_dir)


def test_classic_state_bytes_count_what_each_strategy_keeps(tmp_path):
    # state_bytes: kept beyond the bytes to predict to go on learning, measured from the plugins'
    # tensors after every task (per_task) and reported for the last one.
    memories = dict(replay_mem_size=60, gem_patterns_per_exp=30, agem_patterns_per_exp=30, agem_sample_size=16)
    runs, learners = {}, {}
    for method in ("naive", "replay", "ewc", "si", "lwf", "gem", "agem"):
        out = tmp_path / method if method == "replay" else None
        learners[method] = learner_for(config(method=method, **memories))
        runs[method] = learners[method].run(out)
        check_run_schema(runs[method])
        assert runs[method]["state_bytes"] == runs[method]["per_task"][-1]["state_bytes"], method
        assert runs[method]["state_bytes_definition"], method
    net = learners["naive"]
    sample = 4 * torch.Size(net.scenario.input_shape).numel() + 8 + 8  # float32 input, int64 label and task label
    params = sum(p.numel() for p in net.model.parameters())  # body and every head
    body = sum(p.numel() for p in net.model.body.parameters())
    per_task = {method: [task["state_bytes"] for task in run["per_task"]] for method, run in runs.items()}
    assert per_task["naive"] == [0, 0, 0]
    assert per_task["replay"] == [60 * sample] * 3  # mem_size samples: the buffer is full after the first task
    assert per_task["ewc"] == [t * 2 * 4 * params for t in (1, 2, 3)]  # saved weights + importances per task
    assert per_task["si"] == [3 * 4 * body] * 3  # reference weights, importances, path integral (heads excluded)
    assert per_task["lwf"] == [4 * params] * 3  # the teacher network
    assert per_task["gem"] == per_task["agem"] == [t * 30 * sample for t in (1, 2, 3)]
    # A finished run loaded again has no avalanche state: it reports what its last task measured,
    # and builds no avalanche strategy or benchmark (notebooks load hundreds of finished runs).
    reloaded = learner_for(config(method="replay", **memories))
    again = reloaded.run(tmp_path / "replay")
    assert reloaded._strategy is None and not reloaded.holds_cycles and learners["replay"].holds_cycles
    assert {k: v for k, v in again.items() if k != "resumed_in"} == {k: v for k, v in runs["replay"].items() if k != "resumed_in"}
    assert (again["state_bytes"], again["state_bytes_definition"]) == (runs["replay"]["state_bytes"], runs["replay"]["state_bytes_definition"])


def test_wsn_independent_joint_and_packnet_state_bytes(tmp_path):
    wsn_config = config(method="wsn", wsn_capacity=0.3, num_tasks=2)
    wsn = learner_for(wsn_config).run(tmp_path / "wsn")
    check_run_schema(wsn)
    body = wsn["weights"]["body"]
    selected = round(wsn["capacity_used"]["total"] * body)
    assert wsn["state_bytes"] == 4 * (body - selected) + 4 * body  # unselected float32 weights + every score
    assert _reloaded(wsn_config, tmp_path / "wsn")["state_bytes"] == wsn["state_bytes"]

    independent = learner_for(config(method="independent", num_tasks=2)).run()
    assert independent["state_bytes"] == 0

    joint_learner = learner_for(config(method="joint", num_tasks=2))
    joint = joint_learner.run(tmp_path / "joint")
    check_run_schema(joint)
    splits = [split for task in joint_learner.scenario.tasks for split in (task.train, task.val)]
    assert joint["state_bytes"] == sum(s.images.numel() + 8 * s.labels.numel() for s in splits)  # uint8 images, int64 labels
    assert _reloaded(config(method="joint", num_tasks=2), tmp_path / "joint")["state_bytes"] == joint["state_bytes"]

    # PackNet: everything is in the packed file and the free weights are re-initialised, unless kept.
    packnet = dict(method="packnet", quantizer="none", population=1, num_tasks=2)
    assert learner_for(config(**packnet)).run()["state_bytes"] == 0
    kept = learner_for(config(**packnet, free_init="keep"))
    results = kept.run()
    free = sum(int((owner == 0).sum()) for owner in owner_maps(kept.model).values())
    assert free > 0 and results["state_bytes"] == 4 * free


def test_a_classic_strategy_interrupted_mid_run_starts_over_as_a_fresh_run(tmp_path):
    # avalanche keeps a strategy's state outside the checkpoint: a run stopped after task 1 must not
    # resume from the checkpoint's network (nor keep its rows), but train as a fresh run does.
    config = Config.from_dict({**SMALL, "method": "naive", "num_tasks": 2})
    fresh = learner_for(config).run()
    interrupted = learner_for(config)
    interrupted.learn_task(0)
    interrupted.acc_matrix.append(interrupted.evaluate_seen())
    interrupted.save_checkpoint(tmp_path)
    again = learner_for(config).run(tmp_path)
    assert again["acc_matrix"] == fresh["acc_matrix"] and len(again["per_task"]) == 2
    check_run_schema(again)
