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


def test_the_task_heatmap_draws_what_seaborn_draws_and_numbers_forty_tasks_without_overlap(tmp_path):
    # seaborn.heatmap drew the whole figure once per panel; plots draws the same cells itself.
    import numpy as np
    import seaborn as sns

    plots.use_style()
    rng = np.random.default_rng(0)
    matrix = np.tril(rng.uniform(0, 100, (5, 5)))
    matrix[np.triu_indices(5, 1)] = np.nan
    drawn = []
    for draw in (
        lambda ax: sns.heatmap(matrix, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f", annot_kws={"size": 6},
                               cbar=False, xticklabels=range(1, 6), yticklabels=range(1, 6), square=True),
        lambda ax: plots._percent_heatmap(ax, matrix, annotate=True, fontsize=6),
    ):
        fig, ax = plt.subplots(figsize=(2, 2))
        draw(ax)
        drawn.append(plots.save(fig, tmp_path / f"heatmap{len(drawn)}")[1].read_bytes())
        plt.close(fig)
    assert drawn[0] == drawn[1]

    # TinyImageNet's 40 tasks, as accuracy_matrices draws them (4 panels a row, page width): task 1
    # and every 10th numbered, no two labels closer than 2 points.
    T = 40
    run = {"scenario": "split_tinyimagenet", "model": "tinyimagenet_conv", "num_tasks": T, "seed": 0, "acc": 50.0, "bwt": 0.0,
           "acc_matrix": [[50.0] * (i + 1) for i in range(T)]}
    notebook = {"notebook": "13_tinyimagenet", "runs": [{**run, "method": m} for m in ("ada_qpacknet", "packnet", "wsn", "naive")]}
    (fig,) = plots.accuracy_matrices([notebook]).values()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:4]:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            assert [t.get_text() for t in labels] == ["1", "10", "20", "30", "40"]
            boxes = [t.get_window_extent(renderer).padded(2 * fig.dpi / 72 / 2) for t in labels]
            assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)
