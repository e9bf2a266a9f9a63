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
