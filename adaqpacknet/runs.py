"""Runs: a run's folder (the run cache), training a run into it, and checking a finished one.

A run's folder is named by a hash of its config (``run_dir``), so two notebooks asking for the same
run share it (the second resumes a finished checkpoint and returns at once), and a changed parameter
gets a folder of its own. Runs on the same data share one built Scenario (``on_shared_scenarios``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load as load_safetensors

from .config import Config
from .continual import RESUME_FREE_KEYS, ContinualLearner, scenario_of
from .data import Scenario
from .errors import CorruptFileError
from .files import read_regular
from .methods import learner_for
from .packing import PACKED_FILE, PROBES_FILE, PackedNetwork, probe_batch
from .results import (
    MAX_RUN_JSON_BYTES,
    SCHEMA_VERSION,
    accuracy_matrix_problem,
    folder_lock,
    read_json,
    remove_leftovers,
    resolve,
)
from .training import evaluate


def config_hash(config: Config) -> str:
    """Short hash of the settings that change results (not progress bars, device or data path)."""
    relevant = {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE_KEYS}
    # A new results schema gets new folders: runs of an older package version are not reused.
    relevant["schema_version"] = SCHEMA_VERSION
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]


def run_dir(config: Config, runs_root: str | Path) -> Path:
    """``<runs_root>/<scenario>/<method>/<config hash>-seed<seed>``."""
    return resolve(runs_root) / config.scenario / config.label / f"{config_hash(config)}-seed{config.seed}"


def data_key(config: Config) -> tuple:
    """The Config fields that build a run's scenario: equal keys, identical tensors (``build_scenario``)."""
    return (config.scenario, config.seed, config.data_root, config.num_tasks, config.val_fraction, config.class_order)


def on_shared_scenarios(configs: list[Config]) -> Iterator[tuple[int, Config, Scenario]]:
    """``(index, config, scenario)`` for every config, grouped by their data (``data_key``, groups
    in order of first appearance, each group in its order), each group on one built Scenario: one
    scenario's tensors are alive at a time, and the classic strategies' float copies of its training
    images (``classic._train_inputs``) are made once per group."""
    keys = [data_key(config) for config in configs]
    first = {key: keys.index(key) for key in keys}
    shared: tuple[tuple, Scenario] | None = None
    for index in sorted(range(len(configs)), key=lambda i: first[keys[i]]):
        if shared is None or shared[0] != keys[index]:
            shared = None  # the previous scenario's tensors go before the next one's are built
            shared = (keys[index], scenario_of(configs[index]))
        yield index, configs[index], shared[1]


def run_configs(configs: list[Config], runs_root: str | Path, keep_going: bool = False) -> list[dict[str, Any] | None]:
    """Results of every config (validated beforehand), in their order, each run resumed from its
    folder when it exists.

    The runs go grouped by their data, each group on one Scenario (``on_shared_scenarios``): a
    notebook's runs or a batch of runs (``grid.Plan.batches``) build each scenario once. Each run's
    results are those it gets alone. With ``keep_going``, a run that fails is reported (its
    traceback on stderr, its result None) and the runs after it still train; without, its error
    stops the loop.
    """
    results: list[dict[str, Any] | None] = [None] * len(configs)
    for number, (index, config, scenario) in enumerate(on_shared_scenarios(configs), start=1):
        print(f"run {number}/{len(configs)}: {config.label} on {config.scenario}, seed {config.seed}", flush=True)
        learner = None
        try:
            learner = learner_for(config, scenario)
            results[index] = run_learner(learner, run_dir(config, runs_root))
        except Exception:
            if not keep_going:
                raise
            traceback.print_exc()
            print(f"run {number}/{len(configs)} FAILED: {run_dir(config, runs_root)}", flush=True)
        # A learner that holds reference cycles (``ContinualLearner.holds_cycles``: a classic
        # strategy that trained here, 1.6 GB of float tensors and state on permuted Fashion-MNIST)
        # is freed only when the cyclic collector runs: 21 of them took a notebook to 15 GB. Collect
        # at once, and only then (~0.25 s a collection with avalanche imported). The shared float
        # copies stay, for the next run.
        if learner is not None:
            cycles, learner = learner.holds_cycles, None
            if cycles:
                gc.collect()
    return results


def load_learner(config: Config, runs_root: str | Path, scenario: Scenario | None = None) -> ContinualLearner:
    """A learner restored from the finished run of ``config`` (run first if needed), on ``scenario``
    when given (it must be ``config``'s data: ``on_shared_scenarios``)."""
    learner = learner_for(config, scenario)
    run_learner(learner, run_dir(config, runs_root))
    return learner


# A probe file holds 64 float32 logits rows (packing.PROBE_SIZE) per task: at most 255 tasks (owner
# ids are uint8) of heads up to 1000 classes is 62 MiB; anything larger is not one.
MAX_PROBE_BYTES = 64 << 20


def _probes(path: Path) -> tuple[torch.device, dict[str, torch.Tensor]]:
    """The recording device and the logits of a probe file, read once (regular file, bounded, no
    link: the run wrote it) and parsed from those bytes; anything else raises CorruptFileError."""
    blob = read_regular(path, MAX_PROBE_BYTES, follow_symlinks=False)
    try:
        probes = load_safetensors(blob)  # checks the whole layout first: the header below is sound
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
        return torch.device(header["__metadata__"]["device"]), probes
    except Exception as error:  # safetensors' own errors, a missing or unknown device entry
        raise CorruptFileError(f"{path} is not a probe file ({type(error).__name__}: {error})") from error


def verify_packed_run(folder: str | Path, data_root: str | None = None) -> dict[str, Any]:
    """Reload a finished run from its packed file alone and check it against the run's results.

    For every task: the test accuracy of the packed file's network against the final row of the
    results' accuracy matrix, and the logits of the task's probe batch against those recorded when
    the task was frozen (bit for bit, on the device that recorded them). ``ok`` is True when all match.
    Nothing in the folder is trusted: only ``<folder>/packed.safetensors`` is opened (whatever
    the results name), the data comes from ``data_root`` and is never downloaded, and a missing or
    malformed results or probe entry raises CorruptFileError naming the file and the entry.
    """
    folder = resolve(folder)
    results_path, probes_path = folder / "results.json", folder / PROBES_FILE
    for path in (results_path, probes_path, folder / PACKED_FILE):
        if not (path.is_symlink() or path.exists()):  # anything else there is refused when it is read
            raise CorruptFileError(f"{path} is missing: {folder} is not a finished run of an owner-map method")
    results = read_json(results_path, MAX_RUN_JSON_BYTES, follow_symlinks=False)
    device, probes = _probes(probes_path)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{probes_path} was recorded on {device}; bit-exact logits need the same device type")
    packed = PackedNetwork.load(folder / PACKED_FILE, device=device)
    matrix = results.get("acc_matrix") if isinstance(results, dict) else None
    problem = accuracy_matrix_problem(matrix, packed.num_tasks, sequential=True)  # owner-map methods learn in sequence
    if problem:
        raise CorruptFileError(f"{results_path}: {problem} (the packed file's {packed.num_tasks} tasks)")
    final = matrix[-1]
    missing = [f"task{i}/logits" for i in range(packed.num_tasks) if f"task{i}/logits" not in probes]
    if missing:
        raise CorruptFileError(f"{probes_path} has no entries {', '.join(missing)}")
    config = Config.from_dict({**packed.config, "data_root": str(resolve(data_root or Config.data_root)), "download": False})
    scenario = scenario_of(config)
    rows = []
    for index in range(packed.num_tasks):
        test = scenario.tasks[index].test
        accuracy = evaluate(packed, test, index, config.eval_batch_size, device)
        with torch.no_grad():
            logits = packed(probe_batch(test).to(device), index).cpu()
        recorded = final[index]
        rows.append(
            {
                "task": index + 1,
                "test_accuracy": accuracy,
                "results_accuracy": recorded,
                "accuracy_equal": accuracy == recorded,
                "probe_logits_equal": torch.equal(logits, probes[f"task{index}/logits"]),
            }
        )
    return {
        "file": str(packed.path),
        "packed_bytes": packed.path.stat().st_size,
        "tasks": rows,
        "ok": all(r["accuracy_equal"] and r["probe_logits_equal"] for r in rows),
    }


def run(config: Config, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the learner for ``config`` and run it (resuming from ``out_dir`` if it holds a checkpoint)."""
    return run_learner(learner_for(config), out_dir)


def run_learner(learner: ContinualLearner, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run ``learner``; with ``out_dir``, under the folder's lock (a second process on the same run
    waits for the first), after removing what an interrupted write left behind, resuming from its
    checkpoint."""
    if out_dir is None:
        return learner.run()
    with folder_lock(out_dir):
        remove_leftovers(out_dir)
        return learner.run(out_dir)
