"""Figures are byte-identical when redrawn: no dates or random ids in the files."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from adaqpacknet import plots  # noqa: E402


def test_saved_figures_are_reproducible(tmp_path):
    plots.use_style()
    contents = []
    for attempt in range(2):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2], label="x")
        ax.legend()
        paths = plots.save(fig, tmp_path / f"run{attempt}" / "figure")
        plt.close(fig)
        contents.append([p.read_bytes() for p in paths])
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert contents[0] == contents[1]
    assert b"CreationDate" not in contents[0][0]


def test_figures_are_written_atomically_with_the_permissions_of_every_result(tmp_path):
    # One atomic write for the package (results.atomic_path): figures used to keep mkstemp's 0600.
    import os

    from adaqpacknet.results import write_text

    fig, ax = plt.subplots()
    ax.plot([1, 2], [2, 1])
    paths = plots.save(fig, tmp_path / "figure")
    plt.close(fig)
    write_text(tmp_path / "table.md", "| a |\n")
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in [*paths, tmp_path / "table.md"]} == {0o666 & ~umask}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.pdf", "figure.png", "table.md"]  # no temporary left


def test_the_spread_over_seeds_is_one_rule_for_tables_and_figures():
    import numpy as np
    import pandas as pd

    from adaqpacknet import metrics, tables

    values = [70.0, 72.0, 77.0]
    table = tables.mean_std(pd.DataFrame({"m": ["a"] * 3, "acc": values}), ["m"], {"acc": 3})
    assert table["acc"][0] == f"{np.mean(values):.3f} ± {metrics.std_over_seeds(values):.3f}"
    assert metrics.std_over_seeds(values) == np.std(values, ddof=1) and metrics.std_over_seeds([70.0]) == 0.0
