"""Hostile files in a run folder: special files where the package's own files belong, and
checkpoints and results whose contents lie. Every case raises CorruptFileError naming the file (and
the field), before any task trains, within bounded memory and time (``bounded.refused``).

One Ada-QPacknet run and one joint run on split digits (two tasks) are trained once per module;
each case damages a copy of their folders.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import safetensors.torch
import torch
from bounded import refused
from conftest import small_config

from adaqpacknet import results, runs
from adaqpacknet.continual import scenario_of
from adaqpacknet.learner import AdaQPacknet
from adaqpacknet.methods import learner_for
from adaqpacknet.models import HEAD
from adaqpacknet.errors import ConfigError, CorruptFileError

CONFIG = small_config("split_digits", num_tasks=2, population=1)  # one candidate: the quickest real run
JOINT = CONFIG.replace(method="joint")


@pytest.fixture(scope="module")
def scenario():
    return scenario_of(CONFIG)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, scenario) -> dict[str, Path]:
    """Finished run folders of Ada-QPacknet (``ada``) and joint training (``joint``), results.json removed:
    loading one runs the resume path to the end (every task done) and writes results.json again."""
    root = tmp_path_factory.mktemp("trained")
    folders = {"ada": root / "ada", "joint": root / "joint"}
    AdaQPacknet(CONFIG, scenario).run(folders["ada"])
    learner_for(JOINT, scenario).run(folders["joint"])
    for folder in folders.values():
        (folder / "results.json").unlink()
    return folders


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    return copy


def _enter(context) -> None:
    with context:
        pass


# --- special files where a run folder's own files belong -----------------------------------------

def _special(kind: str, path: Path) -> None:
    """Put a ``kind`` where ``path`` is (removing the file): a link to /dev/zero, a FIFO or a folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        (path / "inside").write_text("x")
    else:
        raise ValueError(kind)


def _oversized(path: Path, size: int) -> None:
    """Replace ``path`` by a file of ``size`` bytes, all zeros."""
    path.unlink()
    with open(path, "wb") as handle:
        handle.truncate(size)  # sparse: costs no disk


KIND_MESSAGES = {"link to /dev/zero": "is a symbolic link", "FIFO": r"it is a FIFO", "folder": r"it is a folder"}


def _tensor_file(folder: Path) -> Path:
    return folder / json.loads((folder / results.CHECKPOINT_STATE).read_text())["tensors_file"]


# Each run-folder file: where it is, and how the package reaches it (``_reach``).
RUN_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "checkpoint.json": (lambda f: f / results.CHECKPOINT_STATE, "resume"),
    "checkpoint tensor file": (_tensor_file, "resume"),
    "results.json of a finished run": (lambda f: f / "results.json", "reload"),
    "results.json read by verify": (lambda f: f / "results.json", "verify"),
    "probe file read by verify": (lambda f: f / "probes.safetensors", "verify"),
}


def _reach(how: str, folder: Path, scenario) -> Callable[[], Any]:
    if how == "verify":
        return lambda: runs.verify_packed_run(folder)
    return lambda: runs.run_learner(AdaQPacknet(CONFIG, scenario), folder)


@pytest.fixture(scope="module")
def finished(trained, scenario, tmp_path_factory) -> Path:
    """The Ada-QPacknet folder with its results.json written (a finished run as a notebook finds it)."""
    folder = _copy(trained["ada"], tmp_path_factory.mktemp("finished"))
    runs.run_learner(AdaQPacknet(CONFIG, scenario), folder)
    return folder


# A FIFO or folder as checkpoint.json was refused already (results.read_json); a link is refused now.
SPECIAL_CASES = [(file, kind) for file in RUN_FILES for kind in KIND_MESSAGES if file != "checkpoint.json" or kind.startswith("link")]


@pytest.mark.parametrize("file, kind", SPECIAL_CASES)
def test_a_special_file_in_place_of_a_run_file_is_refused(file, kind, finished, scenario, tmp_path):
    locate, how = RUN_FILES[file]
    folder = _copy(finished, tmp_path)
    path = locate(folder)
    _special(kind, path)
    refused(_reach(how, folder, scenario), CorruptFileError, re.escape(str(path)) + ".*" + KIND_MESSAGES[kind])


OVERSIZED = {
    "checkpoint.json": (lambda f, learner: (f / results.CHECKPOINT_STATE, results.MAX_RUN_JSON_BYTES), "resume"),
    "checkpoint tensor file": (lambda f, learner: (_tensor_file(f), learner.checkpoint_bytes_bound()), "resume"),
    "results.json of a finished run": (lambda f, learner: (f / "results.json", results.MAX_RUN_JSON_BYTES), "reload"),
    "results.json read by verify": (lambda f, learner: (f / "results.json", results.MAX_RUN_JSON_BYTES), "verify"),
    "probe file read by verify": (lambda f, learner: (f / "probes.safetensors", runs.MAX_PROBE_BYTES), "verify"),
}


@pytest.mark.parametrize("file", list(OVERSIZED))
def test_a_run_file_past_its_size_bound_is_refused_unread(file, finished, scenario, tmp_path):
    locate, how = OVERSIZED[file]
    folder = _copy(finished, tmp_path)
    path, bound = locate(folder, AdaQPacknet(CONFIG, scenario))
    _oversized(path, bound + 1)
    refused(_reach(how, folder, scenario), CorruptFileError, re.escape(str(path)) + f" is {bound + 1} bytes, more than the {bound}")


def test_the_tensor_bound_leaves_room_for_the_real_file(finished, scenario):
    bound = AdaQPacknet(CONFIG, scenario).checkpoint_bytes_bound()
    assert _tensor_file(finished).stat().st_size < bound < 64 * _tensor_file(finished).stat().st_size


# --- the run folder's lock and what an interrupted write left -----------------------------------

LOCKS = {
    "link to /dev/zero": (lambda p: p.symlink_to("/dev/zero"), "is a symbolic link"),
    "link to a file elsewhere": (lambda p: p.symlink_to(p.parent.parent / "elsewhere"), "is a symbolic link"),
    "FIFO": (lambda p: os.mkfifo(p), "is a FIFO"),
    "folder": (lambda p: p.mkdir(), "is a folder"),
}


@pytest.mark.parametrize("case", list(LOCKS))
def test_a_lock_that_is_not_a_regular_file_is_refused(case, tmp_path):
    make, message = LOCKS[case]
    folder = tmp_path / "run"
    folder.mkdir()
    (tmp_path / "elsewhere").write_text("")
    make(folder / ".lock")
    refused(lambda: _enter(results.folder_lock(folder)), CorruptFileError, re.escape(str(folder / ".lock")) + ".*" + message)


@pytest.mark.parametrize("case", list(LOCKS))
def test_a_gpu_slot_lock_that_is_not_a_regular_file_is_refused(case, tmp_path):
    # The GPU-slot wrapper's locks (make reproduce GPUS=...) open through the same files.open_lock_file.
    from adaqpacknet import gpu_slots

    make, message = LOCKS[case]
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks.parent / "elsewhere").write_text("")
    make(locks / "gpu0.lock")
    refused(lambda: gpu_slots.claim(["0"], locks), CorruptFileError, re.escape(str(locks / "gpu0.lock")) + ".*" + message)


LEFTOVERS = {
    "folder": lambda p: (p.mkdir(), (p / "inside").write_text("kept")),
    "FIFO": lambda p: os.mkfifo(p),
    "link": lambda p: p.symlink_to("/dev/zero"),
}


@pytest.mark.parametrize("case", list(LEFTOVERS))
def test_only_regular_files_are_removed_as_leftovers(case, tmp_path, capsys):
    stray, leftover = tmp_path / ".results.json.abcd.tmp", tmp_path / ".checkpoint.json.efgh.tmp"
    LEFTOVERS[case](stray)
    leftover.write_text("half a file")
    assert results.remove_leftovers(tmp_path) == [leftover]
    assert os.path.lexists(stray) and not leftover.exists()
    assert f"{stray} is a" in capsys.readouterr().out


# --- checkpoints whose contents lie ----------------------------------------------------------------

def _rewrite(folder: Path, change_state=None, change_tensors=None, name: str | None = None) -> None:
    """Change the checkpoint in ``folder`` and make it consistent on the outside (the checksum)."""
    state_path = folder / results.CHECKPOINT_STATE
    state = json.loads(state_path.read_text())
    tensor_path = folder / state["tensors_file"]
    blob = tensor_path.read_bytes()
    if change_tensors is not None:
        tensors = safetensors.torch.load(blob)
        change_tensors(tensors)
        blob = safetensors.torch.save(tensors)
    if change_state is not None:
        change_state(state)
    tensor_path.unlink()
    name = name or state["tensors_file"]
    (folder / name).write_bytes(blob)
    state.update(tensors_file=name, tensors_sha256=hashlib.sha256(blob).hexdigest())
    state_path.write_text(json.dumps(state, allow_nan=True))


def _set(path: list, value) -> Callable[[dict], None]:
    """A change of ``state`` at ``path`` (keys and indices) to ``value``."""

    def change(state: dict) -> None:
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _first_key(tensors: dict, part: str) -> str:
    return next(k for k in sorted(tensors) if part in k)


def _three_tasks(state: dict) -> None:
    state["per_task"].append(state["per_task"][-1])
    state["acc_matrix"].append([*state["acc_matrix"][-1], 50.0])
    state["tasks_done"] = 3


STATE_LIES = {
    "accuracy matrix shorter than tasks_done": (lambda s: s.update(acc_matrix=s["acc_matrix"][:1]), {}, "acc_matrix is not 2 row"),
    "accuracy of -5": (_set(["acc_matrix", 1, 0], -5), {}, r"acc_matrix\[1\]\[0\] is -5"),
    "accuracy of 1e9": (_set(["acc_matrix", 1, 1], 1e9), {}, r"acc_matrix\[1\]\[1\] is 1000000000.0"),
    "accuracy of 250": (_set(["acc_matrix", 0, 0], 250), {}, r"acc_matrix\[0\]\[0\] is 250"),
    "accuracy NaN": (_set(["acc_matrix", 0, 0], math.nan), {}, r"acc_matrix\[0\]\[0\] is nan"),
    "a joint matrix for a sequential learner": (lambda s: s.update(acc_matrix=[s["acc_matrix"][1]]), {}, "acc_matrix is not 2 row"),
    "an extra field": (_set(["note"], "hi"), {}, "field 'note' is not a checkpoint field"),
    "a report that is not an object": (_set(["per_task", 0], "task one"), {}, "per_task holds a report that is not an object"),
    "timings of the wrong type": (_set(["per_task", 1, "timings"], "fast"), {}, r"per_task\[1\]: 'timings'"),
    "negative seconds": (_set(["per_task", 0, "timings", "train_s"], -1.0), {}, r"per_task\[0\]: 'timings'"),
    "a layer's bits missing": (lambda s: s["per_task"][0]["layer_bits"].pop(HEAD), {}, r"per_task\[0\]: 'layer_bits'"),
    "99 bits": (_set(["per_task", 1, "layer_bits", HEAD], 99), {}, r"per_task\[1\]: 'layer_bits'"),
    "bits as a string": (_set(["per_task", 1, "layer_bits", HEAD], "4"), {}, r"per_task\[1\]: 'layer_bits'"),
    "negative owned weights": (lambda s: s["per_task"][0]["owned_weights"].update(dict.fromkeys(s["per_task"][0]["owned_weights"], -3)), {}, r"per_task\[0\]: 'owned_weights'"),
    "another run's config": (_set(["config", "lr"], 0.5), {}, r"different config \(keys \['lr'\]\)"),
    "a config with an extra key": (_set(["config", "colour"], "blue"), {}, r"different config \(keys \['colour'\]\)"),
    "tasks_done beyond the scenario": (_three_tasks, {"name": "checkpoint-task003.safetensors"}, "tasks_done=3, but this scenario has 2 tasks"),
    "tensors_file naming another checkpoint": (None, {"name": "checkpoint-task001.safetensors"}, "is not 'checkpoint-task002.safetensors'"),
}

TENSOR_LIES = {
    "a network tensor missing": (lambda t: t.pop(_first_key(t, "model/body")), "missing model/body"),
    "a network tensor of another shape": (lambda t: t.update({_first_key(t, "original"): torch.zeros(3)}), r"is torch.float32 \(3,\), expected"),
    "a network tensor of another dtype": (lambda t: t.update({(k := _first_key(t, "original")): t[k].double()}), "is torch.float64"),
    "an unexpected network tensor": (lambda t: t.update({"model/body.extra": torch.zeros(1)}), "unexpected model/body.extra"),
    "a tensor outside model/ and extra/": (lambda t: t.update({"stray": torch.zeros(1)}), "unexpected tensors stray"),
    "an owner map naming task 9": (lambda t: t[_first_key(t, ".owner")].fill_(9), "names task 9, but 2 task"),
    "a codebook missing": (lambda t: t.pop(_first_key(t, "extra/codebook/")), "missing extra/codebook"),
    "a codebook of too many levels": (lambda t: t.update({_first_key(t, "extra/codebook/2"): torch.zeros(1000)}), "expected float32 1-D of at most"),
    "probe logits missing": (lambda t: t.pop("extra/probe/1"), "missing extra/probe/1"),
    "probe logits of another shape": (lambda t: t.update({"extra/probe/0": torch.zeros(64, 7)}), r"extra/probe/0 is torch.float32 \(64, 7\)"),
    "probe logits as integers": (lambda t: t.update({"extra/probe/0": t["extra/probe/0"].int()}), "extra/probe/0 is torch.int32"),
}


def _refused_before_training(folder: Path, scenario, learner, message: str, monkeypatch) -> None:
    """Loading ``folder`` raises CorruptFileError naming the checkpoint and ``message`` (and, for a
    valid checkpoint of another config, ConfigError, which never advises deleting it); no task trains."""
    monkeypatch.setattr(type(learner), "learn_task", lambda *a: pytest.fail("a task trained"))
    another_config = "different config" in message
    error = refused(lambda: runs.run_learner(learner, folder), ConfigError if another_config else CorruptFileError, message)
    assert str(folder) in str(error) and ("delete" in str(error)) is not another_config
    assert not (folder / "results.json").exists()


@pytest.mark.parametrize("case", list(STATE_LIES))
def test_a_lying_checkpoint_state_is_refused(case, trained, scenario, tmp_path, monkeypatch):
    change, options, message = STATE_LIES[case]
    folder = _copy(trained["ada"], tmp_path)
    _rewrite(folder, change_state=change, **options)
    _refused_before_training(folder, scenario, AdaQPacknet(CONFIG, scenario), message, monkeypatch)


@pytest.mark.parametrize("case", list(TENSOR_LIES))
def test_a_lying_checkpoint_tensor_file_is_refused(case, trained, scenario, tmp_path, monkeypatch):
    change, message = TENSOR_LIES[case]
    folder = _copy(trained["ada"], tmp_path)
    _rewrite(folder, change_tensors=change)
    _refused_before_training(folder, scenario, AdaQPacknet(CONFIG, scenario), message, monkeypatch)


JOINT_LIES = {
    "a sequential matrix for joint training": (lambda s: s.update(acc_matrix=[s["acc_matrix"][0][:1], s["acc_matrix"][0]]), "acc_matrix is not one row of 2"),
    "an accuracy of 101": (_set(["acc_matrix", 0, 1], 101), r"acc_matrix\[0\]\[1\] is 101"),
    "tasks_done short of every task": (
        lambda s: s.update(tasks_done=1, per_task=s["per_task"][:1], acc_matrix=[s["acc_matrix"][0][:1]]), "tasks_done=1, but this scenario has 2"),
}


@pytest.mark.parametrize("case", list(JOINT_LIES))
def test_a_lying_joint_checkpoint_is_refused(case, trained, scenario, tmp_path, monkeypatch):
    change, message = JOINT_LIES[case]
    folder = _copy(trained["joint"], tmp_path)
    name = "checkpoint-task001.safetensors" if case == "tasks_done short of every task" else None
    _rewrite(folder, change_state=change, name=name)
    learner = learner_for(JOINT, scenario)
    monkeypatch.setattr(type(learner), "learn_all", lambda *a: pytest.fail("joint training ran"))
    error = refused(lambda: runs.run_learner(learner, folder), CorruptFileError, message)
    assert str(folder) in str(error)


# --- results whose contents lie --------------------------------------------------------------------

RESULT_LIES = {
    "ACC of 1e9": (_set(["acc"], 1e9), "'acc' is 1000000000.0, not an accuracy"),
    "ACC of -5": (_set(["acc"], -5), "'acc' is -5, not an accuracy"),
    "BWT of 1e9": (_set(["bwt"], 1e9), "'bwt' is 1000000000.0"),
    "forgetting NaN": (_set(["forgetting"], math.nan), "'forgetting' is nan"),
    "an accuracy of 250": (_set(["acc_matrix", 1, 0], 250), r"acc_matrix\[1\]\[0\] is 250"),
    "a matrix row short": (_set(["acc_matrix", 1], [50.0]), "acc_matrix is not 2 row"),
}


@pytest.mark.parametrize("case", list(RESULT_LIES))
def test_lying_results_fail_the_schema_check(case, finished):
    data = json.loads((finished / "results.json").read_text())
    RESULT_LIES[case][0](data)
    refused(lambda: results.check_run_schema(data), CorruptFileError, "results do not follow the schema: .*" + RESULT_LIES[case][1])


VERIFY_LIES = {
    "a final accuracy of 1e9": (_set(["acc_matrix", 1, 1], 1e9), r"acc_matrix\[1\]\[1\] is 1000000000.0"),
    "a final accuracy of -5": (_set(["acc_matrix", 1, 0], -5), r"acc_matrix\[1\]\[0\] is -5"),
    "an accuracy NaN": (_set(["acc_matrix", 0, 0], math.nan), r"acc_matrix\[0\]\[0\] is nan"),
    "a first row too long": (_set(["acc_matrix", 0], [50.0, 50.0]), "acc_matrix is not 2 row"),
}


@pytest.mark.parametrize("case", list(VERIFY_LIES))
def test_verify_refuses_lying_results(case, finished, tmp_path):
    folder = _copy(finished, tmp_path)
    data = json.loads((folder / "results.json").read_text())
    VERIFY_LIES[case][0](data)
    (folder / "results.json").write_text(json.dumps(data, allow_nan=True))
    refused(lambda: runs.verify_packed_run(folder), CorruptFileError, re.escape(str(folder / "results.json")) + ".*" + VERIFY_LIES[case][1])
