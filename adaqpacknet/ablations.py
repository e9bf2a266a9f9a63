"""Ablations: the sparsity-search and capacity variants, and sweeps that re-use trained networks.

``quantization_sweep``: each task's float sub-network quantised by every quantiser at every bit
width, one task at a time (earlier tasks stay as trained), accuracy measured on the test split.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .learner import AdaQPacknet
from .ownership import owner_maps, prunable_layers, raw_weight
from .quantization import quantize
from .training import evaluate


def quantization_sweep(
    learner: AdaQPacknet, quantizers: Sequence[str], bits: Sequence[int]
) -> list[dict[str, Any]]:
    """Rows ``{task, quantizer, bits, accuracy, code_bits, codebook_bits}`` for every task.

    Needs a learner whose tasks were kept in float32 (``quantizer="none"``): quantising weights
    that were already quantised would measure nothing. ``quantizer="float"`` rows (32 bits) give
    the reference accuracy.
    """
    if learner.config.quantizer != "none":
        raise ValueError(f"the sweep needs a float run (quantizer='none'), got quantizer={learner.config.quantizer!r}")
    layers = prunable_layers(learner.model)
    owners = owner_maps(learner.model)
    rows: list[dict[str, Any]] = []
    for index in range(len(learner.per_task)):
        task = learner.scenario.tasks[index]
        head = learner.model.heads[index]
        tensors = {name: raw_weight(layer) for name, layer in layers.items()}
        positions = {name: owners[name] == index + 1 for name in layers}
        tensors.update({"head": head.weight, "head.bias": head.bias})
        positions.update({"head": torch.ones_like(head.weight, dtype=torch.bool), "head.bias": torch.ones_like(head.bias, dtype=torch.bool)})
        original = {name: t.detach().clone() for name, t in tensors.items()}
        learner.show(index)

        def accuracy() -> float:
            return evaluate(learner.model, task.test, index, learner.config.eval_batch_size, learner.device)

        n_weights = sum(int(p.sum()) for p in positions.values())
        rows.append({"task": index + 1, "quantizer": "float", "bits": 32, "accuracy": accuracy(), "code_bits": 32 * n_weights, "codebook_bits": 0})
        for method in quantizers:
            for b in bits:
                codebook_bits = 0
                with torch.no_grad():
                    for name, t in tensors.items():
                        q = quantize(original[name][positions[name]], b, method)
                        t[positions[name]] = q.values().to(t.device)
                        codebook_bits += 32 * len(q.codebook)
                rows.append(
                    {"task": index + 1, "quantizer": method, "bits": b, "accuracy": accuracy(), "code_bits": b * n_weights, "codebook_bits": codebook_bits}
                )
                with torch.no_grad():
                    for name, t in tensors.items():
                        t.copy_(original[name])
        print(f"task {index + 1}: swept {len(quantizers)} quantizer(s) x {len(bits)} bit widths", flush=True)
    return rows
