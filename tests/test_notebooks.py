"""Notebooks: paired, stripped, parameterised consistently, and run headless end to end (smoke)."""

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import yaml

from adaqpacknet import grid
from adaqpacknet.cli import check_profile_data
from adaqpacknet.config import Config
from adaqpacknet.experiments import read_notebook_results
from adaqpacknet.runs import run_dir
from adaqpacknet.results import check_run_schema

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
PROFILES = sorted(p.name for p in (ROOT / "notebooks" / "params").iterdir())
EXPECTED_TABLES = ["t1_task_incremental", "t1b_sparsity_search", "t1c_tuning", "t2_quantization", "t3_cost", "t4_class_incremental", "t4b_class_incremental_batches", "t5_storage"]
EXPECTED_FIGURES = [
    # one accuracy-matrix figure per setting of the smoke profile (scenario_model)
    "accuracy_matrices_permuted_digits_mlp_3tasks", "accuracy_matrices_permuted_digits_mlp_2tasks",
    "accuracy_matrices_split_digits_small_conv_3tasks",
    "accuracy_matrices_split_digits_tinyimagenet_conv_2tasks",
    "final_accuracy_per_task", "capacity_by_task", "bits_and_prune_ratios",
    "accuracy_vs_size", "accuracy_vs_bits", "storage", "task_confusion", "capacity_ablation",
]


def parameters_of(script: Path) -> dict[str, str]:
    """name -> annotation of the notebook's parameters cell."""
    notebook = jupytext.read(script)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{script.name}: exactly one cell tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    assert all(isinstance(node, ast.AnnAssign) for node in tree.body), f"{script.name}: every parameter typed"
    return {node.target.id: ast.unparse(node.annotation) for node in tree.body}


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_paired_stripped_and_claims_something(script):
    paired = script.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} missing: run `make notebooks`"
    stored = nbformat.read(paired, as_version=4)
    source = jupytext.read(script)
    assert [c.source for c in stored.cells] == [c.source for c in source.cells], f"{paired.name} is out of sync: run `make notebooks`"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{paired.name} has outputs"
    assert stored.cells[0].cell_type == "markdown" and "**Claim.**" in stored.cells[0].source
    params = parameters_of(script)
    assert {"profile", "results_path", "progress"} <= set(params)
    # `papermill --help-notebook` lists them: papermill skips a line with two "=" (a comment's
    # `"" = default` hid results_path from every notebook's help) and cannot read a union type.
    readable = {name for name, annotation in params.items() if "|" not in annotation}
    assert readable <= set(papermill.inspect_notebook(str(paired))), f"{paired.name}: papermill cannot read some parameters"


TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict, "dict | None": (dict, type(None))}


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_that_builds_a_scenario_takes_its_data_root(script):
    # Regression: 00_method_tour had no data_root and built its Config from the kernel's working
    # directory (notebooks/), so a profile's data folder was never used there.
    params = parameters_of(script)
    if "scenario" in params:
        assert params.get("data_root") == "str", f"{script.name}: no data_root parameter"
        source = script.read_text()
        # Passed on by name, or with every parameter (experiments.parameters_of -> run_settings).
        assert "data_root=data_root" in source or f'parameters_of("{script.stem}", globals())' in source, f"{script.name}: data_root is not passed on"


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_parameters_exist_and_have_the_declared_types(profile):
    for path in sorted((ROOT / "notebooks" / "params" / profile).glob("*.yaml")):
        script = ROOT / "notebooks" / f"{path.stem}.py"
        assert script.exists(), f"{path} has no notebook {script.name}"
        declared = parameters_of(script)
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            assert name in declared, f"{path}: {name!r} is not a parameter of {script.name} ({sorted(declared)})"
            assert isinstance(value, TYPES[declared[name]]), f"{path}: {name}={value!r} is not a {declared[name]}"


def test_every_profile_covers_the_report_notebooks():
    for profile in PROFILES:
        stems = {p.stem for p in (ROOT / "notebooks" / "params" / profile).glob("*.yaml")}
        assert {"90_tables", "91_figures", "10_permuted", "11_split"} <= stems, profile


def make(*args, **kwargs):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=1200, **kwargs)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """`make reproduce PROFILE=smoke` through the engine, into a fresh results folder.

    The parameter files are copied to a temporary params root, so that tests may touch them; the
    runs go to runs/smoke as usual (finished runs from an earlier session are reused).
    """
    tmp = tmp_path_factory.mktemp("smoke")
    shutil.copytree(ROOT / "notebooks" / "params" / "smoke", tmp / "params" / "smoke")
    args = ("PROFILE=smoke", f"PARAMS_ROOT={tmp / 'params'}", f"RESULTS_ROOT={tmp / 'results'}")
    done = make("reproduce", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp / "results" / "smoke", done, args


def test_smoke_profile_runs_every_notebook_headless(smoke_results):
    folder, done, _ = smoke_results
    stems = {p.stem for p in (ROOT / "notebooks" / "params" / "smoke").glob("*.yaml")}
    assert {p.stem for p in folder.glob("*.json")} == stems
    for nb in read_notebook_results(folder):
        assert {"schema_version", "notebook", "profile", "parameters"} <= set(nb)
        assert nb["profile"] == "smoke"
        for run in nb.get("runs", []) + nb.get("variants", []) + ([nb["tour_run"]] if "tour_run" in nb else []):
            check_run_schema(run)
            if run["method"] in ("ada_qpacknet", "ada_qpacknet_float", "packnet", "wsn", "independent"):
                assert run["bwt"] == 0.0, run["method"]  # isolation: no task changes another's weights
            if run["method"] == "ada_qpacknet":
                assert run["packed_bytes"] < run["dense_float32_bytes"]
    methods = {run["method"] for nb in read_notebook_results(folder) for run in nb.get("runs", [])}
    assert {"packnet", "wsn", "independent", "joint", "naive", "ewc", "si", "lwf", "replay", "gem", "agem"} <= methods
    # Class-incremental evaluation: task inference for the sub-network methods, one head for the classic ones.
    records = json.loads((folder / "14_class_incremental.json").read_text())["class_incremental"]
    assert {(r["method"], r["inference"]) for r in records} >= {
        ("ada_qpacknet", "entropy"), ("wsn", "mahalanobis"), ("packnet", "infomax@16"), ("replay_single_head", "one_head")
    }
    assert {r["scenario"] for r in records} == {"split_digits", "permuted_digits"}
    for record in records:
        assert all(c <= g for c, g in zip(record["accuracy_per_task"], record["task_given_accuracy_per_task"]))
    tour = json.loads((folder / "00_method_tour.json").read_text())
    assert tour["packed_logits_identical"] is True
    # Headless job logs carry one line per epoch, no progress-bar redraws.
    logs = "".join(p.read_text() for p in (ROOT / "build" / "logs" / "smoke").rglob("*.log"))
    assert "epoch 1/1" in logs and "\r" not in logs


def test_the_notebooks_read_exactly_the_runs_the_grid_trains(smoke_results):
    # The grid plans the runs without executing a notebook: it must plan what they really read.
    folder, _, args = smoke_results
    plan = grid.plan("smoke", args[1].split("=", 1)[1])
    read = set()
    for nb in read_notebook_results(folder):
        configs = [r["config"] for r in nb.get("runs", []) + nb.get("variants", [])]
        configs += [r["config"] for r in nb.get("class_incremental", [])]
        # A tuned strategy's other grid points: the chosen run's config at each point's values.
        for record in nb.get("tuning", []):
            chosen = next(
                r for r in nb.get("runs", []) + nb.get("class_incremental", [])
                if (r["scenario"], r["method"], r["seed"]) == (record["scenario"], record["method"], record["seed"])
            )
            configs += [{**chosen["config"], **point["values"]} for point in record["points"]]
        read |= {run_dir(Config.from_dict(c), plan.runs_root).relative_to(plan.runs_root).as_posix() for c in configs}
    assert read == set(plan.runs)


def test_smoke_profile_builds_every_table_and_figure(smoke_results):
    folder, _, _ = smoke_results
    tables = json.loads((folder / "90_tables.json").read_text())["tables"]
    figures = json.loads((folder / "91_figures.json").read_text())["figures"]
    assert sorted(tables) == sorted(["headline", "t1", "t2", "t3", "t4", "t4b", "t5", "sparsity", "tuning", "page"])
    assert sorted(figures) == sorted(EXPECTED_FIGURES)
    for name in EXPECTED_TABLES:
        for suffix in (".md", ".tex"):
            assert (ROOT / "tables" / "smoke" / f"{name}{suffix}").stat().st_size > 0
    # The results page: every table under its name, every figure by a link that resolves.
    page = ROOT / "tables" / "smoke" / "RESULTS.md"
    text = page.read_text()
    for name in ("T1", "T1b", "T1c", "T2", "T3", "T4", "T4b", "T5"):
        assert f"\n## {name}\n" in text, name
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == len(EXPECTED_FIGURES)
    assert all((page.parent / link).is_file() for link in links)
    for name in EXPECTED_FIGURES:
        for suffix in (".pdf", ".png"):
            assert (ROOT / "figures" / "smoke" / f"{name}{suffix}").stat().st_size > 0


def planned_jobs(args, *extra) -> list[str]:
    """``rule:output`` of every job a dry run of `make reproduce` would execute."""
    dry = make("reproduce", *args, "SNAKEMAKE_ARGS=--dry-run --quiet progress")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    jobs, rule = [], None
    for line in (dry.stdout + dry.stderr).splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("output:") and rule:
            jobs.append(f"{rule}:{line.split(None, 1)[1]}")
            rule = None
    return jobs


def test_nothing_stale_means_nothing_runs_and_a_stale_input_reruns_only_its_readers(smoke_results):
    # What re-executes is read from dry runs (a notebook costs a kernel start, the reports ~60 s);
    # then only the deleted run's batch executes, restoring it (the smoke run above executed every
    # notebook and report through the same rules).
    folder, _, args = smoke_results
    again = make("reproduce", *args)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    # A changed parameter file re-executes that notebook, then the tables and figures; no run trains.
    # (Snakemake compares contents too: a file touched without a change reruns nothing.)
    params = Path(args[1].split("=", 1)[1]) / "smoke" / "20_ablation_quantization.yaml"
    params.write_text(params.read_text() + "# a comment changes the file, not its runs\n")
    jobs = planned_jobs(args)
    assert sorted(j.split(":")[0] + ":" + Path(j.split(":", 1)[1]).stem for j in jobs if not j.startswith("localrule")) == [
        "experiment:20_ablation_quantization", "report:90_tables", "report:91_figures"]
    # A deleted run: its batch trains again (its other runs load from their checkpoints), then its
    # readers, and the changed notebook as before.
    plan = grid.plan("smoke", args[1].split("=", 1)[1])
    run_id = next(i for i, r in plan.runs.items() if r.notebooks == ("11_split", "12_five_datasets", "14_class_incremental"))
    (plan.runs_root / run_id / "results.json").unlink()
    jobs = planned_jobs(args)
    trains = [j for j in jobs if j.startswith("train_")]
    assert [j.split(":")[0] for j in trains] == [f"train_{plan.batch_of[run_id]}"]
    assert str(plan.runs_root.relative_to(ROOT) / run_id / "results.json") in trains[0]
    assert sorted(j.split(":")[0] for j in jobs if not j.startswith(("localrule", "train_"))) == ["experiment"] * 4 + ["report"] * 2
    assert {Path(j.split(":", 1)[1]).stem for j in jobs if j.startswith("experiment")} == {
        "11_split", "12_five_datasets", "14_class_incremental", "20_ablation_quantization"}
    restored = plan.runs_root / run_id / "results.json"
    done = make("reproduce", *args, f"TARGETS={restored.relative_to(ROOT)}")  # as Snakemake names its outputs
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert restored.is_file()


def test_a_bad_profile_stops_make_before_any_job_and_leaves_no_result(tmp_path):
    params = tmp_path / "params" / "broken"
    params.mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "params" / "smoke" / "11_split.yaml", params / "11_split.yaml")
    with open(params / "11_split.yaml", "a") as handle:
        handle.write("overrides: ['epochs=0']\n")
    target = tmp_path / "results" / "broken" / "11_split.json"
    done = make("reproduce", f"TARGETS={target}", "PROFILE=broken", f"PARAMS_ROOT={tmp_path / 'params'}", f"RESULTS_ROOT={tmp_path / 'results'}")
    assert done.returncode != 0
    assert "epochs=0 must be >= 1" in done.stdout + done.stderr
    assert not target.exists()


def test_a_failing_job_leaves_no_result_and_the_others_go_on(tmp_path):
    # A notebook that fails inside its kernel (after its run trained): its results JSON is not
    # written; the notebook beside it, which needs nothing of it, still completes.
    params = tmp_path / "params" / "failing"
    params.mkdir(parents=True)
    (params / "00_method_tour.yaml").write_text("scenario: permuted_digits\nepochs: 1\nbatch_size: 32\n")
    (params / "20_ablation_quantization.yaml").write_text(
        "scenario: permuted_digits\nseeds: [0]\nnum_tasks: 1\nepochs: 1\nbatch_size: 32\nquantizers: [no_such_quantizer]\n")
    results = tmp_path / "results" / "failing"
    try:
        done = make("reproduce", "PROFILE=failing", f"PARAMS_ROOT={tmp_path / 'params'}", f"RESULTS_ROOT={tmp_path / 'results'}")
    finally:
        shutil.rmtree(ROOT / "runs" / "failing", ignore_errors=True)
    assert done.returncode != 0
    assert "no_such_quantizer" in done.stdout + done.stderr  # --show-failed-logs prints the job's log
    assert not (results / "20_ablation_quantization.json").exists()
    assert (results / "00_method_tour.json").is_file()


def test_missing_data_stops_a_profile_before_training(tmp_path, capsys):
    profile = tmp_path / "paper"
    profile.mkdir()
    for path in (ROOT / "notebooks" / "params" / "paper").glob("*.yaml"):
        params = yaml.safe_load(path.read_text()) or {}
        params["data_root"] = str(tmp_path / "nothing-here")
        (profile / path.name).write_text(yaml.safe_dump(params))
    assert check_profile_data(profile) == 1
    err = capsys.readouterr().err
    for dataset in ("mnist", "cifar100", "tinyimagenet"):
        assert f"Dataset '{dataset}' not found" in err
