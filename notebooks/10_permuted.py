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
# # 10 · Permuted tasks
#
# **Claim.** On permuted tasks (one pixel permutation per task, MLP 784-100-100), Ada-QPacknet keeps
# every task's accuracy exactly (BWT = 0) while storing its weights at a few bits each, close to the
# accuracy of the same learner with float32 weights.
#
# Beside it, on the same data, networks and seeds: PackNet, WSN, the classic strategies of
# avalanche-lib (naive, EWC, SI, LwF, replay, GEM, A-GEM) and the two upper bounds (independent
# networks, joint training), each in the same results format and in table T1.
# Every method trains the same epochs per task (`epochs + finetune_epochs`, retraining counted) and
# keeps the epoch with its best validation accuracy; EWC's and SI's lambda and LwF's alpha are chosen
# per seed on validation from a small grid (`tune`), and the results record every point tried;
# replay, GEM and A-GEM keep one stated memory (samples over all tasks), not tuned.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # empty: results/<profile>/10_permuted.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
scenario: str = "permuted_fashion_mnist"  # permuted_mnist for the paper's protocol
methods: list = ["ada_qpacknet", "ada_qpacknet_float", "ada_qpacknet_budget", "packnet", "wsn", "independent", "joint", "naive", "ewc", "si", "lwf", "replay", "gem", "agem"]  # adaqpacknet.methods.VARIANTS
seeds: list = [0, 1, 2]
num_tasks: int = 0  # 0: the scenario's own number of tasks
model: str = "auto"  # "auto": the scenario's protocol network
epochs: int = 2  # training epochs of the free weights, per candidate (protocol: 5); every other method trains epochs + finetune_epochs
finetune_epochs: int = 1  # retraining epochs after pruning (counted in every method's epochs per task)
batch_size: int = 64  # protocol: 10
population: int = 2  # sparsity-search candidates
tune: dict | None = None  # classic strategy -> {Config field: factors of its value tried on validation}; None: tuning.CLASSIC_GRID, {}: none
data_root: str = "data"  # relative to the repository root
# Any other Config field, as "field=value" strings: e.g. ["tolerance=1.0"].
overrides: list = []  # any other Config field, as field-equals-value strings (example on the line above)

# %%
from adaqpacknet import experiments, plots, tables

# The runs are experiments.PLANNERS["10_permuted"] of these parameters: the very function the grid
# (make reproduce) plans them with, so the jobs train exactly what this notebook reads.
results = experiments.scenario_notebook("10_permuted", experiments.parameters_of("10_permuted", globals()))
tables.table_t1(tables.runs_frame([results]))

# %% [markdown]
# Each method's final accuracy on every task, and its accuracy matrices (the same figures as
# notebook 91's, for this notebook's runs alone).

# %%
plots.use_style()
plots.final_accuracy_per_task([results])
plots.accuracy_matrices([results]);
