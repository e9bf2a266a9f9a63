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
# run. Every learned task's sub-network runs on the test input and the task that claims it most
# strongly wins: by predictive entropy, entropy after per-head temperature calibration, the
# Mahalanobis distance of the sub-network's features to its classes (both calibrated on each task's
# own validation split), SupSup's one-shot gradient of the entropy of the superposed outputs, or,
# for a batch, the mutual information of its predictions (infomax). Per sample, each test sample's
# task is inferred alone, in test batches that mix the tasks (so batch statistics cannot reveal the
# task); per batch (`"entropy@16"`), a test batch of 16 samples of one task is assumed to share its
# task, the protocol of several mask papers. This notebook measures how often each picks the right task and what class-incremental
# accuracy follows, next to the classic strategies trained with one head over all classes seen so
# far: table T4 and the confusion figure. On permuted tasks every (task, class) pair is a class.
#
# The sub-network runs are those of notebooks 10 and 11 (same settings, same run folders): nothing
# is trained twice.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # empty: results/<profile>/14_class_incremental.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
# scenario -> its own Config changes (and "methods" of its own); they must equal notebooks 10 and
# 11's settings to share their runs. split_cifar100 for the paper's protocol.
scenarios: dict = {
    "split_fashion_mnist": {"model": "mlp", "batch_size": 64},
    "permuted_fashion_mnist": {"batch_size": 256},
}
# Sub-network methods infer the task; <classic>_single_head trains one head over all classes.
methods: list = ["ada_qpacknet", "packnet", "wsn", "naive_single_head", "ewc_single_head", "si_single_head", "lwf_single_head", "replay_single_head", "gem_single_head", "agem_single_head"]  # adaqpacknet.methods.VARIANTS
# adaqpacknet.task_inference.CRITERIA, each per sample, or "<criterion>@<B>": once per test batch of B samples of one task
inference: list = ["entropy", "calibrated_entropy", "supsup", "mahalanobis", "entropy@16", "infomax@16", "mahalanobis@16"]
seeds: list = [0, 1, 2]
num_tasks: int = 0  # 0: the scenario's own number of tasks
epochs: int = 2  # training epochs of the free weights, per candidate; every other method trains epochs + finetune_epochs
finetune_epochs: int = 1  # retraining epochs after pruning (counted in every method's epochs per task)
population: int = 2  # sparsity-search candidates
tune: dict | None = None  # as in notebooks 10-13: the single-head strategies chosen per seed on validation; None: tuning.CLASSIC_GRID, {}: none
data_root: str = "data"  # relative to the repository root
# Any other Config field, as "field=value" strings: e.g. ["tolerance=1.0"].
overrides: list = []  # any other Config field, as field-equals-value strings (example on the line above)

# %%
from adaqpacknet import experiments, plots, tables

# The runs are experiments.PLANNERS["14_class_incremental"] of these parameters, as the grid plans them.
notebook = experiments.class_incremental_notebook(experiments.parameters_of("14_class_incremental", globals()))
tables.table_t4(tables.class_incremental_frame([notebook]))

# %%
plots.use_style()
plots.task_confusion([notebook]);

# %%
experiments.write_notebook_results(experiments.results_file(results_path, profile, "14_class_incremental"), notebook);
