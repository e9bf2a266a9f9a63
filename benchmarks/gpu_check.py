"""GPU check (`make gpu-check`, on a machine with CUDA): the package's guarantees hold on the GPU.

1. The smoke profile and one paper-dry scenario (split CIFAR-100, AlexNet-like, fake data in the
   real format) run through the engine (`make reproduce`) on the GPU, in profiles of their own
   (gpu-smoke, gpu-paper-dry) so that no CPU run from the cache is reused.
2. Every run of them: zero forgetting (BWT exactly 0) for the sub-network methods, and for the
   owner-map methods the packed file reloaded on the GPU gives test accuracies equal to the run's
   and probe logits bit-identical to those recorded when each task was frozen (verify-packed).
3. Epoch times CPU vs GPU: one epoch of the masked training (task 2, task 1 frozen) on the
   permuted Fashion-MNIST MLP and on the split CIFAR-100 AlexNet-like network, in turns.

Writes benchmarks/results/<device>/gpu_check.{json,md}; exits 1 if any check fails. ``--device cpu``
runs the same checks on the CPU (to test this script where no GPU is at hand).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from bench_training import masked_trainer
from common import timed_in_turns, write

from adaqpacknet import grid
from adaqpacknet.config import Config
from adaqpacknet.continual import scenario_of
from adaqpacknet.data.fake import write_fake_datasets
from adaqpacknet.experiments import resolve, verify_packed_run
from adaqpacknet.results import OWNERSHIP_METHODS, read_json

WORK = resolve("build/gpu-check")
ZERO_FORGETTING = (*OWNERSHIP_METHODS, "wsn", "independent")  # Config.method
PAPER_DRY_DATA = resolve("build/paper-dry-data")  # the paper-dry profile's data_root
TIMING_DATA = WORK / "timing-data"  # fake CIFAR-100 big enough for an epoch worth timing


def gpu_profiles() -> dict[str, Path]:
    """Copies of the smoke profile and of paper-dry's split CIFAR-100 notebook, under new names."""
    params = WORK / "params"
    shutil.rmtree(params, ignore_errors=True)
    shutil.copytree(resolve("notebooks/params/smoke"), params / "gpu-smoke")
    (params / "gpu-paper-dry").mkdir(parents=True)
    split = yaml.safe_load(resolve("notebooks/params/paper-dry/11_split.yaml").read_text())
    split["methods"] = ["ada_qpacknet", "ada_qpacknet_float", "packnet", "wsn", "naive"]
    (params / "gpu-paper-dry" / "11_split.yaml").write_text(yaml.safe_dump(split))
    return {"gpu-smoke": params, "gpu-paper-dry": params}


def reproduce(profile: str, params_root: Path) -> None:
    command = ["make", "--no-print-directory", "reproduce", f"PROFILE={profile}", f"PARAMS_ROOT={params_root}",
               f"RESULTS_ROOT={WORK / 'results'}"]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=resolve("."), check=True)


def check_runs(profile: str, params_root: Path, device: torch.device) -> list[dict]:
    """One row per run: method, scenario, device it ran on, BWT, and the packed-file check."""
    plan = grid.plan(profile, params_root)
    rows = []
    for run in plan.runs.values():
        results = read_json(plan.runs_root / run.id / "results.json")
        row = {"profile": profile, "scenario": run.config.scenario, "method": run.config.label, "seed": run.config.seed,
               "ran_on": results["environment"]["device"], "bwt": results["bwt"], "packed_check": "n/a"}
        ok = results["environment"]["device"].startswith(device.type)
        if results["config"]["method"] in ZERO_FORGETTING:
            ok &= results["bwt"] == 0.0
        if results["config"]["method"] in OWNERSHIP_METHODS:
            report = verify_packed_run(plan.runs_root / run.id)
            row["packed_check"] = "bit-identical" if report["ok"] else "MISMATCH"
            ok &= report["ok"]
        row["ok"] = bool(ok)
        rows.append(row)
    return rows


def epoch_times(device: torch.device) -> list[dict]:
    """Seconds per epoch (gradient steps and the validation pass) on the CPU and on ``device``."""
    workloads = {
        "permuted Fashion-MNIST, MLP, batch 256": dict(scenario="permuted_fashion_mnist", batch_size=256),
        "split CIFAR-100 (fake), AlexNet-like, batch 64": dict(scenario="split_cifar100", batch_size=64, data_root=str(TIMING_DATA)),
    }
    rows = []
    for name, settings in workloads.items():
        base = Config.from_dict({**settings, "num_tasks": 2, "epochs": 1, "progress": False, "cpu_threads": os.cpu_count() or 1})
        scenario = scenario_of(base)
        trainers = {kind: masked_trainer(base.replace(device=kind), scenario) for kind in dict.fromkeys(["cpu", device.type])}
        timings = timed_in_turns(trainers, repeats=3, device=device)
        row = {"workload": name, **{f"{kind}_s_per_epoch": t["median_s"] for kind, t in timings.items()}}
        if device.type == "cuda":
            row["speed-up"] = row["cpu_s_per_epoch"] / row["cuda_s_per_epoch"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu only to test this script")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False): run make gpu-check on a machine with a GPU",
              file=sys.stderr)
        return 1
    device = torch.device(args.device)
    write_fake_datasets(PAPER_DRY_DATA)
    write_fake_datasets(TIMING_DATA, per_class=100, sources=["cifar100"])
    checks = []
    for profile, params_root in gpu_profiles().items():
        shutil.rmtree(grid.runs_root(profile), ignore_errors=True)  # train afresh on this device
        reproduce(profile, params_root)
        checks += check_runs(profile, params_root, device)
    times = epoch_times(device)
    failed = [c for c in checks if not c["ok"]]
    notes = (
        f"{len(checks)} runs of the gpu-smoke and gpu-paper-dry profiles trained on {device.type} through `make reproduce`: "
        f"{len(checks) - len(failed)} passed (BWT exactly 0 where the method guarantees it; packed file reloaded on the same "
        f"device with equal accuracies and bit-identical probe logits), {len(failed)} failed. Epoch times below: one epoch "
        f"of task 2's masked training with task 1 frozen, CPU with {os.cpu_count()} threads vs {device.type}."
    )
    write("gpu_check", "GPU check: guarantees and epoch times", times, device, notes, data={"checks": checks},
          timing="median of 3 epochs after a warm-up, CPU and GPU in turns")
    for row in failed:
        print(f"FAILED: {row}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
