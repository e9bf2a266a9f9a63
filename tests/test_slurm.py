"""The experiment grid through SLURM: a real one-node cluster on localhost, snakemake's SLURM executor.

workflow/slurm/local-cluster.sh starts the cluster (installing slurm-wlm and munge with apt-get
when missing); the grid runs with the profile workflow/profiles/slurm-local, as a user would run it.
Needs root (apt-get, /etc/slurm/slurm.conf, munged); CI runs as root. About 2-4 minutes on 2 cores,
most of it the plugin's status polling (checks 2, 14, 36, 68 s after a submission).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adaqpacknet import grid

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "workflow" / "slurm" / "local-cluster.sh"
SNAKEFILE = ROOT / "workflow" / "Snakefile"
PROFILES = ROOT / "workflow" / "profiles"
SLURM_DIR = ROOT / "build" / "slurm"  # where the script keeps slurm.conf, state and logs
PROFILE = "slurm-smoke"  # its own profile name: runs/<profile>, build/logs/<profile> are this test's alone
METHODS = ["ada_qpacknet", "naive"]
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the local SLURM cluster needs root (apt-get install slurm-wlm munge, /etc/slurm/slurm.conf, "
    "munged as the munge user); run the tests as root, as CI does",
)


def cluster(command: str, timeout: float) -> subprocess.CompletedProcess:
    # apt-get on a fresh machine takes ~15 s; the wait for the node inside the script is bounded to 30 s.
    return subprocess.run(["bash", str(SCRIPT), command], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def snakemake(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """snakemake from the repository root, bounded. SIGINT on timeout: snakemake then cancels its
    SLURM jobs and exits (SIGTERM makes it wait for ever); SIGKILL if it still has not after 60 s."""
    command = [sys.executable, "-m", "snakemake", *args]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            pytest.fail(f"snakemake ran past {timeout} s and was interrupted:\n{out[-5000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


def slurmctld_log() -> str:
    path = SLURM_DIR / "log" / "slurmctld.log"
    return path.read_text(errors="replace") if path.exists() else ""


def clean_profile_outputs():
    # The Snakefile puts runs and logs under the repository (runs/<profile>, build/...): remove this test's.
    for path in (ROOT / "runs" / PROFILE, ROOT / "build" / "logs" / PROFILE, ROOT / "build" / "notebooks" / PROFILE):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_cluster():
    """The local cluster, started through the script; stopped at the end unless it already ran before."""
    was_running = cluster("status", timeout=30).returncode == 0
    started = cluster("start", timeout=600)
    assert started.returncode == 0, f"local-cluster.sh start failed:\n{started.stdout}\n{started.stderr}"
    yield
    if not was_running:
        stopped = cluster("stop", timeout=120)
        assert stopped.returncode == 0, f"local-cluster.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert cluster("status", timeout=30).returncode != 0, "daemons still running after stop"


@pytest.fixture(scope="module")
def params_root(tmp_path_factory):
    """A tiny profile: 2 runs (2 methods, 1 seed, 2 tasks, 1 epoch) and the experiment notebook that
    reads them: two stages of jobs, each paying the plugin's status polling (the reports run through
    the same rule kind as the notebook, and through the local engine in the smoke test)."""
    root = tmp_path_factory.mktemp("params")
    folder = root / PROFILE
    folder.mkdir()
    (folder / "10_permuted.yaml").write_text(
        yaml.safe_dump({"scenario": "permuted_digits", "methods": METHODS, "seeds": [0], "num_tasks": 2, "epochs": 1, "batch_size": 32})
    )
    return root


@needs_root
def test_grid_runs_through_slurm_and_reruns_nothing(slurm_cluster, params_root, tmp_path):
    results_root = tmp_path / "results"
    slurm_logs = tmp_path / "slurm_logs"
    args = [
        "--profile", str(PROFILES / "slurm-local"),
        "--config", f"profile={PROFILE}", f"params_root={params_root}", f"results_root={results_root}",
        # This test's SLURM job logs, kept also for jobs that succeeded: the evidence that SLURM ran them.
        "--slurm-logdir", str(slurm_logs), "--slurm-keep-successful-logs",
    ]
    clean_profile_outputs()
    try:
        log_before = len(slurmctld_log())
        first = snakemake(*args, timeout=480)
        assert first.returncode == 0, first.stdout[-6000:]

        # Every results JSON: the runs (one per method) and the experiment notebook.
        runs = sorted((ROOT / "runs" / PROFILE / "permuted_digits").glob("*/*-seed0/results.json"))
        assert sorted(p.parent.parent.name for p in runs) == sorted(METHODS), runs
        for stem in ("10_permuted",):
            assert (results_root / PROFILE / f"{stem}.json").is_file(), stem

        # Through SLURM: one sbatch submission per job (a train_<batch> per batch, 1 experiment); slurmctld
        # accepted each and saw it exit 0; each job's log is snakemake's job step inside the allocation.
        submitted = SUBMITTED.findall(first.stdout)
        jobs_by_rule = {}
        for _, log in submitted:
            rule = Path(log).relative_to(slurm_logs).parts[0]
            rule = "rule_train" if rule.startswith("rule_train_") else rule
            jobs_by_rule[rule] = jobs_by_rule.get(rule, 0) + 1
        batches = len(grid.plan(PROFILE, params_root).batches)
        assert jobs_by_rule == {"rule_train": batches, "rule_experiment": 1}, first.stdout[-6000:]
        ctld = slurmctld_log()[log_before:]
        for job_id, log in submitted:
            assert f"_slurm_rpc_submit_batch_job: JobId={job_id} " in ctld, f"slurmctld never got job {job_id}"
            assert f"_job_complete: JobId={job_id} WEXITSTATUS 0" in ctld, f"job {job_id} did not exit 0 in SLURM"
            assert "--executor slurm-jobstep" in Path(log).read_text(), f"{log} is not a SLURM job step's log"

        # A second invocation finds everything up to date: no job, no submission.
        second = snakemake(*args, timeout=180)
        assert second.returncode == 0, second.stdout[-6000:]
        assert "Nothing to be done" in second.stdout, second.stdout[-6000:]
        assert not SUBMITTED.search(second.stdout), second.stdout[-6000:]
    finally:
        clean_profile_outputs()


def load_profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def test_local_profile_is_the_cluster_profile_without_gpus():
    """slurm-local is a copy of slurm that differs only in the local cluster's settings (no root needed)."""
    real, local = load_profile("slurm"), load_profile("slurm-local")
    local_only = {"slurm-status-command", "slurm-init-seconds-before-status-checks", "slurm-no-account"}
    assert set(local) - set(real) == local_only
    assert set(real) == set(local) - local_only
    assert real["executor"] == local["executor"] == "slurm"
    assert local["slurm-status-command"] == "squeue"  # no sacct without slurmdbd
    assert local["default-resources"]["slurm_partition"] == "debug"
    assert set(real["default-resources"]) == set(local["default-resources"])
    # The same rules, every one a rule of the Snakefile (snakemake ignores unknown names silently).
    rules = set(re.findall(r"^rule (\w+):", SNAKEFILE.read_text(), flags=re.M))
    assert set(real["set-resources"]) == set(local["set-resources"]) <= rules
    # One GPU per run on a real cluster (plugin 2.8.0: resource gpu: N -> sbatch --gpus=N); none locally.
    assert real["set-resources"]["train"]["gpu"] == 1
    assert all(r.get("gpu", 0) == 0 for r in local["set-resources"].values())
    for resources in list(real["set-resources"].values()) + list(local["set-resources"].values()):
        assert "gres" not in resources and "--gpus" not in str(resources.get("slurm_extra", ""))
