"""``refused``: a hostile input must be refused with the package's own error, naming the file or the
value, within bounded memory and time. Shared by the test modules of hostile inputs
(``from bounded import refused``; pytest puts tests/ on the import path).

Each case is measured: under ``MAX_CASE_MIB`` of memory above what the process held before it
(peak resident set, reset before each case) and under ``MAX_CASE_SECONDS``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

MAX_CASE_MIB = 512
MAX_CASE_SECONDS = 2.0


def _status(field: str) -> int:
    """A field of /proc/self/status in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def refused(call, error: type[BaseException], match: str) -> BaseException:
    """Run ``call``; it must raise ``error`` matching ``match``, within the memory and time bounds."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set (VmHWM)
    before = _status("VmRSS")
    start = time.perf_counter()
    with pytest.raises(error, match=match) as raised:
        call()
    seconds = time.perf_counter() - start
    peak_mib = (_status("VmHWM") - before) / 1024
    assert seconds < MAX_CASE_SECONDS, f"{seconds:.2f} s"
    assert peak_mib < MAX_CASE_MIB, f"{peak_mib:.0f} MiB"
    return raised.value
