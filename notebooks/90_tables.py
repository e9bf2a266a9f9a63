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
# # 90 · Tables
#
# **Claim.** Every table of the package is generated from the results files of this profile's
# experiment notebooks, with mean ± std over seeds; nothing is typed in by hand. The results page
# (`tables/<profile>/RESULTS.md`: every table, the figures of notebook 91, and the commits, versions
# and hardware the runs recorded) and the README's headline table are written here too.

# %% tags=["parameters"]
profile: str = "default"  # whose results to read: the folder of results_path, by default results/<profile>/
results_path: str = ""  # empty: results/<profile>/90_tables.json under the repository root
progress: bool = True  # unused: no training here (kept so every notebook takes the same switches)
results_page: str = ""  # empty: tables/<profile>/RESULTS.md; a path inside the repository
readme: str = ""  # a page whose <!-- table:NAME --> blocks get these tables, e.g. "README.md"; empty: none

# %%
from adaqpacknet import experiments, report, tables
from adaqpacknet.results import profile_folder, resolve

# Read the folder this notebook writes to: results/<profile>/, or wherever results_path points.
folder = experiments.results_file(results_path, profile, "90_tables").parent
notebooks = experiments.read_notebook_results(folder, keep=lambda nb: nb["notebook"][:1] != "9")
out = profile_folder("tables", profile)
runs = tables.runs_frame(notebooks)
sweep = tables.sweep_frame(notebooks)
variants = tables.runs_frame(notebooks, section="variants")
written = {}

# %%
headline = tables.table_headline(runs)
written["headline"] = tables.write_table(headline, out / "headline", tables.HEADLINE_CAPTION)
headline

# %%
t1 = tables.table_t1(runs)
written["t1"] = tables.write_table(t1, out / "t1_task_incremental", tables.T1_CAPTION)
t1

# %%
if len(sweep):
    t2 = tables.table_t2(sweep)
    written["t2"] = tables.write_table(t2, out / "t2_quantization", tables.T2_CAPTION)
    display(t2)

# %%
tuning = tables.tuning_frame(notebooks)
if len(tuning):
    t1c = tables.table_tuning(tuning)
    written["tuning"] = tables.write_table(t1c, out / "t1c_tuning", tables.TUNING_CAPTION)
    display(t1c)

# %%
t3 = tables.table_t3(runs)
written["t3"] = tables.write_table(t3, out / "t3_cost", tables.T3_CAPTION)
t3

# %%
t5 = tables.table_t5(runs)
written["t5"] = tables.write_table(t5, out / "t5_storage", tables.T5_CAPTION)
t5

# %%
class_incremental = tables.class_incremental_frame(notebooks)
if len(class_incremental):
    t4 = tables.table_t4(class_incremental)
    written["t4"] = tables.write_table(t4, out / "t4_class_incremental", tables.T4_CAPTION)
    display(t4)
    t4b = tables.table_t4(class_incremental, protocol="batch")
    if len(t4b):
        written["t4b"] = tables.write_table(t4b, out / "t4b_class_incremental_batches", tables.T4B_CAPTION)
        display(t4b)

# %%
if len(variants):
    ablation = tables.table_sparsity(variants)
    written["sparsity"] = tables.write_table(ablation, out / "t1b_sparsity_search", tables.SPARSITY_CAPTION)
    display(ablation)

# %% [markdown]
# The results page, with the figures notebook 91 wrote (its results JSON, when it has run), and the
# README's generated blocks.

# %%
figures = next((nb["figures"] for nb in experiments.read_notebook_results(folder) if nb["notebook"] == "91_figures"), {})
markdown = {name: paths[0] for name, paths in written.items()}
page = report.write_results_page(profile, notebooks, {k: v for k, v in markdown.items() if k != "headline"}, figures, results_page)
written["page"] = [page]
if readme:
    written["readme"] = [report.fill_page(readme, markdown)]

# %%
results = experiments.notebook_results(
    "90_tables", profile, {}, tables={k: [str(p.relative_to(resolve("."))) for p in v] for k, v in written.items()},
    t1=t1.to_dict(orient="records"), t5=t5.to_dict(orient="records"),
)
experiments.write_notebook_results(experiments.results_file(results_path, profile, "90_tables"), results);
