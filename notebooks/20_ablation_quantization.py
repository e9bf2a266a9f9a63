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
# # 20 · Ablation: quantiser and bit width
#
# **Claim.** Fitted on a task's own surviving weights, the non-linear (k-means) quantiser keeps a
# task's float accuracy down to fewer bits than uniform (linear) quantisation: a few bits per weight
# suffice, which is why Ada-QPacknet's search settles at low widths.
#
# Each task's float sub-network (from a run with `quantizer=none`) is quantised alone at 8..1 bits by
# each quantiser, earlier tasks left in float, and its test accuracy measured: no retraining.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # empty: results/<profile>/20_ablation_quantization.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
scenario: str = "permuted_fashion_mnist"
seeds: list = [0, 1, 2]  # float runs to sweep (shared with notebook 10 when the settings match)
num_tasks: int = 0  # 0: the scenario's own number of tasks
epochs: int = 2
finetune_epochs: int = 1
batch_size: int = 64
population: int = 2
quantizers: list = ["linear", "kmeans"]  # adaqpacknet.quantization.QUANTIZERS
bits: list = [8, 7, 6, 5, 4, 3, 2, 1]
data_root: str = "data"
# Any other Config field, as "field=value" strings.
overrides: list = []  # any other Config field, as field-equals-value strings (example on the line above)

# %%
from adaqpacknet import experiments, plots, tables
from adaqpacknet.ablations import quantization_sweep
from adaqpacknet.results import profile_folder
from adaqpacknet.runs import load_learner

# The float runs are experiments.PLANNERS["20_ablation_quantization"] of these parameters, as the grid plans them.
parameters = experiments.parameters_of("20_ablation_quantization", globals())
runs, sweeps = [], []
for config in experiments.PLANNERS["20_ablation_quantization"](parameters):
    learner = load_learner(config, profile_folder("runs", profile))
    runs.append(learner.results())
    sweeps.append({"setting": tables.setting(runs[-1]), "scenario": config.scenario, "seed": config.seed,
                   "rows": quantization_sweep(learner, quantizers, bits)})

# %%
results = experiments.notebook_results(
    "20_ablation_quantization", profile,
    {"seeds": seeds, "quantizers": quantizers, "bits": bits, "settings": experiments.run_settings(parameters)},
    runs=runs, sweeps=sweeps,
)
tables.table_t2(tables.sweep_frame([results]))

# %%
plots.use_style()
plots.accuracy_vs_bits(tables.sweep_frame([results]));

# %%
experiments.write_notebook_results(experiments.results_file(results_path, profile, "20_ablation_quantization"), results);
