"""Scaling with the number of tasks, the cost of the two searches, and the memory of training.

One Ada-QPacknet run of 50 permuted Fashion-MNIST tasks, reported after 10, 20 and 50 tasks: a
task's permutation, data split and seed never depend on the number of tasks, so the state after
task 10 is the final state of a 10-task run. Per task, the sparsity search (training of every
candidate included) and the bit-width search are set against the training time. The run's packed
file (``benchmarks/results/<device>/scaling_run/``) is what ``bench_inference.py`` loads.
"""

from __future__ import annotations

import argparse
import shutil
import time

from common import RESULTS, current_rss_mib, peak_rss_mib, write

from adaqpacknet.config import Config
from adaqpacknet.methods import learner_for

CHECKPOINTS = (10, 20, 50)
ONE_RUN = "one run, wall-clock seconds as measured (a run this long is not repeated)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=list(CHECKPOINTS), help="report after these many tasks")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--population", type=int, default=2)
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    checkpoints = sorted(set(args.tasks))
    config = Config(scenario="permuted_fashion_mnist", num_tasks=checkpoints[-1], epochs=args.epochs, finetune_epochs=1,
                    batch_size=args.batch_size, population=args.population, data_root=args.data_root, progress=False, seed=0)
    learner = learner_for(config)
    rss_with_data = current_rss_mib()
    folder = RESULTS / learner.device.type / "scaling_run"
    shutil.rmtree(folder, ignore_errors=True)
    rows, cost = [], []
    started = time.perf_counter()
    for index in range(config.num_tasks):
        # run()'s loop without checkpoints: learn, re-measure every seen task; pack at the checkpoints.
        report = learner.learn_task(index)
        learner.acc_matrix.append(learner.evaluate_seen())
        timings = report["timings"]
        cost.append({
            "task": index + 1, "train_s": timings["train_s"], "search_s": timings["search_s"], "quantize_s": timings["quantize_s"],
            "total_s": timings["total_s"],
            # The search trains `population` candidates: its cost in units of one candidate's training.
            "search / one training": timings["search_s"] / (timings["train_s"] / config.population),
            "bit search / training": timings["quantize_s"] / timings["train_s"],
            "bits": report["bits"],
        })
        tasks = index + 1
        if tasks in checkpoints:
            learner.write_outputs(folder)
            results = learner.results()
            rows.append({
                "tasks": tasks,
                "s/task (mean)": (time.perf_counter() - started) / tasks,
                "s/task (last 10)": sum(c["total_s"] for c in cost[-10:]) / len(cost[-10:]),
                "capacity used %": 100 * results["capacity_used"]["total"],
                "packed KiB": results["packed_bytes"] / 1024,
                "bits/body weight": results["bits_ledger"]["bits_per_body_weight"],
                "ACC %": results["acc"],
                "acc of last task %": results["acc_matrix"][-1][-1],
            })
    notes = (
        f"Ada-QPacknet on permuted Fashion-MNIST, MLP 784-100-100, {config.num_tasks} tasks in one run, seed 0, batch "
        f"{config.batch_size}, {config.epochs}+{config.finetune_epochs} epochs, population {config.population}. "
        f"s/task (mean) includes re-measuring every seen task after each task. Peak resident memory of this "
        f"training process: {peak_rss_mib():.0f} MiB ({rss_with_data:.0f} MiB once the {config.num_tasks} tasks' data was loaded)."
    )
    write("scaling", "Scaling with the number of tasks", rows, learner.device, notes, {
        "per_task_cost": cost, "peak_rss_mib": peak_rss_mib(), "rss_after_data_mib": rss_with_data, "config": config.to_dict(),
    }, timing=ONE_RUN)
    first = cost[: min(10, len(cost))]
    search_rows = [{k: c[k] for k in ("task", "train_s", "search_s", "quantize_s", "search / one training", "bit search / training", "bits")} for c in first]
    write("search_cost", "Cost of the sparsity search and the bit-width search, per task", search_rows, learner.device,
          f"The first {len(first)} tasks of the scaling run (settings there). search_s includes training all "
          f"{config.population} candidates; 'search / one training' = search_s / (train_s / population).", timing=ONE_RUN)


if __name__ == "__main__":
    main()
