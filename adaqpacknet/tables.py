"""Tables from results files: one row per run, then mean +- std over seeds, as Markdown and LaTeX.

- T1 task-incremental results: ACC, BWT, forgetting, capacity and packed size per method and
  scenario;
- T2 quantisation: accuracy and size of float, linear and k-means at each bit width;
- T3 cost: train, search and quantisation time;
- T5 storage: the owner-map methods' packed files next to their entropy bound, one float32 network
  per task and the dense float32 network for scale;
- T4 class-incremental results: ACC with the task inferred, task-identification accuracy, BWT and
  the cost of inference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import methods
from .data.scenarios import SCENARIOS
from .metrics import SEED_STD_DDOF
from .models import has_batch_norm
from .packing import storage_comparison
from .results import write_text
from .tuning import at_grid_edge

T1_CAPTION = (
    "T1: task-incremental results, mean ± std over seeds. ACC = mean final test accuracy (%); "
    "BWT (Lopez-Paz & Ranzato 2017) and forgetting (Chaudhry et al. 2018) in pp; capacity = share of "
    "body weights owned (WSN: selected by some task's mask). Bytes by two rules, in KiB. size = the bytes "
    "to predict every learned task: the owner-map methods (Ada-QPacknet, PackNet), their packed file on "
    "disk (entropy-coded owner maps; codes and codebooks, or float32 weights; header and metadata); WSN, "
    "float32 for the weights some mask selects + its masks entropy-coded by the same coder + float32 heads "
    "(no header counted); independent, one float32 network per task; joint and the classic strategies, one "
    "float32 network with every head. state = the bytes a method keeps after its last task beyond "
    "size, because training a later task reads them, summed over the tensors it holds (numel x element size; "
    "scratch overwritten before it is read not counted): replay and A-GEM, their buffers' samples as held "
    "(float32 input + int64 label + int64 task label each); GEM, its memory of every task, the same; EWC, per "
    "learned task a float32 copy of every parameter (every head) and its Fisher importance; SI, float32 "
    "reference weights, importances and path integral of the body weights; LwF, its teacher, a float32 copy of "
    "the network; joint training, every task's training and validation images (uint8) and labels (int64); "
    "WSN, the float32 weights no mask selects (later tasks train them) + a float32 score per body weight; 0 "
    "for naive, independent networks (each task starts anew) and the owner-map methods (owner maps and owned "
    "weights are in the packed file, free weights are re-initialised; with free_init='keep', the float32 free "
    "weights). n/a: not defined for the method (joint training has no task "
    "sequence). Budget: every method's reported network trains the same epochs per task; epochs = as run, "
    "train + retrain after pruning for the pruning methods, x the candidates of Ada-QPacknet's sparsity "
    "search (one kept), and x the points of a tuned strategy's grid, one run each, of which the best on "
    "validation is reported per seed (T1c); steps/task = optimiser steps per task of the reported run, every "
    "candidate included (_p1: one candidate, the same steps as every other method); every method keeps the "
    "epoch with its best validation accuracy. memory = training samples a rehearsal strategy keeps over all "
    "tasks, one budget for replay, GEM and A-GEM (n/a for the others); tuned = the value each seed chose, * "
    "where it is an end of the grid. batch = training batch size; eval batch = evaluation batch size of "
    "networks with batch-statistics BatchNorm, whose accuracy depends on it (evaluation splits are shuffled "
    "once, so batches mix classes); n/a for networks without BatchNorm."
)
HEADLINE_CAPTION = (
    "Headline: the method, its capacity-budget variant and the strongest peers of T1, mean ± std over seeds. "
    "ACC = mean final test accuracy (%); BWT in pp; size = storage in KiB by T1's one rule; x dense = "
    "one dense float32 network (body and one head) / size."
)
T2_CAPTION = (
    "T2: each task's float sub-network quantised alone (earlier tasks in float), test accuracy (%) "
    "mean ± std over tasks and seeds; size = codes + codebooks of the task's weights in KiB."
)
SPARSITY_CAPTION = (
    "T1b: sparsity and capacity ablation of Ada-QPacknet, mean ± std over seeds. reference: the paper's "
    "search, prune ratios ~ U[0.4, 0.7] of the free weights, P candidates (P=2 unless named); fixed: one "
    "ratio for every layer and task (PackNet's schedule, quantised), with 1 candidate or with P (the best of P "
    "trainings without a ratio search: the search's control); budget: every task an equal share of "
    "the pool left for it and the tasks to come (capacity_rule='budget'), with the capacity budget (share of "
    "each layer all tasks may own) and quantisation tolerance named when not 100% and 2 pp; no reuse: each "
    "task trains and infers with its own weights only, not those of earlier tasks. ACC, BWT in %, pp; "
    "capacity = share of body weights owned; size = the packed file (KiB); x dense = one dense float32 "
    "network (body and one head) / the packed file."
)
TUNING_CAPTION = (
    "T1c: the regularisation strategies' key hyperparameter (task-incremental, and _single_head: "
    "class-incremental, T4), tried at each value of its grid (factors of the profile's setting, "
    "tuning.CLASSIC_GRID) on every seed, mean ± std over seeds. val ACC = the final network's "
    "mean validation accuracy over the tasks (%), which chooses the value per seed; chosen = seeds that chose "
    "it (T1 and T4 report those runs); edge = the value is an end of the grid, so a choice there may lie "
    "beyond it; test ACC = the same runs' ACC (%), shown, never used to choose. Replay, GEM and A-GEM are not "
    "tuned: their memory is a fixed budget (T1)."
)
T3_CAPTION = (
    "T3: cost per run in seconds, mean ± std over seeds: training (all candidates), the sparsity "
    "search (training included) and the bit-width search. A tuned classic strategy's row is the run it "
    "chose; its grid trained as many runs as T1's epochs column says."
)
T5_CAPTION = (
    "T5: storage of the owner-map methods' trained tasks, KiB, mean ± std over seeds: one float32 network per "
    "task, for scale; the packed file, measured on disk (T1's size), next to its entropy bound (order-0 "
    "entropy of owner maps and codes + codebooks, or + float32 weights). x dense = one float32 network with "
    "one head / packed file; bits/weight = packed file bits per body weight."
)


_T4_COMMON = (
    "Sub-network methods "
    "run every learned task's sub-network and pick the task by the criterion. entropy: lowest predictive "
    "entropy; max_softmax: highest maximum probability; energy: highest log-sum-exp of the logits; "
    "calibrated_entropy: entropy after each head's temperature (>= 1, fitted on its own task's validation "
    "split), over log(head width); mahalanobis: smallest Mahalanobis distance of the sub-network's features "
    "to one of its classes (means and pooled covariance from its own validation split); supsup: SupSup's "
    "one-shot inference, minus the gradient of the entropy of the outputs superposed with weights 1/k; "
    "infomax (batches only): highest mutual information of a head's predictions over the batch. "
    "epochs = training epochs per task as in T1 (every method the same per task; the sub-network runs are T1's); "
    "memory = training samples a rehearsal strategy keeps over all tasks, the same budget for replay, GEM "
    "and A-GEM. Single-head strategies are tuned as in T1 (T1c; tuned = value each seed chose, * at the grid's "
    "end). ACC, BWT and forgetting (%, pp) over the "
    "class-incremental accuracy matrix; task id = share of test samples whose task was inferred right; task "
    "given = accuracy with the true task's head on the same test batches, which bounds ACC; passes = "
    "forward passes per test sample; ms/batch = time of every sub-network's pass per test batch of the "
    "protocol (not the scoring), on the machine that ran it."
)
T4_CAPTION = (
    "T4: class-incremental results per sample (no task id at test time, test batches mix the seen tasks "
    "and each sample's task is inferred alone), mean ± std over seeds. Classic strategies (_single_head) "
    "are trained and tested with one head over all classes seen so far (one_head). " + _T4_COMMON
)
T4B_CAPTION = (
    "T4b: class-incremental results of the labelled-batch protocol: test batches of B samples of one task, "
    "the task inferred once per batch (an assumption about the test stream that T4's per-sample rows do "
    "not make; not comparable with them or with one-head strategies), mean ± std over seeds. " + _T4_COMMON
)


def setting(run: dict[str, Any]) -> str:
    """What makes runs comparable: scenario, network and number of tasks."""
    return f"{run['scenario']} ({run['model']}, {run['num_tasks']} tasks)"


def unique_runs(notebooks: Iterable[dict[str, Any]], section: str = "runs") -> list[tuple[str, dict[str, Any]]]:
    """``(notebook, run)`` for every run in the notebooks' ``section``, each run once.

    Run folders are shared between notebooks (20 re-uses 10's float runs), so the same run can be
    listed twice; it is identified by its setting, method label, seed and result.
    """
    seen, found = set(), []
    for nb in notebooks:
        for run in nb.get(section, []):
            key = (setting(run), run.get("variant", run["method"]), run["seed"], run["acc"])
            if key not in seen:
                seen.add(key)
                found.append((nb["notebook"], run))
    return found


def runs_frame(notebooks: Iterable[dict[str, Any]], section: str = "runs") -> pd.DataFrame:
    """One row per run found in the notebooks' ``section`` ("runs", or "variants" of an ablation,
    whose runs are labelled by their ``variant``)."""
    notebooks = list(notebooks)
    # How many grid points each tuned run's strategy trained (the scenario notebooks' tuning records).
    tuning = {(record["scenario"], record["method"], record["seed"]): record for nb in notebooks for record in nb.get("tuning", [])}
    rows = []
    for notebook, run in unique_runs(notebooks, section):
        row = {
            "notebook": notebook,
            "setting": setting(run),
            "scenario": run["scenario"],
            "model": run["model"],
            "method": run.get("variant", run["method"]),
            "seed": run["seed"],
            "tasks": run["num_tasks"],
            "epochs": _epochs(run["config"], len(tuning.get((run["scenario"], run["method"], run["seed"]), {}).get("points", [None]))),
            "steps": gradient_steps_per_task(run),
            "batch": run["config"]["batch_size"],
            "memory": memory_samples(run["config"], run["num_tasks"]),
            "tuned": _tuned(tuning.get((run["scenario"], run["method"], run["seed"]))),
            "eval_batch": _eval_batch(run),
            "acc": run["acc"],
            "bwt": run["bwt"] if run["bwt"] is not None else math.nan,
            "forgetting": run["forgetting"] if run["forgetting"] is not None else math.nan,
            "capacity": 100 * run["capacity_used"]["total"] if "capacity_used" in run else math.nan,
            "mean_bits": _mean_bits(run),
            "size_kib": run["model_bytes"] / 1024,
            "state_kib": run["state_bytes"] / 1024 if run.get("state_bytes") is not None else math.nan,
            "dense_kib": run["dense_float32_bytes"] / 1024,
            **{key: run["timings"].get(key, math.nan) for key in ("train_s", "search_s", "quantize_s", "total_s")},
        }
        if "packed_bytes" in run:  # the owner-map methods: their storage compared (T5)
            row.update({f"{layout}_kib": size / 1024 for layout, size in storage_comparison(run).items()})
            row.update(
                bound_kib=run["entropy_bound_bytes"] / 1024,
                x_dense=run["dense_float32_bytes"] / run["packed_bytes"],
                bits_per_weight=run["bits_ledger"]["bits_per_body_weight"],
            )
        rows.append(row)
    return pd.DataFrame(rows)


def gradient_steps_per_task(run: dict[str, Any]) -> float:
    """Optimiser steps per task, every candidate and retraining included, as run: the epochs each
    task ran (``per_task[...]["epochs_run"]``) x its training batches per epoch (the last partial
    batch is dropped). Joint training runs once over every task's data: its steps / tasks."""
    batch, sizes = run["config"]["batch_size"], run["train_samples"]
    if not run["sequential"]:
        return run["per_task"][-1]["epochs_run"] * (sum(sizes) // batch) / len(sizes)
    return sum(task["epochs_run"] * (n // batch) for task, n in zip(run["per_task"], sizes)) / len(sizes)


def memory_samples(config: dict[str, Any], num_tasks: int) -> str:
    """Training samples a rehearsal strategy stores after ``num_tasks`` tasks; "n/a" for the others."""
    memory = methods.spec(config["method"]).memory_field
    if memory is None:
        return "n/a"
    field, per_task = memory
    return str(config[field] * (num_tasks if per_task else 1))


def _tuned(record: dict[str, Any] | None) -> str:
    """The value a seed chose on validation, "*" when it is an end of its grid; "n/a" untuned."""
    if record is None:
        return "n/a"
    return ", ".join(f"{v:g}" for v in record["chosen"].values()) + ("*" if record.get("edge") else "")


def _epochs(config: dict[str, Any], grid_points: int = 1) -> str:
    """Training epochs per task as run (``Config.epochs_per_task`` for every method): "3" for plain
    training, "2+1" for train + retrain after pruning, "(2+1)x2" when a sparsity search trains that
    many candidates (x3 with the winner retrained from the start, search_keep="retrain"), and ", x3
    grid" for a strategy trained at each of the points of its hyperparameter grid."""
    grid = f", x{grid_points} grid" if grid_points > 1 else ""
    budget = config["epochs"] + config["finetune_epochs"]
    method = methods.spec(config["method"])
    if not method.prunes:  # methods that prune retrain: their epochs read "train+retrain"
        return f"{budget}{grid}"
    if config.get("prune_schedule", "train_prune_retrain") == "train_prune_retrain" and config["finetune_epochs"]:
        per_candidate = f"{config['epochs']}+{config['finetune_epochs']}"
    else:
        per_candidate = str(budget)
    trainings = config["population"] if method.searches else 1
    if trainings > 1 and config.get("search_keep") == "retrain":
        trainings += 1
    return f"({per_candidate})x{trainings}" if trainings > 1 else per_candidate


def _eval_batch(run: dict[str, Any]) -> str:
    """The evaluation batch size where the network's accuracy depends on it (batch-statistics BatchNorm)."""
    if has_batch_norm(run["model"], SCENARIOS[run["scenario"]].input_shape):
        return str(run["config"]["eval_batch_size"])
    return "n/a"


def _mean_bits(run: dict[str, Any]) -> float:
    """Bits per owned weight, weighted by weights owned; 32 for methods that keep float32."""
    if "bit_widths" not in run:
        return 32.0
    bits = [t["layer_bits"] for t in run["per_task"]]
    owned = [t["owned_weights"] for t in run["per_task"]]
    total_owned = sum(sum(o.values()) for o in owned)
    return sum(n * b[layer] for o, b in zip(owned, bits) for layer, n in o.items()) / max(total_owned, 1)


def mean_std(frame: pd.DataFrame, by: list[str], columns: dict[str, int]) -> pd.DataFrame:
    """``mean ± std`` strings (``metrics.STD_DEFINITION``) with the given decimals."""
    grouped = frame.groupby(by, sort=False)
    out = grouped.size().rename("runs").to_frame()
    for column, decimals in columns.items():
        mean = grouped[column].mean()
        std = grouped[column].std(ddof=SEED_STD_DDOF).fillna(0.0)  # one run: no spread
        # n/a where a method has no such number (a joint run's BWT, a float method's search time).
        out[column] = ["n/a" if math.isnan(m) else f"{m:.{decimals}f} ± {s:.{decimals}f}" for m, s in zip(mean, std)]
    return out.reset_index()


def table_t1(runs: pd.DataFrame) -> pd.DataFrame:
    """T1: ACC, BWT, forgetting, capacity, mean bits, bytes to predict and state kept to learn, per
    scenario and method, with the training budget (epochs, gradient steps per task, memory) and the
    values tuning chose (one per seed)."""
    keys = ["scenario", "model", "tasks", "method", "epochs", "steps", "batch", "eval_batch", "memory"]
    table = mean_std(
        runs.assign(steps=runs["steps"].round().astype(int)), keys,
        {"acc": 2, "bwt": 2, "forgetting": 2, "capacity": 1, "mean_bits": 2, "size_kib": 1, "state_kib": 1},
    )
    tuned = runs.groupby(keys[:4], sort=False)["tuned"].agg(lambda values: "; ".join(values) if set(values) != {"n/a"} else "n/a")
    table = table.merge(tuned.reset_index(), on=keys[:4])
    return table.rename(columns={"eval_batch": "eval batch", "steps": "steps/task"})


def table_headline(runs: pd.DataFrame) -> pd.DataFrame:
    """The README's table: T1's ACC, BWT and size for ``methods.HEADLINE``, with the size ratio."""
    chosen = runs[runs["method"].isin(methods.HEADLINE)]
    chosen = chosen.assign(x_dense=chosen["dense_kib"] / chosen["size_kib"], order=chosen["method"].map(methods.HEADLINE.index))
    chosen = chosen.sort_values(["scenario", "order"], kind="stable")
    return mean_std(chosen, ["scenario", "tasks", "method"], {"acc": 2, "bwt": 2, "size_kib": 1, "x_dense": 1}).rename(
        columns={"size_kib": "size KiB", "x_dense": "x dense"}
    )


def table_sparsity(variants: pd.DataFrame) -> pd.DataFrame:
    """T1b: ACC, BWT, capacity, mean bits, packed size and compression per scenario and variant."""
    return mean_std(
        variants, ["scenario", "model", "tasks", "method", "epochs", "batch"],
        {"acc": 2, "bwt": 2, "capacity": 1, "mean_bits": 2, "size_kib": 1, "x_dense": 2},
    ).rename(columns={"method": "variant", "x_dense": "x dense"})


def tuning_frame(notebooks: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per grid point tried, from the scenario notebooks' ``tuning`` sections."""
    rows = [
        {
            "scenario": record["scenario"], "method": record["method"], "seed": record["seed"],
            "hyperparameter": ", ".join(point["values"]), "value": ", ".join(f"{v:g}" for v in point["values"].values()),
            "val_acc": point["validation_acc"], "test_acc": point["test_acc"], "chosen": point["values"] == record["chosen"],
            "edge": "yes" if at_grid_edge(point["values"], [p["values"] for p in record["points"]]) else "",
        }
        for nb in notebooks
        for record in nb.get("tuning", [])
        for point in record["points"]
    ]
    return pd.DataFrame(rows)


def table_tuning(frame: pd.DataFrame) -> pd.DataFrame:
    """T1c: validation and test ACC of every grid point of every tuned strategy, how often it was
    chosen, and whether it is an end of the grid."""
    keys = ["scenario", "method", "hyperparameter", "value", "edge"]
    table = mean_std(frame, keys, {"val_acc": 2, "test_acc": 2})
    chosen = frame.groupby(keys, sort=False)["chosen"].sum().astype(int).rename("chosen").reset_index()
    table = table.merge(chosen, on=keys)
    return table[[*keys, "runs", "val_acc", "chosen", "test_acc"]].rename(columns={"val_acc": "val ACC", "test_acc": "test ACC"})


def class_incremental_frame(notebooks: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, criterion) from the notebooks' ``class_incremental`` sections."""
    notebooks = list(notebooks)
    tuning = {(record["scenario"], record["method"], record["seed"]): record for nb in notebooks for record in nb.get("tuning", [])}
    rows = [
        {
            "scenario": record["scenario"], "model": record["model"], "tasks": record["num_tasks"],
            "method": record["method"], "criterion": record["criterion"],
            # Which test batches the task was inferred from: each sample alone, or a batch of B
            # samples of one task (an assumption of the protocol, not of the method).
            "protocol": "per sample" if record["protocol"] == "per_sample" else f"batch of {record['batch_size']}",
            "seed": record["seed"],
            "epochs": _epochs(record["config"], len(tuning.get((record["scenario"], record["method"], record["seed"]), {}).get("points", [None]))),
            "memory": memory_samples(record["config"], record["num_tasks"]),
            "tuned": _tuned(tuning.get((record["scenario"], record["method"], record["seed"]))),
            "acc": record["acc"], "bwt": record["bwt"], "forgetting": record["forgetting"],
            "task_id": record["task_id_accuracy"],
            "task_given": sum(record["task_given_accuracy_per_task"]) / len(record["task_given_accuracy_per_task"]),
            "passes": record["forward_passes_per_sample"],
            "ms_per_batch": 1000 * record["seconds_per_batch"],
        }
        for nb in notebooks
        for record in nb.get("class_incremental", [])
    ]
    return pd.DataFrame(rows)


def table_t4(frame: pd.DataFrame, protocol: str = "per sample") -> pd.DataFrame:
    """T4 (``protocol="per sample"``) or T4b (``"batch"``: every "batch of B" row): class-incremental
    ACC, task identification, BWT and the cost of task inference, with each row's training budget."""
    if protocol not in ("per sample", "batch"):
        raise ValueError(f"protocol={protocol!r}; valid choices: 'per sample', 'batch'")
    rows = frame[(frame["protocol"] == "per sample") == (protocol == "per sample")]
    keys = ["scenario", "model", "tasks", "method", "epochs", "memory", "criterion", "protocol", "passes"]
    table = mean_std(rows, keys, {"acc": 2, "task_id": 2, "bwt": 2, "forgetting": 2, "task_given": 2, "ms_per_batch": 1})
    tuned = rows.groupby(keys, sort=False)["tuned"].agg(lambda values: "; ".join(values) if set(values) != {"n/a"} else "n/a")
    return table.merge(tuned.reset_index(), on=keys)


def table_t3(runs: pd.DataFrame) -> pd.DataFrame:
    """T3: training, search and quantisation seconds per scenario and method."""
    return mean_std(runs, ["scenario", "model", "tasks", "method"], {"train_s": 1, "search_s": 1, "quantize_s": 1, "total_s": 1})


def table_t5(runs: pd.DataFrame) -> pd.DataFrame:
    """T5: bytes of the same trained tasks under each storage layout, per scenario and method."""
    columns = ["float32_per_task_kib", "packed_kib", "bound_kib", "x_dense", "bits_per_weight"]
    owning = runs.reindex(columns=[*runs.columns, *(c for c in columns if c not in runs)])
    return mean_std(
        owning[owning["packed_kib"].notna()], ["scenario", "model", "tasks", "method"],
        {"float32_per_task_kib": 1, "packed_kib": 1, "bound_kib": 1, "dense_kib": 1, "x_dense": 2, "bits_per_weight": 3},
    )


def sweep_frame(notebooks: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (notebook run, task, quantizer, bits) from the notebooks' ``sweep`` sections."""
    rows = [
        {"setting": sweep["setting"], "scenario": sweep["scenario"], "seed": sweep["seed"], **row}
        for nb in notebooks
        for sweep in nb.get("sweeps", [])
        for row in sweep["rows"]
    ]
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["size_kib"] = (frame["code_bits"] + frame["codebook_bits"]) / 8 / 1024
    return frame


def table_t2(sweep: pd.DataFrame) -> pd.DataFrame:
    """T2: accuracy and size per scenario, quantizer and bit width (mean ± std over tasks and seeds)."""
    ordered = sweep.sort_values(["setting", "quantizer", "bits"], ascending=[True, True, False])
    table = mean_std(ordered, ["setting", "quantizer", "bits"], {"accuracy": 2, "size_kib": 2})
    return table.rename(columns={"runs": "tasks x seeds"})


def write_table(frame: pd.DataFrame, stem: str | Path, caption: str) -> list[Path]:
    """``<stem>.md`` (caption, then a pipe table) and ``<stem>.tex`` (a LaTeX table)."""
    stem = Path(stem)
    markdown = stem.with_suffix(".md")
    latex = stem.with_suffix(".tex")
    write_text(markdown, f"{caption}\n\n{frame.to_markdown(index=False)}\n")
    write_text(latex, frame.to_latex(index=False, caption=caption, label=f"tab:{stem.name}").replace("±", r"$\pm$"))
    return [markdown, latex]
