"""The grid: a profile's runs listed from its parameter files, trained in batches (one job each); GPU slots per job.

The engine itself (Snakemake through `make reproduce`) runs the smoke profile in
tests/test_notebooks.py, which also checks that the runs its notebooks read are the runs listed here.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from adaqpacknet import experiments, grid, runs
from adaqpacknet.config import Config
from adaqpacknet.results import CorruptFileError, code_version
from adaqpacknet.runs import run_dir

ROOT = Path(__file__).resolve().parent.parent
PROFILES = sorted(p.name for p in (ROOT / "notebooks" / "params").iterdir())


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_plans_valid_runs_in_their_notebooks_folders(profile):
    plan = grid.plan(profile)
    assert set(plan.notebooks) == {p.stem for p in (ROOT / "notebooks" / "params" / profile).glob("*.yaml")}
    assert plan.runs, profile
    for run in plan.runs.values():
        assert isinstance(run.config, Config)
        assert run_dir(run.config, plan.runs_root) == plan.runs_root / run.id
        assert run.notebooks and all(run.id in plan.notebooks[nb] for nb in run.notebooks)
    # Each run is listed once, however many notebooks read it; reports read no run directly.
    assert sum(len(ids) for ids in plan.notebooks.values()) == sum(len(r.notebooks) for r in plan.runs.values())
    assert all(not plan.notebooks[nb] for nb in plan.reports())


@pytest.mark.parametrize("profile", PROFILES)
def test_batches_hold_every_run_once_grouped_by_data_and_family(profile):
    plan = grid.plan(profile)
    batches = plan.batches
    assert sorted(r for ids in batches.values() for r in ids) == sorted(plan.runs)  # each run exactly once
    for batch, ids in batches.items():
        assert 1 <= len(ids) <= grid.MAX_BATCH_RUNS and re.fullmatch(r"\w+", batch), batch  # a rule name's part
        configs = [plan.runs[r].config for r in ids]
        assert len({runs.data_key(c) for c in configs}) == 1 and len({grid.family(c) for c in configs}) == 1, batch
        assert batch.startswith(f"{configs[0].scenario}_seed{configs[0].seed}_{grid.family(configs[0])}_")
        assert list(ids) == [r for r in plan.runs if r in ids]  # plan order inside a batch
        assert all(plan.batch_of[r] == batch for r in ids)
    # Deterministic, and as balanced as the cap allows: a group's batches differ by one run at most.
    assert grid.plan(profile).batches == batches
    sizes: dict[tuple, list[int]] = {}
    for ids in batches.values():
        config = plan.runs[ids[0]].config
        sizes.setdefault((runs.data_key(config), grid.family(config)), []).append(len(ids))
    assert all(max(n) - min(n) <= 1 for n in sizes.values())


def test_default_profile_shares_runs_between_notebooks():
    plan = grid.plan("default")
    readers = {r.notebooks for r in plan.runs.values()}
    assert ("10_permuted", "20_ablation_quantization") in readers  # 20 re-quantises 10's float runs
    assert ("11_split", "14_class_incremental") in readers  # 14 infers tasks over 11's sub-networks
    # 15 methods x 3 seeds, and each of the three tuned strategies (EWC, SI, LwF) at two more grid points.
    assert len(plan.notebooks["10_permuted"]) == (15 + 3 * 2) * 3
    # The equal-steps row is the sparsity ablation's "budget, P=1" run.
    single = [r for r in plan.runs.values() if r.config.label == "ada_qpacknet_budget_p1" and "10_permuted" in r.notebooks]
    assert len(single) == 3 and all("21_ablation_sparsity" in r.notebooks for r in single)
    # 21's reference and budget variants are 10's and 11's ada_qpacknet and ada_qpacknet_budget runs.
    assert ("10_permuted", "21_ablation_sparsity") in readers and ("11_split", "21_ablation_sparsity") in readers
    budget = [r for r in plan.runs.values() if r.config.label == "ada_qpacknet_budget" and "10_permuted" in r.notebooks]
    assert len(budget) == 3 and all("21_ablation_sparsity" in r.notebooks for r in budget)


def test_notebook_defaults_come_from_the_executed_notebook():
    defaults = experiments.notebook_defaults("10_permuted")
    assert defaults["scenario"] == "permuted_fashion_mnist" and defaults["seeds"] == [0, 1, 2]
    assert defaults["num_tasks"] == 0 and defaults["overrides"] == []
    # A notebook reads its parameters by the same names (parameters_of), and plans with the grid's function.
    namespace = {**defaults, "seeds": [4], "methods": ["naive"], "tune": {}, "unrelated": 1}
    parameters = experiments.parameters_of("10_permuted", namespace)
    assert set(parameters) == set(defaults) and parameters["seeds"] == [4]
    assert [(c.method, c.seed) for c in experiments.PLANNERS["10_permuted"](parameters)] == [("naive", 4)]


def write_profile(root: Path, name: str, files: dict[str, dict]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for stem, params in files.items():
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(params))
    return root


def test_bad_profiles_are_refused_naming_the_file_and_value(tmp_path):
    with pytest.raises(ValueError, match=r"no profile 'nope'.*profiles: default, paper"):
        grid.plan("nope")
    root = write_profile(tmp_path, "typo", {"10_permuted": {"scenario": "permuted_digits", "epoch": 2}})
    with pytest.raises(ValueError, match=r"10_permuted.yaml: \['epoch'\] are not parameters"):
        grid.plan("typo", root)
    root = write_profile(tmp_path, "badvalue", {"11_split": {"scenario": "split_digits", "methods": ["ewk"]}})
    with pytest.raises(ValueError, match=r"11_split.yaml: unknown method 'ewk'; valid choices: ada_qpacknet"):
        grid.plan("badvalue", root)
    root = write_profile(tmp_path, "empty", {})
    with pytest.raises(ValueError, match="has no parameter files"):
        grid.plan("empty", root)


def test_cli_lists_runs_and_refuses_an_unknown_job(tmp_path, capsys):
    # The listing through `python -m adaqpacknet` (the entry point itself); the refusals in-process
    # (cli.main, the same parser: argparse's error is SystemExit 2), saving a process start each.
    from adaqpacknet import cli

    listed = subprocess.run([sys.executable, "-m", "adaqpacknet", "runs", "smoke", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == set(grid.plan("smoke").runs)
    assert Config.from_dict(rows[0]["config"]) == grid.plan("smoke").runs[rows[0]["id"]].config
    assert {r["id"]: r["batch"] for r in rows} == grid.plan("smoke").batch_of
    for argv, message in (
        (["run", "--profile", "smoke", "--job", "no/such-run"], "profile 'smoke' has no run 'no/such-run'"),
        (["run", "--profile", "smoke", "--batch", "no_such_batch"], "profile 'smoke' has no batch 'no_such_batch'"),
        (["run", "--job", rows[0]["id"], "epochs=2"], "needs --profile"),
    ):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2 and message in capsys.readouterr().err, argv


def test_one_job_trains_exactly_its_run(tmp_path):
    root = write_profile(tmp_path, "tiny", {"10_permuted": {
        "scenario": "permuted_digits", "methods": ["ada_qpacknet"], "seeds": [3], "num_tasks": 1, "epochs": 1, "batch_size": 32,
    }})
    plan = grid.plan("tiny", root)
    (run_id,) = plan.runs
    try:
        done = subprocess.run(
            [sys.executable, "-m", "adaqpacknet", "run", "--profile", "tiny", "--params-root", str(root), "--job", run_id],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results = plan.runs_root / run_id / "results.json"
        assert json.loads(results.read_text())["config"]["seed"] == 3
        # Loading a finished run (what a notebook does) leaves its results untouched, byte for byte.
        before = (results.read_bytes(), results.stat().st_mtime_ns)
        from adaqpacknet.methods import learner_for

        learner_for(plan.runs[run_id].config).run(plan.runs_root / run_id)
        assert (results.read_bytes(), results.stat().st_mtime_ns) == before
        # The run records the code that trained it; a run of other code is named, not retrained.
        assert grid.stale_runs(plan) == {}
        recorded = json.loads(results.read_text())
        assert recorded["environment"]["code_version"] == code_version()
        recorded["environment"]["code_version"] = "an older library"
        results.write_text(json.dumps(recorded))
        assert grid.stale_runs(plan) == {run_id: "an older library"}
        listed = subprocess.run([sys.executable, "-m", "adaqpacknet", "runs", "tiny", "--params-root", str(root), "--stale"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and listed.stdout == f"{run_id}\tan older library\n", listed.stderr
        assert "1 finished runs of profile 'tiny' were trained by other code" in listed.stderr
    finally:
        import shutil

        shutil.rmtree(plan.runs_root, ignore_errors=True)


def test_a_batch_trains_each_run_exactly_as_alone(tmp_path):
    # Two classic runs on one scenario: alone, each on a scenario of its own (in this process: each
    # learner builds its data and float copies anew); then as one batch in one process (`--batch`),
    # where the second reuses the scenario and the float copies of its training images that the
    # first made. The accuracy matrices must be bit-identical.
    root = write_profile(tmp_path, "batched", {"11_split": {
        "scenario": "split_digits", "methods": ["naive", "ewc"], "tune": {}, "seeds": [0], "num_tasks": 2,
        "epochs": 1, "finetune_epochs": 0, "batch_size": 32,
    }})
    plan = grid.plan("batched", root)
    ((batch, ids),) = plan.batches.items()
    assert [plan.runs[r].config.method for r in ids] == ["naive", "ewc"]
    cli = [sys.executable, "-m", "adaqpacknet", "run"]
    by_profile = ["--profile", "batched", "--params-root", str(root)]

    def train(*args: str) -> str:
        done = subprocess.run([*cli, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    def results() -> dict[str, dict]:
        return {r: json.loads((plan.runs_root / r / "results.json").read_text()) for r in ids}

    try:
        for run_id in ids:
            runs.run(plan.runs[run_id].config, plan.runs_root / run_id)
        alone = results()
        shutil.rmtree(plan.runs_root)
        # As the workflow runs it: the plan written once, the batch read from it (validated again).
        plan_file = grid.write_plan(plan, tmp_path / "plans")
        assert grid.write_plan(plan, tmp_path / "plans") == plan_file and plan_file.name.startswith("batched-")
        train("--plan", str(plan_file), "--batch", batch)
        together = results()
        for run_id in ids:
            assert together[run_id]["acc_matrix"] == alone[run_id]["acc_matrix"], run_id
            assert together[run_id]["validation"] == alone[run_id]["validation"], run_id
        # A deleted results.json runs its batch again (Snakemake deletes the batch's other outputs
        # first): every run loads its final checkpoint and writes the same results, nothing trains.
        for run_id in ids:
            (plan.runs_root / run_id / "results.json").unlink()
        log = train(*by_profile, "--batch", batch)
        assert log.count("loaded finished run") == len(ids) and "trained in" not in log
        assert results() == together
    finally:
        shutil.rmtree(plan.runs_root, ignore_errors=True)


def test_gpu_slots_give_each_concurrent_job_its_own_gpu(tmp_path):
    # A fake machine with two GPUs: three jobs at once; two take slots 0 and 1, the third waits
    # until one of them is done, then takes the freed slot.
    command = [sys.executable, "-m", "adaqpacknet.gpu_slots", "--slots", "0,1", "--lock-dir", str(tmp_path / "locks"), "--"]
    job = "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], time.time(), flush=True); time.sleep(float(sys.argv[1]))"
    started = [subprocess.Popen([*command, sys.executable, "-c", job, "1.5"], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    waiting = subprocess.Popen([*command, sys.executable, "-c", job, "0"], stdout=subprocess.PIPE, text=True)
    first = [p.communicate(timeout=30)[0].split() for p in started]
    last = waiting.communicate(timeout=30)[0].split()
    assert sorted(slot for slot, _ in first) == ["0", "1"]
    assert last[0] in ("0", "1") and float(last[1]) >= min(float(t) for _, t in first) + 1.0
    bad = subprocess.run([*command[:3], "--slots", "a,b", "--", "true"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "expected comma-separated GPU ids" in bad.stderr


def test_make_reproduce_with_gpus_gives_every_job_a_gpu_slot(tmp_path):
    # The wiring of `make reproduce GPUS=0,1` (a dry run: nothing executes): at most two jobs hold
    # a GPU at once, and every train and experiment job runs under the slot wrapper.
    root = write_profile(tmp_path, "gpus", {
        "10_permuted": {"scenario": "permuted_digits", "methods": ["ada_qpacknet"], "seeds": [0, 1], "num_tasks": 1},
        "90_tables": {},
    })
    dry = subprocess.run(
        ["make", "--no-print-directory", "reproduce", "PROFILE=gpus", f"PARAMS_ROOT={root}", f"RESULTS_ROOT={tmp_path / 'results'}",
         "GPUS=0,1", "SNAKEMAKE_ARGS=--dry-run --printshellcmds"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "--resources gpu=2 --set-resources train:gpu=1 experiment:gpu=1" in dry.stdout
    wrapped = [line for line in dry.stdout.splitlines() if "-m adaqpacknet.gpu_slots --slots 0,1 --" in line]
    assert len(wrapped) == 2 + 1  # two runs and the experiment notebook; the report needs no GPU


def test_a_bad_ablation_variant_is_named_before_any_run():
    from adaqpacknet.experiments import sparsity_configs

    with pytest.raises(ValueError, match=r"scenario 'permuted_digits', variant 'wide': capacity_budget=2.0 is outside"):
        sparsity_configs({"permuted_digits": {}}, {"ok": {}, "wide": {"capacity_rule": "budget", "capacity_budget": 2.0}}, [0], {})
    found = sparsity_configs({"permuted_digits": {}, "split_digits": {"batch_size": 16}}, {"a": {}, "b": {"population": 1}}, [0, 1], {})
    assert [(name, c.scenario, c.seed) for name, c in found][:3] == [("a", "permuted_digits", 0), ("a", "permuted_digits", 1), ("b", "permuted_digits", 0)]
    assert all(c.batch_size == 16 for name, c in found if c.scenario == "split_digits")


def test_run_configs_builds_each_scenario_once_and_keeps_the_configs_order(tmp_path, monkeypatch):
    # A notebook lists its runs method by method, seed by seed: run_configs goes through them grouped
    # by data (one Scenario built per seed here, not one per run) and returns them in their order.
    built = []
    real = runs.scenario_of
    monkeypatch.setattr(runs, "scenario_of", lambda config: built.append(config.seed) or real(config))
    small = dict(scenario="split_digits", num_tasks=2, epochs=1, finetune_epochs=0, batch_size=32, progress=False, device="cpu")
    configs = [Config.from_dict({**small, "method": method, "seed": seed}) for method in ("naive", "independent") for seed in (0, 1)]
    results = runs.run_configs(configs, tmp_path)
    assert built == [0, 1]
    assert [(r["method"], r["seed"]) for r in results] == [("naive", 0), ("naive", 1), ("independent", 0), ("independent", 1)]
    assert results == runs.run_configs(configs, tmp_path)  # loaded again: the same results, in order


def test_cluster_resources_follow_each_runs_steps_method_and_data():
    # SLURM's -t and --mem per batch (grid.batch_resources), from estimates per run: more steps,
    # a costlier method or more data ask for more; a batch sums its runs' times, takes their largest memory.
    paper = grid.plan("paper")
    asks = {(r.config.scenario, r.config.label): grid.run_resources(r.config) for r in paper.runs.values()}
    gem, naive, ada = asks[("tinyimagenet", "gem")], asks[("tinyimagenet", "naive")], asks[("tinyimagenet", "ada_qpacknet")]
    assert gem["runtime"] > 5 * naive["runtime"] and ada["runtime"] > naive["runtime"]  # GEM: a QP and a gradient per earlier task
    assert gem["mem_mb"] == naive["mem_mb"] > ada["mem_mb"]  # the classic strategies' float copies of the images
    assert asks[("permuted_mnist", "naive")]["runtime"] < naive["runtime"]
    for batch, ids in paper.batches.items():
        each = [grid.run_resources(paper.runs[i].config) for i in ids]
        assert sum(e["runtime"] for e in each) <= grid.MAX_BATCH_MINUTES or len(ids) == 1  # a job a partition limit admits
        assert grid.batch_resources(paper, batch) == {"runtime": sum(e["runtime"] for e in each), "mem_mb": max(e["mem_mb"] for e in each)}


def test_every_batch_job_asks_for_its_own_resources_and_more_on_a_retry(tmp_path):
    root = write_profile(tmp_path, "sized", {
        "10_permuted": {"scenario": "permuted_digits", "methods": ["ada_qpacknet", "naive"], "seeds": [0], "num_tasks": 2, "tune": {}},
    })
    plan = grid.plan("sized", root)
    dry = subprocess.run(
        ["make", "--no-print-directory", "reproduce", "PROFILE=sized", f"PARAMS_ROOT={root}", f"RESULTS_ROOT={tmp_path / 'results'}",
         "SNAKEMAKE_ARGS=--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    for batch in plan.batches:
        asks = grid.batch_resources(plan, batch)
        job = dry.stdout[dry.stdout.index(f"rule train_{batch}:"):]
        resources = job[job.index("resources:"):].splitlines()[0]
        assert f"mem_mb={asks['mem_mb']}" in resources and f"runtime={asks['runtime']}" in resources, resources


def test_the_code_version_follows_the_code_runs_depend_on(tmp_path, monkeypatch):
    from adaqpacknet import results

    shutil.copytree(ROOT / "adaqpacknet", tmp_path / "adaqpacknet", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(results, "PACKAGE_ROOT", tmp_path)

    def version() -> str:
        results.code_version.cache_clear()
        return results.code_version()

    try:
        first = version()
        with open(tmp_path / "adaqpacknet" / "tables.py", "a") as handle:
            handle.write("# tables only read finished runs\n")
        assert version() == first
        with open(tmp_path / "adaqpacknet" / "training.py", "a") as handle:
            handle.write("# any edit of a module runs use\n")
        assert version() != first
    finally:
        results.code_version.cache_clear()


def test_a_plan_file_that_cannot_be_trusted_is_refused_by_name(tmp_path):
    plan = grid.plan("smoke")
    path = grid.write_plan(plan, tmp_path)
    batch = next(iter(plan.batches))
    profile, found = grid.read_batch(path, batch)
    assert profile == "smoke" and [r.id for r in found] == list(plan.batches[batch])
    assert [r.config for r in found] == [plan.runs[i].config for i in plan.batches[batch]]
    with pytest.raises(ValueError, match=r"has no batch 'nope'"):
        grid.read_batch(path, "nope")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema_version": 1, "profile": "smoke", "batches": {batch: [{"id": "x"}]}}))
    with pytest.raises(CorruptFileError, match=r"broken.json is not a plan file"):
        grid.read_batch(broken, batch)
    changed = json.loads(path.read_text())
    changed["batches"][batch][0]["config"]["epochs"] = 0
    broken.write_text(json.dumps(changed))
    with pytest.raises(ValueError, match=r"epochs=0 must be >= 1"):
        grid.read_batch(broken, batch)
    changed = json.loads(path.read_text())
    changed["batches"][batch][0]["id"] = "elsewhere/../../x"
    broken.write_text(json.dumps(changed))
    with pytest.raises(CorruptFileError, match=r"run 'elsewhere/../../x' does not name its config's folder"):
        grid.read_batch(broken, batch)
    with pytest.raises(ValueError, match=r"no plan file"):
        grid.read_batch(tmp_path / "missing.json", batch)
