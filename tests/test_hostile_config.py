"""Hostile configs, parameter files and profile names (issue 26, items 4, 5 and 7): every case is
refused with the package's own error (ConfigError, or CorruptFileError for a file that is no
regular file), naming the field, value, file or line, before any work and within bounded memory
and time (``bounded.refused``); a profile name never reaches a shell command as code."""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from bounded import refused

from adaqpacknet import grid
from adaqpacknet.config import MAX_PARAMETER_FILE_BYTES, Config, load_parameter_file
from adaqpacknet.errors import ConfigError, CorruptFileError

ROOT = Path(__file__).resolve().parent.parent
# An error message may name a value, never spell out a huge one.
MAX_MESSAGE_CHARS = 2000

# --- config bounds -------------------------------------------------------------------------------

CONFIG_CASES = {
    # name: (fields, message)
    "infinite lr (ada_qpacknet)": ({"lr": math.inf}, r"lr=inf must be a finite number > 0 and <= 10"),
    "NaN lr (wsn)": ({"method": "wsn", "lr": math.nan}, r"lr=nan must be a finite number > 0 and <= 10"),
    "lr of a million (naive)": ({"method": "naive", "lr": 1e6}, r"lr=1000000.0 must be a finite number > 0 and <= 10"),
    "a billion epochs": ({"epochs": 10**9}, r"epochs=1000000000 must be >= 1 and <= 10000"),
    "a billion finetune epochs (packnet)": (
        {"method": "packnet", "quantizer": "none", "population": 1, "finetune_epochs": 10**9}, r"finetune_epochs=1000000000 must be >= 0 and <= 10000"),
    "a population of a million": ({"population": 10**6}, r"population=1000000 must be >= 1 and <= 100"),
    "an eval batch of ten million": ({"eval_batch_size": 10**7}, r"eval_batch_size=10000000 must be >= 1 and <= 65536"),
    "a million CPU threads": ({"cpu_threads": 10**6}, r"cpu_threads=1000000 must be >= 1 and <= 1024"),
    "a replay memory of a billion": ({"method": "replay", "replay_mem_size": 10**9}, r"replay_mem_size=1000000000 must be >= 1 and <= 1000000"),
    "GEM patterns of a billion": ({"method": "gem", "gem_patterns_per_exp": 10**9}, r"gem_patterns_per_exp=1000000000 must be >= 1 and <= 1000000"),
    "EWC lambda 1e300": ({"method": "ewc", "ewc_lambda": 1e300}, r"ewc_lambda=1e\+300 must be a finite number >= 0 and <= 1e\+06"),
    "LwF temperature 1e9": ({"method": "lwf", "lwf_temperature": 1e9}, r"lwf_temperature=1000000000.0 must be a finite number > 0 and <= 1000"),
    "tolerance beyond 100 points": ({"tolerance": 1e9}, r"tolerance=1000000000.0 must be a finite number >= 0 and <= 100 \(percentage points\)"),
    "weight decay 5": ({"weight_decay": 5.0}, r"weight_decay=5.0 must be a finite number >= 0 and <= 1"),
    "budget share 1e9": ({"budget_share_max": 1e9}, r"budget_share_max=1000000000.0 must be a finite number > 0 and <= 100"),
    "a seed of 15,000 bits": ({"seed": 9**5000}, r"seed=<an int of 15850 bits> is outside the valid range"),
    "a million permuted tasks (wsn)": ({"method": "wsn", "num_tasks": 10**6}, r"num_tasks=1000000 is outside the valid range 1..255 for permuted_fashion_mnist"),
    "a thousand permuted tasks (naive)": ({"method": "naive", "scenario": "permuted_digits", "num_tasks": 1000}, r"num_tasks=1000 is outside the valid range 1..255"),
    "a batch beyond split_digits' tasks": ({"scenario": "split_digits", "batch_size": 300}, r"batch_size=300 is outside the valid range 1..260: the smallest training split of split_digits's 5 tasks"),
    "a batch beyond TinyImageNet's tasks (wsn)": ({"method": "wsn", "scenario": "tinyimagenet", "batch_size": 5000}, r"batch_size=5000 is outside the valid range 1..2250"),
    "a batch beyond permuted MNIST's tasks (replay)": ({"method": "replay", "scenario": "permuted_mnist", "batch_size": 60000}, r"batch_size=60000 is outside the valid range 1..54000"),
    "a batch beyond a 90% validation split": (
        {"scenario": "split_fashion_mnist", "val_fraction": 0.9, "batch_size": 2000}, r"batch_size=2000 is outside the valid range 1..1200"),
    "more prune ratios than tasks": ({"method": "packnet", "quantizer": "none", "population": 1, "prune_ratios": [0.5] * 1000},
                                     r"prune_ratios has 1000 entries for num_tasks=10"),
    "a list for a config": ([("epochs", 1)], r"a config is a mapping of field names to values, not list"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_out_of_range_config(case):
    fields, message = CONFIG_CASES[case]
    error = refused(lambda: Config.from_dict(fields), ConfigError, message)
    assert len(str(error)) < MAX_MESSAGE_CHARS


BOUNDS = {
    # name: (other fields, field, its largest valid value)
    "split_digits' batch": ({"scenario": "split_digits"}, "batch_size", 260),
    "TinyImageNet's batch (wsn)": ({"scenario": "tinyimagenet", "method": "wsn"}, "batch_size", 2250),
    "permuted tasks (naive)": ({"method": "naive"}, "num_tasks", 255),
    "epochs": ({}, "epochs", 10_000),
    "lr": ({}, "lr", 10.0),
    "CPU threads": ({}, "cpu_threads", 1024),
    "GEM patterns": ({"method": "gem"}, "gem_patterns_per_exp", 1_000_000),
}


@pytest.mark.parametrize("case", list(BOUNDS))
def test_a_bound_admits_its_value_and_refuses_the_next(case):
    fields, name, bound = BOUNDS[case]
    assert getattr(Config.from_dict({**fields, name: bound}), name) == bound
    above = bound + 1 if isinstance(bound, int) else bound * 1.5
    refused(lambda: Config.from_dict({**fields, name: above}), ConfigError, f"{name}={above!r}")


HUGE_VALUES = {
    "a string of a megabyte": {"scenario": "x" * (1 << 20)},
    "a deeply nested list": {"prune_ratios": [[[[[[[[[[0.5] * 1000] * 10]]]]]]]] * 10, "num_tasks": 10},
    "a megabyte of unknown keys": {f"key{i}": i for i in range(50_000)},
    "an int of 100,000 digits": {"epochs": 10**100_000},
}


@pytest.mark.parametrize("case", list(HUGE_VALUES))
def test_a_huge_value_is_shortened_in_the_message(case):
    error = refused(lambda: Config.from_dict(HUGE_VALUES[case]), ConfigError, ".")
    assert len(str(error)) < MAX_MESSAGE_CHARS


# --- parameter files (YAML) ----------------------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))

YAML_CASES = {
    # name: (notebook stem, file text (bytes: written as they are), error, message)
    "billion laughs": ("10_permuted", LAUGHS, ConfigError, r"line 1: holds a YAML anchor or alias"),
    "an alias inside tune": ("10_permuted", "seeds: [0]\ntune:\n  ewc: {ewc_lambda: [1, 2]}\n  si: *x\n", ConfigError,
                             r"line 4: holds a YAML anchor or alias"),
    "an anchor on its own": ("10_permuted", "seeds: &s [0]\n", ConfigError, r"line 1: holds a YAML anchor or alias"),
    "a duplicate key": ("10_permuted", "epochs: 1\nseeds: [0]\nepochs: 1000\n", ConfigError, r"line 3: has the key 'epochs' twice"),
    "a duplicate key inside tune": ("10_permuted", "tune:\n  ewc: {ewc_lambda: [1]}\n  ewc: {ewc_lambda: [2]}\n", ConfigError,
                                    r"line 3: has the key 'ewc' twice"),
    "nested ten thousand deep": ("10_permuted", "seeds: " + "[" * 10_000 + "]" * 10_000 + "\n", ConfigError,
                                 r"line 1: nests values more than 32 levels deep"),
    "oversized": ("10_permuted", "# padding\n" * (MAX_PARAMETER_FILE_BYTES // 10 + 1), CorruptFileError, r"more than the 65536"),
    "not YAML": ("10_permuted", "seeds: [0\n", ConfigError, r"is not valid YAML"),
    "not UTF-8": ("10_permuted", b"seeds: [0]\nscenario: \xff\n", ConfigError, r"is not UTF-8 text"),
    "a list, not a mapping": ("10_permuted", "- 1\n- 2\n", ConfigError, r"holds \[1, 2\]; a parameter file maps parameter names"),
    "a list for scenarios": ("14_class_incremental", "scenarios: [split_digits]\n", ConfigError,
                             r"scenarios=\['split_digits'\] has type list; notebooks/14_class_incremental.ipynb takes dict"),
    "a number for seeds": ("10_permuted", "seeds: 5\n", ConfigError, r"seeds=5 has type int; notebooks/10_permuted.ipynb takes list"),
    "a list in methods": ("10_permuted", "seeds: [0]\nmethods: [[naive]]\n", ConfigError, r"unknown method \['naive'\]"),
    "a number in overrides": ("10_permuted", "seeds: [0]\nmethods: [naive]\noverrides: [5]\n", ConfigError, r"expected key=value, got 5"),
    "a list for a scenario's changes": ("14_class_incremental", "scenarios: {split_digits: [1]}\nmethods: [naive]\n", ConfigError,
                                        r"scenarios\['split_digits'\]=\[1\] must map Config fields to values"),
    "a list for an ablation variant": ("21_ablation_sparsity", "scenarios: {split_digits: {}}\nvariants: {a: [1]}\n", ConfigError,
                                       r"variant 'a'=\[1\] must map Config fields to values"),
    "a tuning grid of 400 points": ("10_permuted", "methods: [ewc]\nseeds: [0]\ntune: {ewc: {ewc_lambda: [%s], si_lambda: [%s]}}\n"
                                    % (", ".join(["1"] * 20), ", ".join(["1"] * 20)), ConfigError, r"makes 400 grid points"),
    "an infinite tuning factor": ("10_permuted", "methods: [ewc]\nseeds: [0]\ntune: {ewc: {ewc_lambda: [.inf]}}\n", ConfigError,
                                  r"has factors \[inf\]: each must be a finite number > 0"),
    "a thousand seeds": ("10_permuted", "seeds: [%s]\n" % ", ".join(str(i) for i in range(1000)), ConfigError,
                         r"make 20000 runs; at most 10000"),
}


def _profile(tmp_path: Path, stem: str, text: str | bytes) -> Path:
    folder = tmp_path / "params" / "hostile"
    folder.mkdir(parents=True)
    path = folder / f"{stem}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_hostile_parameter_file(case, tmp_path):
    stem, text, error_type, message = YAML_CASES[case]
    path = _profile(tmp_path, stem, text)
    error = refused(lambda: grid.plan("hostile", tmp_path / "params"), error_type, message)
    assert str(path) in str(error) and len(str(error)) < MAX_MESSAGE_CHARS


def test_a_parameter_file_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    path = tmp_path / "params" / "hostile" / "10_permuted.yaml"
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    refused(lambda: grid.plan("hostile", tmp_path / "params"), CorruptFileError, re.escape(str(path)) + " is not a regular file")


def test_every_profile_file_loads_as_before(tmp_path):
    # The strict loader reads every shipped parameter file as yaml.safe_load did.
    import yaml

    files = sorted((ROOT / "notebooks" / "params").glob("*/*.yaml"))
    assert len(files) >= 30
    for path in files:
        assert load_parameter_file(path) == (yaml.safe_load(path.read_text()) or {}), path


# --- profile names: the Snakefile and the Makefile -----------------------------------------------

CRAFTED = "x;touch pwned-by-profile"


@pytest.mark.parametrize("setting, message", [
    (f"profile={CRAFTED}", r"profile='x;touch pwned-by-profile' is not a profile name"),
    ("results_root=results/{evil}", r"results_root='results/\{evil\}' is not a folder path"),
], ids=["profile", "results_root with a wildcard"])
def test_a_crafted_name_stops_the_workflow_before_any_rule(setting, message, tmp_path):
    # A profile folder of that very name exists (so only the name check can stop it) and holds a
    # report notebook's parameters: no run is planned, the name reaches the papermill command.
    folder = tmp_path / "params" / CRAFTED
    folder.mkdir(parents=True)
    (folder / "90_tables.yaml").write_text("{}\n")
    if not setting.startswith("profile="):
        (tmp_path / "params" / "plain").mkdir()
        (tmp_path / "params" / "plain" / "90_tables.yaml").write_text("{}\n")
    profile = [] if setting.startswith("profile=") else ["profile=plain"]
    dry = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--snakefile", "workflow/Snakefile", "--directory", ".", "--dry-run",
         "--printshellcmds", "--cores", "1", "--config", setting, f"params_root={tmp_path / 'params'}", *profile],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    output = dry.stdout + dry.stderr
    assert dry.returncode != 0 and re.search(message, output), output[-3000:]
    assert "papermill" not in output and not (ROOT / "pwned-by-profile").exists()


def test_a_root_with_shell_characters_reaches_every_command_as_one_word(tmp_path):
    # A root may hold spaces and ';' (a real path may): the Snakefile quotes it in every command.
    params = tmp_path / "params; touch pwned-by-root"
    (params / "plain").mkdir(parents=True)
    (params / "plain" / "90_tables.yaml").write_text("{}\n")
    results = f"{tmp_path}/results; touch pwned-by-root"
    dry = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--snakefile", "workflow/Snakefile", "--directory", ".", "--dry-run",
         "--printshellcmds", "--cores", "1", "--config", "profile=plain", f"params_root={params}", f"results_root={results}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    command = next(line for line in dry.stdout.splitlines() if "papermill" in line)
    words = shlex.split(command)
    assert f"{results}/plain/90_tables.json" in words and f"{params}/plain/90_tables.yaml" in words, command


def test_make_passes_each_value_to_snakemake_as_one_word():
    crafted = "x'; touch pwned-by-make; echo '"
    shown = subprocess.run(
        ["make", "--no-print-directory", "-n", "reproduce", f"PROFILE={crafted}", "RESULTS_ROOT=a b", "TARGETS=t1 t'2"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    line = [line for line in shown.stdout.splitlines() if "snakemake --snakefile" in line][-1]
    words = shlex.split(line)
    assert f"profile={crafted}" in words and "results_root=a b" in words and words[-2:] == ["t1", "t'2"]
    assert not (ROOT / "pwned-by-make").exists()


def test_a_batch_within_the_nominal_split_but_beyond_the_real_one_is_refused_before_training():
    # Config bounds batch_size by the nominal split (260 for split_digits); digits' smallest real
    # split is smaller, and a batch between the two trained nothing and reported results.
    from adaqpacknet.continual import scenario_of
    from adaqpacknet.learner import AdaQPacknet

    config = Config(scenario="split_digits", batch_size=260, epochs=1, finetune_epochs=1, progress=False, device="cpu")
    scenario = scenario_of(config)  # the data read outside the timed case
    refused(lambda: AdaQPacknet(config, scenario), ConfigError, r"batch_size=260 is larger than the smallest training split of split_digits \(\d+ images\)")
