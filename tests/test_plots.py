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
