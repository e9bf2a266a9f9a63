"""Results and checkpoints on disk: atomic writes, plain data, corruption detected.

- ``write_json``: JSON with ``allow_nan=False`` written to a temporary file and renamed, so a
  reader never sees half a file.
- Checkpoints: tensors in safetensors (no pickle), plain data in JSON next to them; the JSON holds
  the SHA-256 of the tensor file, so a torn or corrupt pair is detected and named.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import re
import stat
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load, save

from .errors import ConfigError, CorruptFileError, shorten
from .files import file_kind, open_lock_file, read_regular
from .methods import SPECS
from .ownership import MAX_TASKS

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = 5  # 2: packed file, bits ledger, probe logits; 3: every method, model_bytes; 4: one storage rule, classic validation;
# 5: equal epochs per task (epochs + finetune_epochs for every method), one validation split per source, state_bytes, train_samples
CHECKPOINT_PREFIX = "checkpoint-"  # + tasks done + ".safetensors"
CHECKPOINT_STATE = "checkpoint.json"


# Upper bounds on what the package reads from a file it did not just write: a file past its bound
# is refused before it is read (a results file is ~10-100 KB, a checkpoint state a few KB per task).
MAX_JSON_BYTES = 64 << 20
# A run folder's own JSON files (checkpoint.json, results.json): the largest seen are ~20 KB a task
# (five_datasets' Ada-QPacknet results, population 2, candidates and bit-search traces included), so
# a run of the most tasks the package allows (255, ownership.MAX_TASKS) stays near 5 MB; a
# population of 10 near 25 MB. Its own files must never be refused on resume: the bound is
# MAX_JSON_BYTES, still far below what would strain memory.
MAX_RUN_JSON_BYTES = MAX_JSON_BYTES
# A checkpoint tensor file read without a learner to size it (``load_checkpoint``'s default): a
# learner passes its own bound (``ContinualLearner.checkpoint_bytes_bound``), the bytes its network
# and state can need. This one only keeps a direct call from reading a device or a huge file.
MAX_CHECKPOINT_BYTES = 2 << 30


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """The one way the package writes a file: yields a temporary path beside ``path`` (same folder,
    same file system) to write to; once the block succeeds it is fsynced, given the permissions the
    umask allows (mkstemp makes files private; results are for sharing) and renamed over ``path``,
    so a reader sees the old file or the new one, never half of one. On error it is removed.
    ``suffix`` keeps a file type for writers that read it from the name (matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, payload: bytes) -> None:
    """Write bytes atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (temporary file, then rename)."""
    write_bytes(path, text.encode())


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; NaN/inf and non-JSON types are an error."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False, sort_keys=False) + "\n")


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES, follow_symlinks: bool = True) -> Any:
    """Read JSON, naming the file when it is not valid JSON (or nested too deep to read); the file
    is read through ``read_regular`` (``max_bytes``, ``follow_symlinks``)."""
    path = Path(path)
    try:
        return json.loads(read_regular(path, max_bytes, follow_symlinks).decode())
    except CorruptFileError:
        raise
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptFileError(f"{path} is not valid JSON ({type(error).__name__}: {error}); delete it to start over") from None


# The results file of one run, any method (README: "Results file"): key -> type(s) it must have.
RUN_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "method": str,
    "scenario": str,
    "model": str,
    "seed": int,
    "config": dict,
    "environment": dict,
    "resumed_in": list,
    "num_tasks": int,
    "task_names": list,
    "sequential": bool,  # False for joint training: one training over every task
    "train_samples": list,  # training samples of each task (gradient steps = epochs x samples // batch)
    "acc_matrix": list,
    "acc": (int, float),
    "bwt": (int, float, type(None)),  # None for joint training (no task sequence)
    "forgetting": (int, float, type(None)),
    "metric_definitions": dict,
    "weights": dict,
    "model_bytes": int,
    "model_bytes_definition": str,
    "state_bytes": int,  # kept beyond model_bytes to go on learning (continual.STATE_BYTES_RULE)
    "state_bytes_definition": str,
    "dense_float32_bytes": int,
    "per_task": list,
    "timings": dict,
}
# And the keys of the owner-map methods (``Config.method``: Ada-QPacknet in all its variants, PackNet).
OWNERSHIP_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "capacity_used": dict,
    "bit_weighted_capacity": (int, float),
    "bit_widths": list,
    "packed_bytes": int,
    "entropy_bound_bytes": (int, float),
    "packed_file": str,
    "bits_ledger": dict,
}


def check_run_schema(run: dict[str, Any], path: str | Path | None = None) -> None:
    """Raise CorruptFileError (a ValueError) naming every missing or mistyped key of a run's results,
    and an accuracy matrix or metric out of its shape or range (``path``: the file, for the message)."""
    method = run["config"].get("method") if isinstance(run.get("config"), dict) else None
    owner_maps = isinstance(method, str) and method in SPECS and SPECS[method].owner_maps
    schema = {**RUN_SCHEMA, **(OWNERSHIP_SCHEMA if owner_maps else {})}
    problems = [f"missing {key!r}" for key in schema if key not in run]
    problems += [
        f"{key!r} is {type(run[key]).__name__}, expected {kind}"
        for key, kind in schema.items()
        if key in run and not isinstance(run[key], kind)
    ]
    if not problems:
        problems += _run_value_problems(run)
    if problems:
        where = f"{path}: " if path is not None else ""
        raise CorruptFileError(where + "results do not follow the schema: " + "; ".join(problems))


def _run_value_problems(run: dict[str, Any]) -> list[str]:
    """The accuracy matrix's shape and values, and ACC/BWT/forgetting within their ranges."""
    matrix_problem = accuracy_matrix_problem(run["acc_matrix"], run["num_tasks"], run["sequential"])
    if matrix_problem:
        return [matrix_problem]
    problems = [] if _accuracy(run["acc"]) else [f"'acc' is {shorten(run['acc'])}, not an accuracy in [0, 100]"]
    for key in ("bwt", "forgetting"):  # differences of two accuracies; None for joint training
        value = run[key]
        if value is not None and not (is_finite_number(value) and -100 <= value <= 100):
            problems.append(f"{key!r} is {shorten(value)}, not a difference of accuracies in [-100, 100]")
    return problems


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` read from a file is a finite int or float (not a bool, not NaN or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _accuracy(value: Any) -> bool:
    """Whether ``value`` is an accuracy in percent: a finite number in [0, 100]."""
    return is_finite_number(value) and 0 <= value <= 100


def accuracy_matrix_problem(matrix: Any, tasks: int, sequential: bool | None) -> str | None:
    """What is wrong with ``matrix`` as the accuracy matrix after ``tasks`` learned tasks, or None.

    Sequential learners have row i of i + 1 accuracies (task i + 1 learned, every seen task
    re-measured); joint training has one row of ``tasks`` accuracies (none before it trains);
    ``sequential=None`` accepts either. Every accuracy is a finite number in [0, 100] (percent).
    ``tasks`` comes from the same file: past MAX_TASKS it is refused before any list is built."""
    if not isinstance(tasks, int) or isinstance(tasks, bool) or not 0 <= tasks <= MAX_TASKS:
        return f"num_tasks/tasks_done is {shorten(tasks)}; expected a whole number in 0..{MAX_TASKS}"
    shapes = {True: [[i + 1 for i in range(tasks)]], False: [[tasks] if tasks else []]}
    allowed = shapes[sequential] if sequential is not None else shapes[True] + shapes[False]
    if not isinstance(matrix, list) or len(matrix) > tasks:  # at most `tasks` rows: no longer list is measured
        lengths = None
    else:
        lengths = [len(row) if isinstance(row, list) else None for row in matrix]
    if lengths not in allowed:
        kinds = {True: f"{tasks} row(s), the i-th of i accuracies", False: f"one row of {tasks} accuracies"}
        wanted = " or ".join(kinds[k] for k in ((sequential,) if sequential is not None else (True, False)))
        found = (f"rows of {shorten(lengths)} entries" if lengths is not None else
                 f"{len(matrix)} rows" if isinstance(matrix, list) else f"a {type(matrix).__name__}")
        return f"acc_matrix is not {wanted} after {tasks} task(s) (it has {found})"
    bad = next(((i, j, a) for i, row in enumerate(matrix) for j, a in enumerate(row) if not _accuracy(a)), None)
    if bad is not None:
        return f"acc_matrix is not made of accuracies in [0, 100]: acc_matrix[{bad[0]}][{bad[1]}] is {shorten(bad[2])}"
    return None


def checkpoint_tag(tasks_done: int) -> str:
    """The tag of a learner's checkpoint after ``tasks_done`` tasks (``save_checkpoint``'s ``tag``)."""
    return f"task{tasks_done:03d}"


def checkpoint_tensors_file(tag: str) -> str:
    """The name of the tensor file of the checkpoint tagged ``tag``, inside its run folder."""
    return f"{CHECKPOINT_PREFIX}{tag}.safetensors"


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any], tag: str) -> None:
    """Write ``checkpoint-<tag>.safetensors``, then the state JSON that names it and vouches for it.

    The old tensor file is removed only after the new JSON is in place, so a kill at any moment
    leaves one consistent checkpoint: the old pair or the new one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensor_path = directory / checkpoint_tensors_file(tag)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    write_bytes(tensor_path, blob)
    digest = hashlib.sha256(blob).hexdigest()
    write_json(directory / CHECKPOINT_STATE, {**state, "tensors_file": tensor_path.name, "tensors_sha256": digest})
    for stale in directory.glob(f"{CHECKPOINT_PREFIX}*.safetensors"):
        if stale != tensor_path:
            stale.unlink()


# The checkpoint state's keys and types; every one is checked before any tensor is read.
CHECKPOINT_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "config": dict, "tasks_done": int, "acc_matrix": list, "per_task": list,
    "environment": dict, "resumed_in": list, "tensors_file": str, "tensors_sha256": str,
}
_TENSORS_FILE = re.compile(rf"{re.escape(CHECKPOINT_PREFIX)}[A-Za-z0-9_-]+\.safetensors")


def check_checkpoint_state(state: Any, path: Path) -> None:
    """Raise CorruptFileError naming ``path`` and the first malformed field of a checkpoint state:
    a missing, unknown or mistyped field, reports that are not one object per task done, or an
    accuracy matrix of another shape (``accuracy_matrix_problem``: sequential or joint) or with an
    accuracy outside [0, 100]. What only the learner knows (its config, its number of tasks, its
    reports' and tensors' layout) is checked by ``ContinualLearner.resume``."""
    if not isinstance(state, dict):
        raise checkpoint_fault(path, f"holds a JSON {type(state).__name__}, not an object")
    unknown = sorted(key for key in state if key not in CHECKPOINT_SCHEMA)
    if unknown:
        raise checkpoint_fault(path, f"field {shorten(unknown[0])} is not a checkpoint field ({', '.join(CHECKPOINT_SCHEMA)})")
    for key, kind in CHECKPOINT_SCHEMA.items():
        if key not in state:
            raise checkpoint_fault(path, f"field {key!r} is missing")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise checkpoint_fault(path, f"field {key!r} is {type(state[key]).__name__}, expected {getattr(kind, '__name__', kind)}")
    done = state["tasks_done"]
    if not 0 <= done == len(state["per_task"]):
        raise checkpoint_fault(path, f"tasks_done={done} but it holds {len(state['per_task'])} task reports")
    if not all(isinstance(report, dict) for report in state["per_task"]):
        raise checkpoint_fault(path, "per_task holds a report that is not an object")
    problem = accuracy_matrix_problem(state["acc_matrix"], done, None)
    if problem:
        raise checkpoint_fault(path, problem)
    if not _TENSORS_FILE.fullmatch(state["tensors_file"]):
        raise checkpoint_fault(path, f"tensors_file={shorten(state['tensors_file'])} is not a checkpoint file name inside the run folder")
    if not re.fullmatch(r"[0-9a-f]{64}", state["tensors_sha256"]):
        raise checkpoint_fault(path, "tensors_sha256 is not a SHA-256 digest")


def checkpoint_fault(path: Path, problem: str) -> CorruptFileError:
    """The error for a checkpoint file ``path`` that cannot be trusted: names it, the problem and
    the way out."""
    return CorruptFileError(f"{path}: {problem}; delete {path.parent} to start over")


def load_checkpoint(
    directory: str | Path,
    max_tensor_bytes: int = MAX_CHECKPOINT_BYTES,
    check_state: Callable[[dict[str, Any], Path], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(tensors, state)`` of the checkpoint in ``directory``, or None if there is none.

    Both files are the package's own: a symbolic link, a FIFO, a device or a folder in their place
    is refused, and so is a state JSON past ``MAX_RUN_JSON_BYTES`` or a tensor file past
    ``max_tensor_bytes``. The state is checked against ``CHECKPOINT_SCHEMA`` and then by
    ``check_state(state, path)`` (the learner's own checks) before the tensor file is read; the
    tensor file is read once, and the bytes checked against the checksum are those loaded. Any
    fault raises CorruptFileError naming the file."""
    directory = Path(directory)
    state_path = directory / CHECKPOINT_STATE
    if not (state_path.is_symlink() or state_path.exists()):  # a dangling link is not "no checkpoint"
        return None
    state = read_json(state_path, MAX_RUN_JSON_BYTES, follow_symlinks=False)
    check_checkpoint_state(state, state_path)
    if check_state is not None:
        check_state(state, state_path)
    tensor_path = directory / state["tensors_file"]
    try:
        blob = read_regular(tensor_path, max_tensor_bytes, follow_symlinks=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise checkpoint_fault(state_path, f"its tensor file {tensor_path} cannot be read ({error.strerror})") from None
    except CorruptFileError as error:
        raise CorruptFileError(f"{error}; delete {directory} to start over") from None
    if hashlib.sha256(blob).hexdigest() != state["tensors_sha256"]:
        raise CorruptFileError(
            f"{tensor_path} does not match the checksum in {state_path}: the checkpoint is corrupt; "
            f"delete {directory} to start over"
        )
    try:
        return load(blob), state
    except Exception as error:  # safetensors raises its own error types
        raise CorruptFileError(f"{tensor_path} is not a valid safetensors file ({error}); delete {directory} to start over") from error


def remove_leftovers(directory: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``directory`` (``.<name>.*.tmp``);
    call it only while holding the folder's lock. Returns what was deleted.

    Only regular files are deleted: ``atomic_path`` leaves nothing else. A folder, link, FIFO or
    device of such a name was put there by someone else; it is left alone (with a message), since no
    reader opens these names and ``mkstemp`` never writes over an existing one, and deleting what
    the package did not make (a folder's contents) is not its call."""
    removed = []
    for path in sorted(Path(directory).glob(".*.tmp")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            path.unlink(missing_ok=True)
            removed.append(path)
        else:
            print(f"{path} is a {file_kind(mode)}, not a file an interrupted write left: left as it is", flush=True)
    return removed


@contextlib.contextmanager
def folder_lock(directory: str | Path):
    """Hold ``<directory>/.lock`` exclusively for the block, so that two processes never work in one
    run folder at once: the second waits (and says so), then finds the run as the first left it,
    finished or checkpointed, instead of training it a second time."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_lock_file(directory / ".lock"), "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process working in {directory} (it holds {directory / '.lock'})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def git_commit() -> str:
    """The package's git commit (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Modules that only read finished runs (tables, figures, the results page) or start them (the
# command line, the grid, GPU slots): an edit there moves no run's numbers, so they are not part of
# a run's code version.
READ_ONLY_MODULES = ("__main__.py", "cli.py", "gpu_slots.py", "grid.py", "plots.py", "report.py", "tables.py")


@functools.cache
def code_version() -> str:
    """A hash of the library source a run's numbers depend on: every module under adaqpacknet/ but
    ``READ_ONLY_MODULES``, by path and content. Each run records the version of the process that
    started it (``environment``); a finished run whose version differs from this one was trained by
    other code: ``python -m adaqpacknet runs <profile> --stale`` lists them, ``make reproduce``
    warns, and deleting a run's folder retrains it. Run folders stay keyed by their config alone,
    so an edit that moves nothing (a comment, a docstring) does not retrain a 58-minute grid."""
    package = PACKAGE_ROOT / "adaqpacknet"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name not in READ_ONLY_MODULES:
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and commit: every number in a results file says where it came from."""
    packages = {}
    for name in ("torch", "torchvision", "numpy", "kmeans1d", "safetensors", "constriction", "scikit-learn", "avalanche-lib", "adaqpacknet"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        # The CPU and the widest vector instructions torch's kernels use here: CPU numbers can differ
        # between machines that dispatch to different kernels (AVX2 vs AVX-512), all else equal.
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "packages": packages,
        "git_commit": git_commit(),
        "code_version": code_version(),
    }


# --- where things live: paths from the repository root ---------------------------------------

def resolve(path: str | Path) -> Path:
    """A path relative to the repository root (notebooks run with another working directory)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PACKAGE_ROOT / path


PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def profile_folder(kind: str, profile: str) -> Path:
    """``<kind>/<profile>`` under the repository root (runs, results, tables, figures). A profile is
    a simple name: a notebook's ``profile`` parameter must not lead its outputs anywhere else."""
    if not isinstance(profile, str) or not PROFILE_NAME.fullmatch(profile):
        raise ConfigError(f"profile={shorten(profile)} is not a profile name: letters, digits, '_', '.', '-' (e.g. 'default')")
    return resolve(f"{kind}/{profile}")
