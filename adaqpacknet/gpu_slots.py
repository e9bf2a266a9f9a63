"""One GPU per concurrent job on one multi-GPU machine.

``python -m adaqpacknet.gpu_slots --slots 0,1,2,3 -- COMMAND ...`` takes the first free slot by
an exclusive lock on ``<lock dir>/gpu<slot>.lock``, runs COMMAND with ``CUDA_VISIBLE_DEVICES`` set
to that slot and holds the lock until COMMAND ends. Snakemake bounds how many jobs run at once
(``--resources gpu=4``) but does not say which GPU each job gets; this says it. The lock belongs to
the process, so it is released however COMMAND ends (kill -9 included). With more jobs than slots
a job waits for a slot. On SLURM none of this is needed: SLURM sets ``CUDA_VISIBLE_DEVICES``.

Deliberately light (no torch import): it wraps every job.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import sys
import time
from pathlib import Path

from .errors import ConfigError, shorten
from .files import open_lock_file

DEFAULT_LOCK_DIR = Path(__file__).resolve().parent.parent / "build" / "gpu-slots"


def parse_slots(text: str, name: str = "--slots") -> list[str]:
    """The GPU ids of ``text``, comma-separated numbers such as ``0,1,2,3`` (spaces around them
    allowed); anything else is a ConfigError naming ``name``. The one parser of GPU ids:
    ``make reproduce GPUS=`` (the Snakefile) and ``--slots`` here."""
    slots = [slot.strip() for slot in str(text).split(",")]
    if not all(re.fullmatch(r"[0-9]+", slot) for slot in slots):
        raise ConfigError(f"{name} {shorten(text)}: expected comma-separated GPU ids such as 0,1,2,3")
    return slots


def claim(slots: list[str], lock_dir: Path, poll_seconds: float = 0.5) -> tuple[str, int]:
    """``(slot, fd)``: the first slot whose lock this process could take; waits while all are taken."""
    if not slots:
        raise ValueError("no GPU slots given: pass --slots, e.g. --slots 0,1")
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in slots:
            fd = open_lock_file(lock_dir / f"gpu{slot}.lock")  # a regular file, never a link or a FIFO
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaqpacknet.gpu_slots", description=__doc__.split("\n")[0])
    parser.add_argument("--slots", required=True, help="comma-separated GPU ids this machine lends to jobs, e.g. 0,1,2,3")
    parser.add_argument("--lock-dir", type=Path, default=DEFAULT_LOCK_DIR, help=f"where the slot locks live (default {DEFAULT_LOCK_DIR})")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run on the claimed GPU")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    try:
        slots = parse_slots(args.slots)
    except ConfigError as error:
        parser.error(str(error))  # argparse's exit 2, as for any bad option
    slot, fd = claim(slots, args.lock_dir)
    os.set_inheritable(fd, True)  # the lock lives as long as the command: exec keeps the descriptor
    os.environ["CUDA_VISIBLE_DEVICES"] = slot
    print(f"gpu_slots: CUDA_VISIBLE_DEVICES={slot}", file=sys.stderr, flush=True)
    os.execvp(command[0], command)
    return 1  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
