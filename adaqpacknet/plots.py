"""Figures from results files, in one style, saved as PDF and PNG that are identical on rerun.

The style lives here, not in a ``matplotlibrc`` (matplotlib reads that from the working
directory, which differs between Jupyter, papermill and the command line).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import seaborn as sns
from seaborn.utils import relative_luminance

from .methods import HEADLINE, stores_quantized
from .metrics import std_over_seeds
from .results import atomic_path
from .tables import setting, unique_runs

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by publishers
    "svg.hashsalt": "adaqpacknet",
}


def use_style() -> None:
    """Seaborn's theme first, then the package's settings on top of it."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    plt.rcParams.update(STYLE)


def save(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """``<stem>.pdf`` and ``<stem>.png`` with fixed metadata (no dates), written atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, metadata in ((".pdf", {"CreationDate": None, "ModDate": None}), (".png", {})):
        path = stem.with_suffix(suffix)
        with atomic_path(path, suffix=suffix) as tmp:
            fig.savefig(tmp, format=suffix[1:], metadata=metadata, bbox_inches="tight")
        written.append(path)
    return written


def _empty(message: str) -> plt.Figure:
    """A figure that says why it has nothing to show (a profile without such runs)."""
    fig, ax = plt.subplots(figsize=(4.0, 1.0))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


MARKERS = "osD^v<>PX*"  # ten shapes, one per colour of the colour-blind palette


def _method_styles(methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """One colour and marker per method, the same in every panel. seaborn's colour-blind-safe
    palette has 10 colours: past the tenth method a colour comes back, but with another shape,
    drawn hollow, on a dashed line, so that no two of twenty methods look alike (the 11th is a
    hollow blue '<' on a dashed line, not a second blue circle on a solid one)."""
    names = list(dict.fromkeys(methods))
    colours = sns.color_palette("colorblind", 10)
    styles = {}
    for i, name in enumerate(names):
        lap, k = divmod(i, len(colours))
        styles[name] = {"color": colours[k], "marker": MARKERS[(k + 5 * lap) % len(MARKERS)]}
        if lap % 2:
            styles[name].update(markerfacecolor="white", linestyle="--")
    return styles


def _legend_right(fig: plt.Figure, axes) -> None:
    """One legend for the figure, right of the panels: with many methods it would cover the data."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _runs(notebooks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for _, run in unique_runs(notebooks)]


def _grouped(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        groups.setdefault(setting(run), {}).setdefault(run["method"], []).append(run)
    return groups


def _mean_matrix(runs: list[dict[str, Any]]) -> np.ndarray:
    """R[i, j] averaged over the runs; NaN where no run has a value (j > i: task j not seen yet).
    Not np.nanmean, which warns "Mean of empty slice" for each of those cells in every log."""
    T = runs[0]["num_tasks"]
    full = np.full((len(runs), T, T), np.nan)
    for r, run in enumerate(runs):
        for i, row in enumerate(run["acc_matrix"]):
            full[r, i, : len(row)] = row
    counts = np.count_nonzero(~np.isnan(full), axis=0)
    return np.where(counts > 0, np.nansum(full, axis=0) / np.maximum(counts, 1), np.nan)


def _percent_heatmap(ax: plt.Axes, matrix: np.ndarray, annotate: bool, fontsize: float) -> None:
    """A task x task matrix of percentages as ``seaborn.heatmap`` draws it (viridis on 0-100, NaN
    cells blank, cells numbered 1..T, values written in the cells in a colour readable on them),
    without its cost: seaborn draws the whole figure once per heatmap to see whether tick labels
    overlap, so a figure of n panels took n full draws (12 s of the smoke profile's figures). Here
    the labels cannot overlap: up to 10 tasks each is numbered, past that (TinyImageNet's 40) task 1
    and the multiples of a round step, at most 5 numbers an axis (1, 10, 20, 30, 40)."""
    T = matrix.shape[0]
    step = 1 if T <= 10 else next(s for m in itertools.count() for s in (2 * 10**m, 5 * 10**m, 10 ** (m + 1)) if T // s <= 4)
    numbered = sorted({1, *range(step, T + 1, step)})
    sns.despine(ax=ax, left=True, bottom=True)
    mesh = ax.pcolormesh(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=100, linewidths=0, edgecolor="white")
    ax.set(xlim=(0, T), ylim=(0, T))
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ticks = np.array(numbered) - 0.5
    ax.set(xticks=ticks, yticks=ticks)
    ax.set_xticklabels(numbered)
    plt.setp(ax.set_yticklabels(numbered, rotation="vertical"), va="center")
    ax.set(xlabel="", ylabel="")
    if not annotate:
        return
    mesh.update_scalarmappable()
    for (i, j), value, colour in zip(np.ndindex(T, T), np.ma.masked_invalid(matrix).flat, mesh.get_facecolors()):
        if value is not np.ma.masked:
            # seaborn's rule: dark text on light cells, white on dark ones
            text_colour = ".15" if relative_luminance(colour) > 0.408 else "w"
            ax.text(j + 0.5, i + 0.5, f"{value:.0f}", color=text_colour, ha="center", va="center", size=fontsize)


def accuracy_matrices(notebooks: Iterable[dict[str, Any]], columns: int = 4) -> dict[str, plt.Figure]:
    """One page-width figure per setting (``"<scenario>_<model>_<T>tasks"``): heatmaps of R[i, j], the mean
    over seeds, one per method, ``columns`` a row, one colour bar (joint training has no task
    sequence: it is left out)."""
    groups = _grouped([run for run in _runs(notebooks) if run["bwt"] is not None])
    figures = {}
    for name, methods in groups.items():
        first = next(iter(methods.values()))[0]
        T = first["num_tasks"]
        cols = min(columns, len(methods))
        rows = -(-len(methods) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(7.0, 1.75 * rows + 0.4), squeeze=False)
        for ax in axes.flat[len(methods):]:
            ax.axis("off")
        for ax, (method, runs) in zip(axes.flat, methods.items()):
            matrix = _mean_matrix(runs)
            _percent_heatmap(ax, matrix, annotate=T <= 10, fontsize=5.5)
            ax.grid(False)
            ax.tick_params(labelsize=6, length=0)
            ax.set_title(method, fontsize=6.5)
            ax.set_xlabel("evaluated task j" if ax in axes[-1] else "", fontsize=7)
            ax.set_ylabel("after task i" if ax in axes[:, 0] else "", fontsize=7)
        seeds = sorted({len(runs) for runs in methods.values()})
        fig.suptitle(f"Accuracy matrices R[i, j] (%), mean over {'/'.join(map(str, seeds))} seeds: {name}", fontsize=9)
        fig.tight_layout()
        fig.colorbar(axes.flat[0].collections[0], ax=axes.ravel().tolist(), shrink=0.6, label="test accuracy (%)")
        figures[f"{first['scenario']}_{first['model']}_{T}tasks"] = fig
    return figures


def final_accuracy_per_task(notebooks: Iterable[dict[str, Any]]) -> plt.Figure:
    """Test accuracy of every task after the last one, mean ± std over seeds, per method."""
    groups = _grouped(_runs(notebooks))
    styles = _method_styles(m for methods in groups.values() for m in methods)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.0), squeeze=False)
    for ax, (scenario, methods) in zip(axes[0], groups.items()):
        for method, runs in methods.items():
            last = np.array([run["acc_matrix"][-1] for run in runs])
            tasks = np.arange(1, last.shape[1] + 1)
            ax.errorbar(tasks, last.mean(0), yerr=std_over_seeds(last), ms=3, capsize=2, label=method, **styles[method])
        ax.set_title(scenario)
        ax.set_xlabel("task")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("final test accuracy (%)")
    fig.tight_layout()
    _legend_right(fig, axes[0])
    return fig


def _first_run(methods: dict[str, list[dict[str, Any]]], prefer: str = HEADLINE[0]) -> dict[str, Any]:
    """The lowest-seed run of ``prefer``, else of the first owner-map method (they have owners)."""
    owning = {m: runs for m, runs in methods.items() if "bit_widths" in runs[0]}
    runs = owning.get(prefer) or next(iter(owning.values()))
    return min(runs, key=lambda run: run["seed"])


def _owning(groups: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The settings where some owner-map method ran (the others have no owner maps to draw)."""
    return {s: methods for s, methods in groups.items() if any("bit_widths" in runs[0] for runs in methods.values())}


def task_confusion(notebooks: Iterable[dict[str, Any]], criterion: str = "mahalanobis", columns: int = 5) -> plt.Figure:
    """Inferred vs true task after the last task, rows normalised to percent and averaged over seeds,
    one panel per scenario and method (sub-network methods under ``criterion``, single-head
    methods through the task of their predicted class), ``columns`` panels a row."""
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for nb in notebooks:
        for record in nb.get("class_incremental", []):
            if record["inference"] in (criterion, "one_head"):
                counts = np.array(record["confusion"], dtype=float)
                percent = 100 * counts / counts.sum(1, keepdims=True).clip(min=1)
                method = record["method"] if record["inference"] == "one_head" else f"{record['method']}, {criterion}"
                groups.setdefault((setting(record), method), []).append(percent)
    if not groups:
        return _empty("no class-incremental runs")
    cols = min(columns, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, ((scenario, method), matrices) in zip(axes.flat, groups.items()):
        matrix = np.mean(matrices, axis=0)
        T = matrix.shape[0]
        _percent_heatmap(ax, matrix, annotate=T <= 10, fontsize=6)
        ax.grid(False)
        ax.set_title(f"{scenario}\n{method} ({len(matrices)} seed{'s' if len(matrices) > 1 else ''})", fontsize=7)
        ax.set_xlabel("inferred task")
        ax.set_ylabel("true task")
    fig.tight_layout()
    return fig


def capacity_by_task(notebooks: Iterable[dict[str, Any]]) -> plt.Figure:
    """Per layer, after each task, the share of weights owned by each task (stacked), lowest seed:
    one row per scenario, one column per layer; task k has the same colour in every panel."""
    groups = _owning(_grouped(_runs(notebooks)))
    if not groups:
        return _empty("no owner-map runs")
    runs = [_first_run(methods) for methods in groups.values()]
    cols = max(len(run["weights"]["per_layer"]) for run in runs)
    palette = sns.color_palette("viridis", max(run["num_tasks"] for run in runs))
    fig, axes = plt.subplots(len(runs), cols, figsize=(min(7.0, 2.4 * cols + 1.2), 2.1 * len(runs)), squeeze=False, sharey=True)
    for r, run in enumerate(runs):
        T = run["num_tasks"]
        layers = run["weights"]["per_layer"]
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(layers):
                ax.axis("off")
                continue
            layer, size = list(layers.items())[c]
            bottom = np.zeros(T)
            for k, task in enumerate(run["per_task"]):
                share = np.array([0.0] * k + [100 * task["owned_weights"][layer] / size] * (T - k))
                ax.bar(np.arange(1, T + 1), share, bottom=bottom, color=palette[k], width=0.85, label=f"task {k + 1}")
                bottom += share
            ax.set_title(layer)
            ax.set_xticks(np.arange(1, T + 1))
            ax.set_xlabel("after task")
            ax.set_ylim(0, 100)
        axes[r][0].set_ylabel(f"{run['scenario']}\n{run['method']}, seed {run['seed']}\nweights owned (%)")
    fig.tight_layout()
    longest = max(runs, key=lambda run: run["num_tasks"])
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[k]) for k in range(longest["num_tasks"])]
    fig.legend(handles, [f"task {k + 1}" for k in range(longest["num_tasks"])], loc="center left", bbox_to_anchor=(1.0, 0.5), title="owner", frameon=False)
    return fig


def bits_and_prune_ratios(notebooks: Iterable[dict[str, Any]]) -> plt.Figure:
    """Per scenario: the bit width each Ada-QPacknet row chose per task (mean ± std over seeds) and
    the per-layer prune ratios of its lowest seed; one colour per row in every panel."""
    groups = _owning(_grouped(_runs(notebooks)))
    if not groups:
        return _empty("no owner-map runs")
    # The Ada-QPacknet rows that quantise: the only ones with bit widths and searched prune ratios.
    quantised = {
        m for methods in groups.values() for m, runs in methods.items()
        if stores_quantized(runs[0]["config"])
    }
    styles = _method_styles(sorted(quantised))
    groups = {name: methods for name, methods in groups.items() if quantised & set(methods)}
    fig, axes = plt.subplots(len(groups), 2, figsize=(7.0, 2.2 * len(groups)), squeeze=False)
    for (ax_bits, ax_ratio), (scenario, methods) in zip(axes, groups.items()):
        for method, runs in methods.items():
            if method not in quantised:
                continue
            # A per-layer allocation shows as the task's mean width over its layers.
            bits = np.array([[np.mean(list(t["bits"].values())) if isinstance(t["bits"], dict) else t["bits"] for t in run["per_task"]] for run in runs])
            tasks = np.arange(1, bits.shape[1] + 1)
            ax_bits.errorbar(tasks, bits.mean(0), yerr=std_over_seeds(bits), ms=3, capsize=2, label=method, **styles[method])
            run = min(runs, key=lambda r: r["seed"])
            for layer, linestyle in zip(run["per_task"][0]["prune_ratios"], itertools.cycle(("-", "--", ":", "-."))):
                ratios = [t["prune_ratios"][layer] for t in run["per_task"]]
                ax_ratio.plot(np.arange(1, len(ratios) + 1), ratios, ms=3, label=f"{method}, {layer}", **{**styles[method], "linestyle": linestyle})
        max_bits = max(r["config"]["max_bits"] for runs in methods.values() for r in runs)
        ax_bits.set_ylim(0, max_bits + 0.5)  # a constant width must not get a zoomed-in axis
        ax_bits.set_ylabel(f"{scenario.replace(' (', chr(10) + '(')}\nbits per weight", fontsize=7)
        ax_ratio.set_ylim(0, 1)
        ax_ratio.set_ylabel("pruned share\nof free weights")
        for ax in (ax_bits, ax_ratio):
            ax.set_xlabel("task")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_bits.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_title("bit width per task (mean ± std over seeds)")
    axes[0][1].set_title("prune ratio per layer (lowest seed)")
    fig.tight_layout()
    _legend_right(fig, axes[:, 1])
    return fig


def accuracy_vs_size(runs_table) -> plt.Figure:
    """ACC against each method's storage (T1's size, one rule for every method), mean ± std over
    seeds, one panel per scenario."""
    scenarios = list(dict.fromkeys(runs_table["setting"]))
    styles = _method_styles(runs_table["method"])
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 3.0), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        rows = runs_table[runs_table["setting"] == scenario]
        for method, group in rows.groupby("method", sort=False):
            ax.errorbar(
                group["size_kib"].mean(), group["acc"].mean(), xerr=std_over_seeds(group["size_kib"]),
                yerr=std_over_seeds(group["acc"]), capsize=2, label=method, **{**styles[method], "linestyle": "none"},
            )
        ax.set_xscale("log")
        ax.set_title(scenario)
        ax.set_xlabel("storage (KiB, log), T1's rule")
        ax.set_ylabel("ACC (%)")
    fig.tight_layout()
    _legend_right(fig, axes[0])
    return fig


def capacity_ablation(notebooks: Iterable[dict[str, Any]], per_task: tuple[str, ...] = ("reference [0.4, 0.7]", "budget", "budget, no reuse")) -> plt.Figure:
    """The sparsity and capacity ablation (notebook 21), one row per scenario, mean ± std over seeds:
    (a) ACC against the packed file of every variant; (b) each task's final test accuracy and
    (c) the share of body weights owned after each task, for the variants in ``per_task`` (the
    reference, the budget rule, and the budget rule without reuse of earlier tasks' weights)."""
    runs = [run for _, run in unique_runs(notebooks, section="variants")]
    if not runs:
        return _empty("no sparsity-ablation runs")
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        groups.setdefault(setting(run), {}).setdefault(run["variant"], []).append(run)
    variants = list(dict.fromkeys(run["variant"] for run in runs))
    colours = dict(zip(variants, sns.color_palette("colorblind", len(variants))))
    markers = dict(zip(variants, itertools.cycle(MARKERS)))
    fig, axes = plt.subplots(len(groups), 3, figsize=(7.0, 2.4 * len(groups)), squeeze=False)
    for (ax_size, ax_task, ax_cap), (name, by_variant) in zip(axes, groups.items()):
        for variant, group in by_variant.items():
            size = np.array([r["packed_bytes"] / 1024 for r in group])
            acc = np.array([r["acc"] for r in group])
            ax_size.errorbar(size.mean(), acc.mean(), xerr=std_over_seeds(size), yerr=std_over_seeds(acc), capsize=2, linestyle="none",
                             color=colours[variant], marker=markers[variant], label=variant)
            if variant not in per_task:
                continue
            final = np.array([r["acc_matrix"][-1] for r in group])
            owned = np.array([np.cumsum([sum(t["owned_weights"].values()) for t in r["per_task"]]) for r in group])
            share = 100 * owned / group[0]["bits_ledger"]["body_weights"]
            tasks = np.arange(1, final.shape[1] + 1)
            style = {"color": colours[variant], "marker": markers[variant], "ms": 3, "capsize": 2}
            ax_task.errorbar(tasks, final.mean(0), yerr=std_over_seeds(final), **style)
            ax_cap.errorbar(tasks, share.mean(0), yerr=std_over_seeds(share), **style)
        ax_task.set_title(name)
        ax_size.set_xlabel("packed file (KiB)")
        ax_size.set_ylabel("ACC (%)")
        ax_task.set_xlabel("task")
        ax_task.set_ylabel("final test accuracy (%)")
        ax_cap.set_xlabel("after task")
        ax_cap.set_ylabel("body weights owned (%)")
        ax_cap.set_ylim(0, 100)
        for ax in (ax_task, ax_cap):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, letter in zip(axes[0], "abc"):
        ax.text(-0.02, 1.12, f"({letter})", transform=ax.transAxes, ha="right", va="bottom", fontweight="bold")
    fig.tight_layout()
    _legend_right(fig, axes[:, 0])
    return fig


STORAGE_LAYOUTS = {
    "float32_per_task_kib": "float32 net per task",
    "packed_kib": "packed file",
}


def storage(runs_table) -> plt.Figure:
    """The owner-map methods' packed files against one float32 network per task (log scale), one
    panel per scenario, one group of bars per method; the tick on the packed bar is its entropy bound."""
    runs_table = runs_table[runs_table["packed_kib"].notna()] if "packed_kib" in runs_table else runs_table.iloc[:0]
    if not len(runs_table):
        return _empty("no owner-map runs (Ada-QPacknet, PackNet): nothing to compare")
    scenarios = list(dict.fromkeys(runs_table["setting"]))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.6 * len(scenarios), 3.2), squeeze=False)
    colors = sns.color_palette(n_colors=len(STORAGE_LAYOUTS))
    for ax, scenario in zip(axes[0], scenarios):
        rows = runs_table[runs_table["setting"] == scenario]
        methods = list(dict.fromkeys(rows["method"]))
        width = 0.8 / len(STORAGE_LAYOUTS)
        for m, method in enumerate(methods):
            group = rows[rows["method"] == method]
            for k, (column, label) in enumerate(STORAGE_LAYOUTS.items()):
                x = m + (k - (len(STORAGE_LAYOUTS) - 1) / 2) * width
                ax.bar(x, group[column].mean(), width, yerr=std_over_seeds(group[column]), color=colors[k], label=label if m == 0 else None)
                if column == "packed_kib":
                    ax.hlines(group["bound_kib"].mean(), x - width / 2, x + width / 2, color="black", lw=1.2, label="entropy bound" if m == 0 else None)
        # Long method names side by side overlap: slanted, right-aligned under their group.
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", rotation_mode="anchor")
        ax.set_yscale("log")
        ax.set_title(scenario)
        ax.set_ylabel("storage (KiB, log)")
    # One legend under the panels: inside, it would cover the bars.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def accuracy_vs_bits(sweep_table) -> plt.Figure:
    """Test accuracy of each task quantised alone, mean ± std over tasks and seeds, per quantiser."""
    scenarios = list(dict.fromkeys(sweep_table["setting"]))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 3.0), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        rows = sweep_table[sweep_table["setting"] == scenario]
        for quantizer, group in rows[rows["quantizer"] != "float"].groupby("quantizer", sort=False):
            stats = group.groupby("bits")["accuracy"].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", ms=3, capsize=2, label=quantizer)
        float_accuracy = rows[rows["quantizer"] == "float"]["accuracy"].mean()
        ax.axhline(float_accuracy, color="black", linestyle="--", linewidth=1, label="float32")
        ax.set_title(scenario)
        ax.set_xlabel("bits per weight")
        ax.set_ylabel("test accuracy (%)")
        ax.legend()
    fig.tight_layout()
    return fig


# --- the method tour: one task, step by step ------------------------------------------------------


def pruning_histogram(weights, free, keep, layer: str) -> plt.Figure:
    """Trained free weights of one layer: the survivors against the pruned (smallest-magnitude) ones."""
    fig, ax = plt.subplots(figsize=(5.0, 2.8))
    kept = weights[keep].cpu().numpy()
    pruned = weights[free & ~keep].cpu().numpy()
    bins = np.linspace(float(weights[free].min()), float(weights[free].max()), 80)
    ax.hist(pruned, bins=bins, alpha=0.7, label=f"pruned ({len(pruned)})")
    ax.hist(kept, bins=bins, alpha=0.7, label=f"kept ({len(kept)})")
    ax.set_title(f"{layer}: trained free weights")
    ax.set_xlabel("weight")
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    return fig


def codebook_histogram(float_values, codebook, layer: str, bits: int) -> plt.Figure:
    """A layer's surviving float weights with the codebook levels they are quantised to."""
    fig, ax = plt.subplots(figsize=(5.0, 2.8))
    ax.hist(float_values.cpu().numpy(), bins=80, alpha=0.8, label="float survivors")
    for level in codebook.cpu().numpy():
        ax.axvline(level, color="black", linewidth=0.8)
    ax.set_title(f"{layer}: {len(codebook)} levels at {bits} bits (vertical lines)")
    ax.set_xlabel("weight")
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    return fig


def owner_map_image(owner, layer: str) -> plt.Figure:
    """A layer's owner map as an image (0 = free); conv weights are shown as (out, in*k*k)."""
    image = owner.reshape(owner.shape[0], -1).cpu().numpy()
    fig, ax = plt.subplots(figsize=(6.0, 2.4))
    shown = ax.imshow(image, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=max(1, int(image.max())))
    fig.colorbar(shown, ax=ax, label="owner task (0 = free)")
    ax.set_title(f"{layer}: owner map")
    ax.set_xlabel("input")
    ax.set_ylabel("output unit")
    fig.tight_layout()
    return fig
