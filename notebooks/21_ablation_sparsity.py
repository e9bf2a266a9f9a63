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
# # 21 · Ablation: sparsity search
#
# **Claim.** Searching per-layer prune ratios (population P, fitness 0.8 · accuracy + 0.2 · pruned
# share) balances accuracy against capacity left for later tasks; a fixed ratio for every layer and
# task (PackNet style) is the reference point, and a larger population costs proportionally more
# training time.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # "" = results/<profile>/21_ablation_sparsity.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
scenario: str = "permuted_fashion_mnist"
seeds: list = [0]
num_tasks: int = 0  # 0 = the scenario's own number of tasks
epochs: int = 2
finetune_epochs: int = 1
batch_size: int = 64
populations: list = [1, 2, 4]  # search variants: candidates per task
fixed_ratios: list = [0.55]  # fixed-ratio variants (population 1, r_min = r_max)
data_root: str = "data"
overrides: list = []  # any other Config field as "key=value"

# %%
from adaqpacknet import experiments, tables
from adaqpacknet.ablations import sparsity_variants

settings = experiments.settings(
    overrides, scenario=scenario, num_tasks=num_tasks or None, epochs=epochs, finetune_epochs=finetune_epochs,
    batch_size=batch_size, data_root=data_root, progress=progress,
)
variants = sparsity_variants(populations, fixed_ratios)
variant_runs = []
for name, changes in variants.items():
    for run in experiments.run_methods(["ada_qpacknet"], seeds, {**settings, **changes}, f"runs/{profile}"):
        variant_runs.append({**run, "variant": name})

# %%
results = experiments.notebook_results(
    "21_ablation_sparsity", profile, {"seeds": seeds, "variants": variants, "settings": settings}, variants=variant_runs,
)
tables.table_t1(tables.runs_frame([results], section="variants"))

# %%
experiments.write_notebook_results(experiments.results_file(results_path, profile, "21_ablation_sparsity"), results);
