"""Inference from the packed file: load and decode time, each task's network built from it, its
throughput against the dense float network, and the memory of inference.

Loads the packed file of ``bench_scaling.py``'s run. The dense float network is the
``MultiHeadNet`` a user would otherwise keep: float32 weights, the same task view (the weights of
tasks 1..t), its head t. After decoding, a task's network from the packed file is a plain dense
network too, so the two should run at the same speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from common import RESULTS, current_rss_mib, peak_rss_mib, timed, timed_in_turns, write

from adaqpacknet.config import Config
from adaqpacknet.continual import scenario_of
from adaqpacknet.packing import PackedNetwork, _checked_metadata
from adaqpacknet.training import pick_device

SHOWN_TASKS = (1, 10, 20, 50)  # rows of the Markdown table; the JSON has every task
PASSES = 5  # sweeps of a task's test set per timed call


def memory_of_inference(path: Path, batch: int) -> dict[str, float]:
    """In a fresh process: resident memory before loading, after loading, and the peak after every
    task's network has been built and run on one batch (random inputs: no dataset in memory)."""
    before = current_rss_mib()
    packed = PackedNetwork.load(path)
    loaded = current_rss_mib()
    x = torch.randn(batch, *packed.architecture["input_shape"])
    with torch.no_grad():
        for task in range(packed.num_tasks):
            packed(x, task)
    return {"rss_before_load_mib": before, "rss_after_load_mib": loaded, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packed", type=Path, default=None, help="a packed file (default: the scaling run's)")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the fresh-process probe
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    device = pick_device("auto")
    path = args.packed or RESULTS / device.type / "scaling_run" / "packed.safetensors"
    if not path.exists():
        sys.exit(f"error: {path} does not exist; run `python benchmarks/bench_scaling.py` first (make bench does)")
    if args.memory_only:
        print(json.dumps(memory_of_inference(path, 1000)))
        return

    read_and_check = timed(lambda: _checked_metadata(path, path.read_bytes()))
    load = timed(lambda: PackedNetwork.load(path, device=device))
    packed = PackedNetwork.load(path, device=device)
    config = Config.from_dict({**packed.config, "data_root": args.data_root})
    scenario = scenario_of(config)
    rows = []
    for task in range(packed.num_tasks):
        test = scenario.tasks[task].test
        x, _ = test.__getitems__(range(len(test)))
        batches = [b.to(device) for b in x.split(config.eval_batch_size)]

        def build() -> None:
            packed.networks.clear()
            packed.task_network(task)

        build_time = timed(build, device=device)
        dense = packed.multi_head_network(task).to(device).eval()
        with torch.no_grad():
            assert torch.equal(packed(batches[0], task), dense(batches[0], task)), "the packed and dense networks disagree"
            # PASSES sweeps of the test set per timing: one sweep (~12 ms here) is at the mercy of a
            # single scheduler hiccup.
            both = timed_in_turns({
                "packed": lambda: [packed(b, task) for _ in range(PASSES) for b in batches],
                "dense": lambda: [dense(b, task) for _ in range(PASSES) for b in batches],
            }, device=device)
            packed_time, dense_time = both["packed"], both["dense"]
        rows.append({
            "task": task + 1, "build_ms": 1000 * build_time["median_s"],
            "packed samples/s": PASSES * len(x) / packed_time["median_s"], "dense samples/s": PASSES * len(x) / dense_time["median_s"],
            "packed / dense": dense_time["median_s"] / packed_time["median_s"],
        })
    probe = subprocess.run([sys.executable, __file__, "--memory-only", "--packed", str(path)], capture_output=True, text=True, check=True)
    memory = json.loads(probe.stdout.strip().splitlines()[-1])
    shown = [r for r in rows if r["task"] in SHOWN_TASKS or len(rows) <= 10]
    ratios = sorted(r["packed / dense"] for r in rows)
    notes = (
        f"{path.name} of the scaling run: {path.stat().st_size / 1024:.1f} KiB, {packed.num_tasks} tasks. Read and verify "
        f"(header, SHA-256): {1000 * read_and_check['median_s']:.2f} ms; load (read, verify and entropy-decode every "
        f"owner map and code): {1000 * load['median_s']:.1f} ms, so decoding ~{1000 * (load['median_s'] - read_and_check['median_s']):.1f} ms. "
        f"Throughput over {PASSES} sweeps of each task's {len(x)} test images in batches of {config.eval_batch_size}, the "
        f"packed and dense networks timed in turns; packed / dense "
        f"over all {len(rows)} tasks: median {ratios[len(ratios) // 2]:.3f}, min {ratios[0]:.3f} (target >= 0.9). "
        f"Memory of inference, in a fresh process: {memory['rss_before_load_mib']:.0f} MiB before loading (Python and "
        f"torch), {memory['rss_after_load_mib']:.0f} MiB after loading, peak {memory['peak_rss_mib']:.0f} MiB after every "
        f"task's network ran on a batch of 1000."
    )
    write("packed_inference", "Inference from the packed file", shown, device, notes, {
        "all_tasks": rows, "read_and_check": read_and_check, "load": load, "memory": memory,
    })


if __name__ == "__main__":
    main()
