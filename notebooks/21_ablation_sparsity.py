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
# # 21 · Ablation: sparsity search, capacity rule and reuse
#
# **Claim.** How much of the network each task takes decides how well the last tasks learn. With
# the paper's prune range [0.4, 0.7] the first tasks own most of the network and the last ones learn
# in what is left; the capacity budget rule (`capacity_rule="budget"`) gives every task its equal
# share of the pool left for it and the tasks to come, and raises the mean accuracy. What it costs
# in size, and what a lower quantisation tolerance or a capacity budget below 1 (part of every
# layer kept free) trade, is measured here. Reuse of frozen weights (every task reads the weights
# of the tasks before it) is measured by the same runs without it (`reuse_frozen=False`): each
# task with its own weights only. A fixed ratio for every layer and task (PackNet's schedule,
# quantised) is the search's control, with one candidate and with P: P candidates of one fixed ratio
# differ only in their training draws, so the reference's gain over them is what the ratio search
# adds beyond keeping the best of P trainings.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # empty: results/<profile>/21_ablation_sparsity.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
# scenario -> the Config changes of that scenario alone (its network, its batch size)
scenarios: dict = {"permuted_fashion_mnist": {"batch_size": 256}, "split_fashion_mnist": {"model": "mlp", "batch_size": 64}}
seeds: list = [0, 1, 2]
num_tasks: int = 0  # 0: the scenario's own number of tasks
epochs: int = 2
finetune_epochs: int = 1
batch_size: int = 64
population: int = 2  # search candidates per task, unless a variant sets it
# variant name -> its Config changes (adaqpacknet.config.Config); the first is the reference
variants: dict = {
    "reference [0.4, 0.7]": {},
    "fixed r=0.55": {"population": 1, "r_min": 0.55, "r_max": 0.55},
    "fixed r=0.55, P=2": {"r_min": 0.55, "r_max": 0.55},  # best of P trainings, no ratio search: the search's control
    "budget": {"capacity_rule": "budget"},
    "budget, P=1": {"capacity_rule": "budget", "population": 1},  # one candidate: T1's equal-steps row
    "budget, tolerance 0.5": {"capacity_rule": "budget", "tolerance": 0.5},
    "budget, 30% capacity": {"capacity_rule": "budget", "capacity_budget": 0.3},
    "budget, no reuse": {"capacity_rule": "budget", "reuse_frozen": False},
}
data_root: str = "data"
# Any other Config field, as "field=value" strings.
overrides: list = []  # any other Config field, as field-equals-value strings (example on the line above)

# %%
from adaqpacknet import experiments, plots, tables
from adaqpacknet.results import profile_folder
from adaqpacknet.runs import run_configs

# The runs are experiments.PLANNERS["21_ablation_sparsity"] of these parameters (sparsity_variants,
# each run named by its variant), as the grid plans them; every config is checked before any run.
parameters = experiments.parameters_of("21_ablation_sparsity", globals())
configs = experiments.sparsity_variants(parameters)
variant_runs = [
    {**run, "variant": name}
    for (name, _), run in zip(configs, run_configs([config for _, config in configs], profile_folder("runs", profile)))
]

# %%
results = experiments.notebook_results(
    "21_ablation_sparsity", profile,
    {"scenarios": scenarios, "seeds": seeds, "variants": variants, "settings": experiments.run_settings(parameters)},
    variants=variant_runs,
)
tables.table_sparsity(tables.runs_frame([results], section="variants"))

# %%
plots.use_style()
plots.capacity_ablation([results]);

# %%
experiments.write_notebook_results(experiments.results_file(results_path, profile, "21_ablation_sparsity"), results);
