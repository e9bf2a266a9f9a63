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
# # 14 · Class-incremental evaluation
#
# **Claim.** Without the task id at test time, a sub-network method must infer which sub-network to
# run. Here every learned task's sub-network runs on each test sample and the most confident one
# wins (lowest predictive entropy, or highest maximum softmax). This notebook measures how often
# that picks the right task and what class-incremental accuracy follows, next to the classic
# strategies trained with one head over all classes seen so far: table T4 and the confusion figure.
#
# The sub-network runs are those of notebook 11 (same settings, same run folders): nothing is
# trained twice. Test batches mix the seen tasks, so batch statistics cannot reveal the task.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # "" = results/<profile>/14_class_incremental.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
scenario: str = "split_fashion_mnist"  # split_cifar100 for the paper's protocol
# Sub-network methods infer the task; <classic>_single_head trains one head over all classes.
methods: list = ["ada_qpacknet", "packnet", "wsn", "naive_single_head", "ewc_single_head", "si_single_head", "lwf_single_head", "replay_single_head", "gem_single_head", "agem_single_head"]  # adaqpacknet.experiments.METHODS
criteria: list = ["entropy", "max_softmax"]  # adaqpacknet.task_inference.CRITERIA
seeds: list = [0, 1, 2]
# The settings below must equal notebook 11's to share its runs.
num_tasks: int = 0  # 0 = the scenario's own number of tasks
model: str = "auto"  # "auto" = the scenario's protocol network
epochs: int = 2  # training epochs of the free weights, per candidate
finetune_epochs: int = 1  # retraining epochs after pruning
batch_size: int = 64
population: int = 2  # sparsity-search candidates
classic_epochs: int = 0  # epochs of the classic strategies (naive ... agem); 0 = epochs
data_root: str = "data"  # relative to the repository root
overrides: list = []  # any other Config field as "key=value", e.g. ["tolerance=1.0"]

# %%
from adaqpacknet import experiments, plots, tables

settings = experiments.settings(
    overrides, scenario=scenario, model=model, num_tasks=num_tasks or None, epochs=epochs, finetune_epochs=finetune_epochs,
    batch_size=batch_size, population=population, data_root=data_root, progress=progress,
)
records = experiments.class_incremental_runs(methods, seeds, settings, f"runs/{profile}", criteria, classic_epochs or None)
notebook = experiments.notebook_results(
    "14_class_incremental", profile,
    {"methods": methods, "criteria": criteria, "seeds": seeds, "settings": settings, "classic_epochs": classic_epochs or None},
    class_incremental=records,
)
tables.table_t4(tables.class_incremental_frame([notebook]))

# %%
plots.use_style()
plots.task_confusion([notebook]);

# %%
experiments.write_notebook_results(experiments.results_file(results_path, profile, "14_class_incremental"), notebook);
