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
# # 00 · The method in one task
#
# **Claim.** One Ada-QPacknet task, step by step: the free weights are trained, pruned by magnitude
# to per-layer ratios chosen by a small search, retrained, quantised to the smallest bit width whose
# validation accuracy stays within the tolerance, and frozen. Each layer's frozen weights then take
# at most 2^b values, and the pruned weights go back to the free pool for the next task. Packed into
# one file (entropy-coded owner map and codes), the task reloads with bit-identical logits.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile: names the output folders
results_path: str = ""  # empty: results/<profile>/00_method_tour.json under the repository root
progress: bool = True  # tqdm bars (make passes False: headless logs get one line per epoch)
scenario: str = "permuted_fashion_mnist"  # any adaqpacknet.config.SCENARIOS entry
seed: int = 0
epochs: int = 1  # training epochs of the free weights, per candidate
finetune_epochs: int = 1  # retraining epochs after pruning
batch_size: int = 64
population: int = 2  # sparsity-search candidates
data_root: str = "data"  # relative to the repository root
# Any other Config field, as "field=value" strings: e.g. ["quantizer=linear"].
overrides: list = []  # any other Config field, as field-equals-value strings (example on the line above)

# %%
import pandas as pd
import torch

from adaqpacknet import experiments, plots
from adaqpacknet.learner import AdaQPacknet
from adaqpacknet.ownership import owner_maps, prunable_layers, raw_weight
from adaqpacknet.results import profile_folder

plots.use_style()
settings = experiments.settings(
    overrides, scenario=scenario, seed=seed, epochs=epochs, finetune_epochs=finetune_epochs,
    batch_size=batch_size, population=population, data_root=data_root, progress=progress, num_tasks=1,
)
learner = AdaQPacknet(experiments.method_config("ada_qpacknet", settings, seed))  # data_root from the repository root
layer = learner.layer_names[0]
learner.model

# %% [markdown]
# ## 1. Free pool and sparsity search
# Every weight is free before the first task. Each candidate draws one prune ratio per layer, trains
# the free weights, prunes the smallest-magnitude ones and retrains the survivors; the fittest on the
# validation split (0.8 · accuracy + 0.2 · pruned share) wins.

# %%
step = learner.start_task(0)
learner.search_sparsity(step)
for number, c in enumerate(step.candidates):
    print(number, {k: round(v, 3) for k, v in c["prune_ratios"].items()}, f"val {c['val_accuracy']:.2f}%", f"fitness {c['fitness']:.4f}")
print("winner:", step.winner)
weights = raw_weight(prunable_layers(learner.model)[layer]).detach()
plots.pruning_histogram(weights, step.free[layer], step.keep[layer], layer);

# %% [markdown]
# ## 2. Quantisation with bit-width search
# From 6 bits down, every layer's surviving weights are replaced by a codebook fitted on them alone;
# the narrowest width whose validation accuracy loses less than the tolerance is kept.

# %%
float_survivors = weights[step.keep[layer]].clone()
learner.quantize_task(step)
for trial in step.bit_search.trace:
    print(trial["bits"][layer], "bits:", f"{trial['accuracy']:.2f}%", "accepted" if trial["accepted"] else "rejected")
print(f"float validation accuracy {step.float_accuracy:.2f}%")
plots.codebook_histogram(float_survivors, learner.codebooks[f"1/{layer}"], layer, step.bit_search.bits[layer]);

# %% [markdown]
# ## 3. Freeze
# The survivors become task 1's; the pruned weights stay free (owner 0) for task 2.

# %%
report = learner.freeze_task(step)
learner.acc_matrix.append(learner.evaluate_seen())
owner = owner_maps(learner.model)[layer]
distinct = {name: len(torch.unique(raw_weight(l).detach()[owner_maps(learner.model)[name] == 1])) for name, l in prunable_layers(learner.model).items()}
print("distinct values per layer:", distinct, "<= 2^bits =", 2 ** report["bits"])
print(f"test accuracy of task 1: {learner.acc_matrix[0][0]:.2f}%")
plots.owner_map_image(owner, layer);

# %% [markdown]
# ## 4. Pack
# The owner maps and the codes are entropy-coded into one file; loaded back, it gives the task's
# network, whose logits equal those recorded at freezing bit for bit.

# %%
packed_path = learner.write_packed(profile_folder("runs", profile) / "00_method_tour")
identical = learner.packed_logits_identical(packed_path)  # loaded on the device that recorded the probes
_, ledger = learner.pack()
print(f"{packed_path.name}: {ledger['packed_bytes']} bytes, entropy bound {ledger['entropy_bound_bytes']:.0f} bytes, "
      f"dense float32 network {ledger['dense_float32_bytes']} bytes; probe logits identical: {identical}")
pd.DataFrame(ledger["owner_maps"] + ledger["codes"])

# %%
results = experiments.notebook_results(
    "00_method_tour", profile, {"settings": settings},
    tour_run=learner.results(), distinct_values=distinct, packed_logits_identical=identical,
)
experiments.write_notebook_results(experiments.results_file(results_path, profile, "00_method_tour"), results);
