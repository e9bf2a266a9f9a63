"""The generated results page and the generated blocks of hand-written pages."""

import pytest

from adaqpacknet import report
from adaqpacknet.results import PACKAGE_ROOT

PAGE = """# Title
text before
<!-- table:t1 -->
old numbers
more old numbers
<!-- /table -->
text between
<!-- table:t2 -->
<!-- /table -->
text after
"""


def test_blocks_get_their_tables_and_nothing_else_changes():
    filled = report.fill_blocks(PAGE, {"t1": "T1: caption\n\n| a |\n|---|\n| 1 |\n", "t2": "T2\n", "t3": "unused"})
    assert filled == (
        "# Title\ntext before\n<!-- table:t1 -->\nT1: caption\n\n| a |\n|---|\n| 1 |\n<!-- /table -->\n"
        "text between\n<!-- table:t2 -->\nT2\n<!-- /table -->\ntext after\n"
    )
    assert report.fill_blocks(filled, {"t1": "T1: caption\n\n| a |\n|---|\n| 1 |\n", "t2": "T2\n"}) == filled


def test_a_block_without_its_table_is_refused_rather_than_left_stale():
    with pytest.raises(ValueError, match="no table for the block.*t2; tables: t1"):
        report.fill_blocks(PAGE, {"t1": "x"})


@pytest.mark.parametrize("path", ["../outside.md", "/etc/passwd", "tables/../../x.md"])
def test_report_paths_stay_inside_the_repository(path):
    with pytest.raises(ValueError, match="outside the repository"):
        report.inside_repository(path, "readme")
    assert report.inside_repository("tables/smoke/RESULTS.md", "results_page") == PACKAGE_ROOT.resolve() / "tables/smoke/RESULTS.md"


def _run(seed, commit="abc1234"):
    env = {
        "python": "3.11.7", "device": "cpu", "device_name": "x86_64", "cpu_count": 2, "torch_threads": 1,
        "git_commit": commit, "packages": {"torch": "2.14.1", "kmeans1d": "0.5.0", "avalanche-lib": None, "adaqpacknet": "0.1.0"},
    }
    return {
        "scenario": "s", "model": "mlp", "num_tasks": 2, "method": "ada_qpacknet", "seed": seed, "acc": 90.0 + seed,
        "environment": env, "config": {"seed": seed},
    }


def test_results_page_lists_provenance_tables_in_order_and_relative_figure_links(tmp_path):
    (tmp_path / "t2.md").write_text("T2: second caption\n\n| b |\n")
    (tmp_path / "t1b.md").write_text("T1b: ablation\n\n| c |\n")
    (tmp_path / "t1.md").write_text("T1: first caption\n\n| a |\n")
    # Seed 0's run also stands in an ablation's variants under another label: it is one run.
    notebooks = [{"notebook": "10", "runs": [_run(0), _run(1, "def5678")]}, {"notebook": "21", "variants": [{**_run(0), "variant": "reference"}]}]
    tables = {"t2": tmp_path / "t2.md", "t1b": tmp_path / "t1b.md", "t1": tmp_path / "t1.md"}
    figures = {"storage": ["figures/p/storage.pdf", "figures/p/storage.png"]}
    page = report.results_page("p", notebooks, tables, figures, PACKAGE_ROOT / "tables" / "p" / "RESULTS.md")
    assert "- 2 runs in T1-T3, T1b and T5 (T4 adds the single-head runs of notebook 14); seeds 0, 1" in page
    assert "commit abc1234, def5678" in page
    assert "Python 3.11.7; kmeans1d 0.5.0, torch 2.14.1" in page  # a package no run had is not listed
    assert page.index("## T1\n\nfirst caption\n\n| a |") < page.index("## T1b\n\nablation") < page.index("## T2\n")
    assert "![storage](../../figures/p/storage.png)" in page
    assert str(PACKAGE_ROOT) not in page and str(tmp_path) not in page


def _t1_run(method: str, seed: int, acc: float, **config):
    """A run's results as T1 reads them: 2 tasks of 1000 training samples, batch 100."""
    config = {"method": method, "epochs": 2, "finetune_epochs": 1, "population": 1, "batch_size": 100, "eval_batch_size": 1000,
              "replay_mem_size": 500, **config}
    trainings = config["population"] if method == "ada_qpacknet" else 1
    return {
        "scenario": "permuted_digits", "model": "mlp", "num_tasks": 2, "method": method, "seed": seed, "config": config,
        "acc": acc, "bwt": 0.0, "forgetting": 0.0, "model_bytes": 2048, "dense_float32_bytes": 4096, "state_bytes": 1024 * seed,
        "timings": {}, "sequential": True, "train_samples": [1000, 1000],
        "per_task": [{"epochs_run": 3 * trainings}, {"epochs_run": 3 * trainings}],
    }


def test_t1_states_each_methods_budget_and_marks_choices_at_the_grids_end():
    from adaqpacknet import tables

    runs = [_t1_run("ada_qpacknet", 0, 80.0, population=2), _t1_run("replay", 0, 70.0), _t1_run("ewc", 0, 60.0, ewc_lambda=100.0),
            _t1_run("ewc", 1, 62.0, ewc_lambda=10.0)]
    tuning = [
        {"scenario": "permuted_digits", "method": "ewc", "seed": seed, "chosen": {"ewc_lambda": value}, "edge": edge,
         "points": [{"values": {"ewc_lambda": v}, "validation_acc": 1.0, "test_acc": 1.0} for v in (1.0, 10.0, 100.0)]}
        for seed, value, edge in [(0, 100.0, True), (1, 10.0, False)]
    ]
    t1 = tables.table_t1(tables.runs_frame([{"notebook": "10", "runs": runs, "tuning": tuning}])).set_index("method")
    # Steps per task: epochs run x batches per epoch; Ada-QPacknet's two candidates count twice.
    assert t1.loc["ada_qpacknet", "steps/task"] == 2 * 3 * 10 and t1.loc["replay", "steps/task"] == 3 * 10
    assert t1.loc["ada_qpacknet", "epochs"] == "(2+1)x2" and t1.loc["replay", "epochs"] == "3"
    assert t1.loc["ewc", "epochs"] == "3, x3 grid"
    assert (t1.loc["replay", "memory"], t1.loc["ewc", "memory"]) == ("500", "n/a")
    assert t1.loc["ewc", "tuned"] == "100*; 10" and t1.loc["replay", "tuned"] == "n/a"
    assert t1.loc["ewc", "state_kib"] == "0.5 ± 0.7"  # 0 and 1 KiB


def test_t4_keeps_per_sample_and_labelled_batch_protocols_apart():
    from adaqpacknet import tables

    def record(method, criterion, protocol, batch):
        return {"scenario": "split_digits", "model": "mlp", "num_tasks": 2, "method": method, "criterion": criterion, "protocol": protocol,
                "batch_size": batch, "seed": 0, "acc": 50.0, "bwt": 0.0, "forgetting": 0.0, "task_id_accuracy": 60.0,
                "task_given_accuracy_per_task": [90.0, 90.0], "forward_passes_per_sample": 2, "seconds_per_batch": 0.01,
                "config": {"method": method.removesuffix("_single_head"), "epochs": 2, "finetune_epochs": 1, "population": 1,
                           "replay_mem_size": 500}}

    frame = tables.class_incremental_frame([{"class_incremental": [
        record("ada_qpacknet", "mahalanobis", "per_sample", 1), record("ada_qpacknet", "mahalanobis", "per_batch", 16),
        record("replay_single_head", "one_head", "per_sample", 1),
    ]}])
    per_sample, batches = tables.table_t4(frame), tables.table_t4(frame, protocol="batch")
    assert list(per_sample["method"]) == ["ada_qpacknet", "replay_single_head"] and set(per_sample["protocol"]) == {"per sample"}
    assert list(batches["protocol"]) == ["batch of 16"]
    assert list(per_sample["memory"]) == ["n/a", "500"] and list(per_sample["epochs"]) == ["2+1", "3"]
    with pytest.raises(ValueError, match="protocol='all'"):
        tables.table_t4(frame, protocol="all")
