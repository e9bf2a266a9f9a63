# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (adaqpacknet)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 91 · Figures
#
# **Claim.** Every figure of the package is drawn from the results files of this profile's experiment
# notebooks, in one style, as PDF and PNG files that are byte-identical when nothing changed.

# %% tags=["parameters"]
profile: str = "default"  # whose results to read: the folder of results_path, by default results/<profile>/
results_path: str = ""  # empty: results/<profile>/91_figures.json under the repository root
progress: bool = True  # unused: no training here (kept so every notebook takes the same switches)

# %%
from adaqpacknet import experiments, plots, tables
from adaqpacknet.results import profile_folder, resolve

plots.use_style()
# Read the folder this notebook writes to: results/<profile>/, or wherever results_path points.
folder = experiments.results_file(results_path, profile, "91_figures").parent
notebooks = experiments.read_notebook_results(folder, keep=lambda nb: nb["notebook"][:1] != "9")
out = profile_folder("figures", profile)
sweep = tables.sweep_frame(notebooks)
runs = tables.runs_frame(notebooks)
figures = {
    **{f"accuracy_matrices_{name}": fig for name, fig in plots.accuracy_matrices(notebooks).items()},
    "final_accuracy_per_task": plots.final_accuracy_per_task(notebooks),
    "capacity_by_task": plots.capacity_by_task(notebooks),
    "bits_and_prune_ratios": plots.bits_and_prune_ratios(notebooks),
    "accuracy_vs_size": plots.accuracy_vs_size(runs),
    "storage": plots.storage(runs),
    "task_confusion": plots.task_confusion(notebooks),
    "capacity_ablation": plots.capacity_ablation(notebooks),
}
if len(sweep):
    figures["accuracy_vs_bits"] = plots.accuracy_vs_bits(sweep)
written = {name: [str(p.relative_to(resolve("."))) for p in plots.save(fig, out / name)] for name, fig in figures.items()}

# %%
results = experiments.notebook_results("91_figures", profile, {}, figures=written)
experiments.write_notebook_results(experiments.results_file(results_path, profile, "91_figures"), results);
