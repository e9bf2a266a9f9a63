"""GPU check (`make gpu-check`): the package's guarantees hold on the GPU, on a bare GPU machine.

It needs only what such a machine has (Python 3.11 or 3.12, torch, torchvision, numpy, pandas,
scikit-learn, safetensors, pyyaml, tqdm) and three small wheels, kmeans1d, constriction and tabulate,
that `make wheelhouse` collects into wheelhouse/ where a package registry is reachable (about 0.6 MB;
carry the folder to the machine). No engine (Snakemake, papermill, Jupyter), no avalanche-lib, no
download, no apt: the runs train in this process, on fake data in the real on-disk formats.

1. Trains the check's runs on the device: every sub-network method (``VARIANTS``) on permuted
   Fashion-MNIST (MLP) and on split CIFAR-100 (AlexNet-like, the paper's network), 2 tasks, seed 0.
2. Every run: BWT exactly 0 (no forgetting); for the owner-map methods the packed file reloaded on
   the device gives test accuracies equal to the run's and probe logits bit-identical to those
   recorded when each task was frozen (``verify_packed_run``).
3. Epoch times, CPU vs device: one epoch of task 2's masked training (task 1 frozen) on each
   scenario, CPU and device in turns.

Writes ``gpu_check.{json,md}`` in benchmarks/results/<device>/ (or ``--out``); exits 1 if a check
fails. ``--device cpu`` runs the very same on the CPU: `make test` does (tests/test_gpu_check.py),
so that the check cannot rot where no GPU is at hand.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "wheelhouse"  # `make wheelhouse`
NEEDS_WHEELS = ("kmeans1d", "constriction", "tabulate")  # import names of the wheelhouse's packages


def wheel_fits(name: str, version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Whether the wheel file ``name`` can be imported by CPython ``version`` on x86_64 Linux:
    pure Python (py3-none-any), the stable ABI of an older CPython (cp32-abi3), or this CPython's
    own ABI (cp312-cp312), built for manylinux x86_64 or any platform."""
    match = re.fullmatch(r"[^-]+-[^-]+(?:-\d[^-]*)?-([^-]+)-([^-]+)-([^-]+)\.whl", name)
    if not match:
        return False
    python, abi, platform = match.groups()
    platform_ok = platform == "any" or (platform.startswith("manylinux") and platform.endswith("x86_64"))
    here = f"cp{version[0]}{version[1]}"
    if abi == "none":
        return platform_ok and any(tag in ("py3", f"py{version[0]}{version[1]}") for tag in python.split("."))
    if abi == "abi3":
        return platform_ok and python.startswith("cp3") and (3, int(python[3:])) <= tuple(version)
    return platform_ok and python == here and abi == here


def use_wheelhouse(wheelhouse: Path = WHEELHOUSE, target: Path = ROOT / "build" / "wheels") -> list[str]:
    """Make the packages this check needs importable where they are not installed: each fitting
    wheel of ``wheelhouse`` unzipped (a wheel is a zip of its import tree and its dist-info, which
    importlib.metadata reads) into ``target``/py<version>, put first on sys.path, as is the
    repository root (no `pip install` needed). Returns the wheels used."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    missing = []
    for module in NEEDS_WHEELS:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if not missing:
        return []
    wheels = sorted(p for p in wheelhouse.glob("*.whl") if wheel_fits(p.name)) if wheelhouse.is_dir() else []
    found = {p.name.split("-")[0].lower() for p in wheels}
    absent = [m for m in missing if m not in found]
    if absent:
        raise SystemExit(
            f"error: {', '.join(absent)} not installed and no wheel of {'it' if len(absent) == 1 else 'them'} for Python "
            f"{sys.version_info[0]}.{sys.version_info[1]} in {wheelhouse}: run `make wheelhouse` where a package registry is "
            f"reachable and bring the folder along"
        )
    folder = target / f"py{sys.version_info[0]}.{sys.version_info[1]}"
    used = []
    for wheel in wheels:
        if wheel.name.split("-")[0].lower() in missing:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(folder)
            used.append(wheel.name)
    sys.path.insert(0, str(folder))
    return used


WHEELS_USED = use_wheelhouse() if __name__ == "__main__" else []

import argparse  # noqa: E402  (after the wheelhouse: the package's imports need its wheels)
import os  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402

from bench_training import masked_trainer  # noqa: E402
from common import RESULTS, timed_in_turns, write  # noqa: E402

from adaqpacknet import experiments  # noqa: E402
from adaqpacknet.config import Config  # noqa: E402
from adaqpacknet.continual import scenario_of  # noqa: E402
from adaqpacknet.data.fake import write_fake_datasets  # noqa: E402
from adaqpacknet import methods, runs  # noqa: E402
from adaqpacknet.quantization import QUANTIZERS  # noqa: E402

# Every sub-network method: the guarantees (no forgetting, the packed file) are theirs. The classic
# strategies need avalanche-lib, which a bare GPU machine does not have; `make reproduce` runs them.
VARIANTS = ("ada_qpacknet", "ada_qpacknet_float", "packnet", "wsn", "independent")
SCENARIOS = {  # scenario -> its settings (the protocol network: model auto)
    "permuted_fashion_mnist": dict(batch_size=64),
    "split_cifar100": dict(batch_size=64),
}
SOURCES = ["fashion_mnist", "cifar100"]  # the fake data the scenarios read


def check_runs(device: torch.device, data_root: Path, runs_root: Path, quantizer: str = "kmeans") -> list[dict]:
    """Train every (scenario, method) afresh on ``device``; one row per run: method, scenario,
    device it ran on, BWT, the packed-file check and ok. ``quantizer``: Ada-QPacknet's (the
    variants without quantisation keep float32 whatever it is)."""
    shutil.rmtree(runs_root, ignore_errors=True)  # train afresh on this device
    rows = []
    for scenario, extra in SCENARIOS.items():
        settings = dict(scenario=scenario, num_tasks=2, epochs=1, finetune_epochs=1, population=2, seed=0,
                        data_root=str(data_root), device=device.type, progress=False, quantizer=quantizer, **extra)
        configs = experiments.method_configs(list(VARIANTS), [0], settings, {})
        for config, results in zip(configs, runs.run_configs(configs, runs_root)):
            folder = runs.run_dir(config, runs_root)
            row = {"scenario": scenario, "method": config.label, "ran_on": results["environment"]["device"],
                   "bwt": results["bwt"], "acc": results["acc"], "packed_check": "n/a"}
            ok = results["environment"]["device"].startswith(device.type)
            if methods.spec(config.method).frozen_tasks:
                ok &= results["bwt"] == 0.0
            if methods.spec(config.method).owner_maps:
                report = runs.verify_packed_run(folder, data_root=str(data_root))
                row["packed_check"] = "bit-identical" if report["ok"] else "MISMATCH"
                ok &= report["ok"]
            row["ok"] = bool(ok)
            rows.append(row)
    return rows


def epoch_times(device: torch.device, data_root: Path, repeats: int) -> list[dict]:
    """Seconds per epoch (gradient steps alone) on the CPU and on ``device``, in turns."""
    rows = []
    for scenario, extra in SCENARIOS.items():
        base = Config.from_dict({"scenario": scenario, **extra, "num_tasks": 2, "epochs": 1, "progress": False,
                                 "data_root": str(data_root), "cpu_threads": os.cpu_count() or 1})
        data = scenario_of(base)
        trainers = {kind: masked_trainer(base.replace(device=kind), data) for kind in dict.fromkeys(["cpu", device.type])}
        timings = timed_in_turns(trainers, repeats=repeats, device=device, own_time=True)
        steps = len(data.tasks[1].train) // base.batch_size  # the loader drops a last incomplete batch
        row = {"workload": f"{scenario} (fake, {len(data.tasks[1].train)} training images), {data.default_model}, batch {base.batch_size}",
               **{f"{kind}_s_per_epoch": t["median_s"] for kind, t in timings.items()},
               **{f"{kind}_steps_per_s": steps / t["median_s"] for kind, t in timings.items()}}
        if device.type == "cuda":
            row["speed-up"] = row["cpu_s_per_epoch"] / row["cuda_s_per_epoch"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: the same check on the CPU (make test)")
    parser.add_argument("--per-class", type=int, default=40, help="fake training images per class of the checked runs")
    parser.add_argument("--timing-per-class", type=int, default=300, help="fake training images per class of the timed epochs")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per device, after a warm-up")
    parser.add_argument("--out", default="", help="folder of gpu_check.{json,md} (default benchmarks/results/<device>)")
    parser.add_argument("--work", default=str(ROOT / "build" / "gpu-check"), help="folder of the fake data and the runs (emptied of runs first)")
    parser.add_argument("--quantizer", default="kmeans", choices=QUANTIZERS,
                        help="Ada-QPacknet's quantizer (k-means runs on the CPU whatever the device: 'linear' makes the CPU test quick)")
    args = parser.parse_args(argv)
    for name in ("per_class", "timing_per_class", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be 1 or more")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no usable CUDA device (torch.cuda.is_available() is False): run the check on a machine with a GPU, "
              "or with --device cpu to test it", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    work = Path(args.work)
    check_data, timing_data = work / "data", work / "timing-data"
    write_fake_datasets(check_data, per_class=args.per_class, sources=SOURCES)
    write_fake_datasets(timing_data, per_class=args.timing_per_class, sources=SOURCES)
    checks = check_runs(device, check_data, work / "runs", args.quantizer)
    times = epoch_times(device, timing_data, args.repeats)
    failed = [c for c in checks if not c["ok"]]
    notes = (
        f"{len(checks)} runs ({', '.join(VARIANTS)} on {' and '.join(SCENARIOS)}; fake data in the real formats, "
        f"{args.per_class} training images per class, 2 tasks, seed 0, Ada-QPacknet quantised by {args.quantizer}) trained in one process on {device.type}: "
        f"{len(checks) - len(failed)} passed (BWT exactly 0; packed file reloaded on the same device with equal accuracies "
        f"and bit-identical probe logits), {len(failed)} failed. Wheels unpacked from wheelhouse/: "
        f"{', '.join(WHEELS_USED) or 'none (installed)'}. Epoch times below: one epoch of task 2's masked training with "
        f"task 1 frozen, CPU with {os.cpu_count()} threads" + (" vs GPU." if device.type == "cuda" else ".")
    )
    folder = Path(args.out) if args.out else RESULTS / device.type
    write("gpu_check", "GPU check: guarantees and epoch times", times, device, notes, data={"checks": checks},
          timing=f"median of {args.repeats} epochs after a warm-up" + (", CPU and GPU in turns" if device.type == "cuda" else ""),
          folder=folder)
    for row in failed:
        print(f"FAILED: {row}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
