"""The GPU check (benchmarks/gpu_check.py) on the CPU, and what a bare GPU machine needs of it.

A GPU is lent to this project only now and then: the check runs here end to end with
``--device cpu`` so that it cannot rot, and the parts that make it run on a bare machine (the
wheelhouse, a missing tabulate, a GPU that CUDA cannot use) are tested on their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import gpu_check  # noqa: E402

from adaqpacknet.training import pick_device  # noqa: E402


def test_the_gpu_check_passes_end_to_end_on_the_cpu(tmp_path):
    # The very script `make gpu-check` runs, on tiny fake data: every run trains in-process, BWT is
    # exactly 0, the packed files verify (split CIFAR-100's data root is not "data": the check must
    # pass its own), and the table is written where --out says. Linear quantisation: k-means on the
    # reduced ResNet-18's weights took 138 of this test's 166 s, on the CPU on any device (its
    # results are tested in test_quantization.py). 8 images a class: every task's training split holds
    # a batch of 64 (the learner refuses a batch larger than its split: no step would be taken).
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--per-class", "8", "--timing-per-class", "8",
         "--repeats", "1", "--quantizer", "linear", "--out", str(tmp_path), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = report["checks"]
    assert {(c["scenario"], c["method"]) for c in checks} == {(s, m) for s in gpu_check.SCENARIOS for m in gpu_check.VARIANTS}
    assert all(c["ok"] and c["bwt"] == 0.0 and c["ran_on"] == "cpu" for c in checks)
    assert {c["packed_check"] for c in checks if c["method"] in ("ada_qpacknet", "packnet")} == {"bit-identical"}
    assert [row["workload"].split()[0] for row in report["rows"]] == list(gpu_check.SCENARIOS)
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check")


@pytest.mark.parametrize("name, fits", [
    ("tabulate-0.9.0-py3-none-any.whl", True),
    ("kmeans1d-0.5.0-cp32-abi3-manylinux_2_34_x86_64.whl", True),
    ("constriction-0.5.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("constriction-0.5.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
    ("constriction-0.5.0-cp312-cp312-macosx_11_0_arm64.whl", False),
    ("kmeans1d-0.5.0-cp313-abi3-manylinux_2_34_x86_64.whl", False),
    ("kmeans1d-0.5.0.tar.gz", False),
])
def test_wheel_fits_cpython_312_on_linux_x86_64(name, fits):
    assert gpu_check.wheel_fits(name, (3, 12)) is fits


def _wheel(folder: Path, package: str) -> Path:
    path = folder / f"{package}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{package}/__init__.py", "ANSWER = 42\n")
        archive.writestr(f"{package}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    return path


def test_the_wheelhouse_supplies_a_missing_package(tmp_path, monkeypatch):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    monkeypatch.setattr(gpu_check, "NEEDS_WHEELS", ("adaqpacknet_wheel_probe", "json"))  # one missing, one installed
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit, match=r"adaqpacknet_wheel_probe not installed and no wheel of it .* `make wheelhouse`"):
        gpu_check.use_wheelhouse(wheelhouse, tmp_path / "unpacked")
    _wheel(wheelhouse, "adaqpacknet_wheel_probe")
    assert gpu_check.use_wheelhouse(wheelhouse, tmp_path / "unpacked") == ["adaqpacknet_wheel_probe-1.0-py3-none-any.whl"]
    import adaqpacknet_wheel_probe
    from importlib import metadata

    assert adaqpacknet_wheel_probe.ANSWER == 42 and metadata.version("adaqpacknet_wheel_probe") == "1.0"
    del sys.modules["adaqpacknet_wheel_probe"]


def test_a_benchmark_table_is_written_without_tabulate(monkeypatch):
    # A bare GPU machine has pandas but not tabulate: the table falls back to plain text instead of
    # failing the benchmark after everything was measured.
    frame = pd.DataFrame([{"workload": "a", "cpu_s_per_epoch": 1.23456}])
    assert common.markdown_table(frame).startswith("| workload")
    monkeypatch.setitem(sys.modules, "tabulate", None)  # import tabulate now raises ImportError
    with pytest.raises(ImportError):
        frame.to_markdown()
    text = common.markdown_table(frame)
    assert text.startswith("```") and "1.235" in text


@pytest.mark.parametrize("visible", ["0", "1,2", "GPU-5f2c"])
def test_device_auto_fails_where_a_gpu_was_given_but_cuda_is_unusable(monkeypatch, visible):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(RuntimeError, match=f"CUDA_VISIBLE_DEVICES={visible} but torch cannot use CUDA.*device='cpu'"):
        pick_device("auto")
    assert pick_device("cpu") == torch.device("cpu")  # the CPU on purpose still works


@pytest.mark.parametrize("visible", [None, "", "-1", "NoDevFiles"])
def test_device_auto_takes_the_cpu_where_no_gpu_was_given(monkeypatch, visible):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert pick_device("auto") == torch.device("cpu")


def test_the_wheelhouse_pins_are_the_projects():
    # `make wheelhouse` must collect the versions pyproject.toml pins (one set of numbers, checked).
    makefile = (ROOT / "Makefile").read_text()
    pins = next(line.split(":=", 1)[1].split() for line in makefile.splitlines() if line.startswith("WHEELHOUSE_PINS"))
    project = (ROOT / "pyproject.toml").read_text()
    assert sorted(p.split("==")[0] for p in pins) == sorted(gpu_check.NEEDS_WHEELS)
    for pin in pins:
        assert f'"{pin}"' in project, pin


def test_the_method_tour_checks_its_packed_file_on_the_device_that_recorded_the_probes(tmp_path, monkeypatch):
    # Notebook 00 compared the packed file's CPU logits with probes recorded on the GPU: on a GPU
    # they differ in the last bits. It now asks the learner, which loads the file on its own device.
    from adaqpacknet import learner as learner_module
    from adaqpacknet.config import Config
    from adaqpacknet.learner import AdaQPacknet

    assert "learner.packed_logits_identical(packed_path)" in (ROOT / "notebooks" / "00_method_tour.py").read_text()
    learner = AdaQPacknet(Config.from_dict({"scenario": "split_digits", "num_tasks": 1, "epochs": 1, "finetune_epochs": 0,
                                            "population": 1, "batch_size": 32, "progress": False, "device": "cpu"}))
    learner.run()
    path = learner.write_packed(tmp_path)
    loaded_on = []
    real = learner_module.PackedNetwork.load.__func__
    monkeypatch.setattr(learner_module.PackedNetwork, "load", classmethod(
        lambda cls, file, device="cpu", **kw: loaded_on.append(torch.device(device)) or real(cls, file, device=device, **kw)))
    assert learner.packed_logits_identical(path)
    assert loaded_on == [learner.device]


def test_an_in_memory_task_moves_to_the_device_and_is_batched_there():
    # On a GPU, fit and evaluate gather and transform each batch where the uint8 images are
    # (training.on_device): no per-batch copy from the host. The "meta" device stands for the GPU.
    from adaqpacknet.data.scenarios import BatchTransform, TaskDataset

    images = torch.arange(4 * 16, dtype=torch.uint8).reshape(4, 1, 4, 4)
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    here = TaskDataset(images, torch.arange(4), BatchTransform([0.5], [0.25], permutation=permutation))
    there = here.to("meta")
    x, y = there.__getitems__([3, 1])
    assert x.device.type == y.device.type == "meta" and x.shape == (2, 1, 4, 4)
    assert here.images.device.type == "cpu"  # the CPU dataset is left as it was
    x_cpu, y_cpu = here.to("cpu").__getitems__([3, 1])
    assert torch.equal(x_cpu, here.__getitems__([3, 1])[0]) and y_cpu.tolist() == [3, 1]
