"""What every benchmark shares: repeated timing, memory, the machine's record, and writing a table.

Each benchmark writes ``benchmarks/results/<device>/<name>.json`` (every repeat, the environment)
and ``<name>.md`` (the table, with the machine and versions above it), atomically.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from adaqpacknet.results import environment, write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 5  # timed repeats after one untimed warm-up; the median is reported


def timed(fn: Callable[[], Any], repeats: int = REPEATS, warmup: int = 1, device: torch.device | None = None) -> dict[str, Any]:
    """Median, min and max seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return summary(times)


def timed_in_turns(
    functions: dict[str, Callable[[], Any]], repeats: int = REPEATS, device: torch.device | None = None, own_time: bool = False
) -> dict[str, dict[str, Any]]:
    """``timed`` for several functions at once, taken in turns (A, B, A, B, ...) after one warm-up
    round, so that a slow spell of the machine falls on all of them rather than on one.

    ``own_time``: each function returns the seconds of the part that counts (an epoch's gradient
    steps without its validation, say), which replace the wall time of the call."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(1 + repeats):
        for name, fn in functions.items():
            _synchronize(device)
            start = time.perf_counter()
            returned = fn()
            _synchronize(device)
            if round_:
                times[name].append(float(returned) if own_time else time.perf_counter() - start)
    return {name: summary(values) for name, values in times.items()}


def summary(times: list[float]) -> dict[str, Any]:
    """Median, min and max of measured seconds, with every value kept."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times), "times_s": times}


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """Peak resident memory of this process's own memory so far, MiB: ``VmHWM``. (``ru_maxrss``
    would do, but Linux carries it over from the parent across fork and exec, so a small child of a
    large parent would report the parent's peak.)"""
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    return kib / 1024


def current_rss_mib() -> float:
    """Resident memory of this process now, MiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def machine(device: torch.device) -> dict[str, Any]:
    """The package's environment record plus the CPU model."""
    record = environment(device)
    # The benchmarks' own result files are written as they run: they do not make the code dirty.
    if record["git_commit"].endswith("+dirty"):
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
            cwd=RESULTS.parent.parent, capture_output=True, text=True,
        ).stdout.strip()
        if not changed:
            record["git_commit"] = record["git_commit"].removesuffix("+dirty")
    try:
        with open("/proc/cpuinfo") as handle:
            record["cpu_model"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        record["cpu_model"] = record["processor"]
    return record


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table (pandas' to_markdown, through tabulate); where tabulate is
    missing (a bare GPU machine without the wheelhouse), as a fixed-width block: a benchmark that
    measured everything must not fail at its last line. The JSON holds every number either way."""
    try:
        return frame.to_markdown(index=False, floatfmt=".4g")
    except ImportError:
        return "```\n" + frame.to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n```"


def write(
    name: str, title: str, rows: list[dict[str, Any]], device: torch.device, notes: str, data: dict[str, Any] | None = None,
    timing: str = f"median of {REPEATS} after a warm-up", folder: Path | None = None,
) -> Path:
    """Write the benchmark's JSON and Markdown table in ``folder`` (default results/<device type>);
    print the table. Returns the Markdown path.

    ``timing`` says how the table's times were taken."""
    env = machine(device)
    folder = RESULTS / device.type if folder is None else Path(folder)
    write_json(folder / f"{name}.json", {"benchmark": name, "title": title, "environment": env, "timing": timing, "rows": rows, "notes": notes, **(data or {})})
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v and k != "adaqpacknet")
    table = markdown_table(pd.DataFrame(rows))
    text = (
        f"# {title}\n\n{env['cpu_model']}, {env['cpu_count']} cores, {env['torch_threads']} torch threads, device "
        f"{env['device']} ({env['device_name']}); Python {env['python']}; {packages}; commit {env['git_commit']}. "
        f"Times: {timing}.\n\n{notes}\n\n{table}\n"
    )
    path = folder / f"{name}.md"
    write_text(path, text)
    print(text, flush=True)
    return path
