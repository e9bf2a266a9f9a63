"""Reading files the package did not just write: regular files only, their size read first.

Every read of a run folder, a packed file, a parameter file, a data file or a cache goes through
``open_regular`` / ``read_regular``, and every lock through ``open_lock_file``: a FIFO is never
waited on, a device such as ``/dev/zero`` is never read, and no file is read past its bound. No
torch here: the GPU-slot wrapper opens its locks before every job.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import CorruptFileError


def open_regular(path: str | Path, max_bytes: int, follow_symlinks: bool = True) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file of at most ``max_bytes``.

    A FIFO, a device (``/dev/zero``), a socket or a folder is refused with CorruptFileError naming
    the file, and so is a symbolic link as the last component with ``follow_symlinks=False`` (for
    files the package writes itself: a link there was put by someone else). The check is made on
    the opened descriptor (``fstat``), so the file cannot be swapped between check and read, and
    O_NONBLOCK keeps the open of a FIFO from waiting for a writer. A missing file raises
    FileNotFoundError as ``open`` does.
    """
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CorruptFileError(f"{path} is a symbolic link; the package reads only regular files here") from None
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise CorruptFileError(f"{path} cannot be opened as a file ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptFileError(f"{path} is not a regular file (it is a {file_kind(info.st_mode)}); the package reads only regular files")
        if info.st_size > max_bytes:
            raise CorruptFileError(f"{path} is {info.st_size} bytes, more than the {max_bytes} such a file may have")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link"))
    return next((name for test, name in kinds if test(mode)), "special file")


def read_regular(path: str | Path, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The bytes of ``path`` (``open_regular``'s checks), never more than ``max_bytes``: a file that
    grows while it is read is refused too."""
    with open_regular(path, max_bytes, follow_symlinks) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CorruptFileError(f"{path} grew past {max_bytes} bytes while it was read")
    return data


def open_lock_file(path: str | Path) -> int:
    """A descriptor of the lock file ``path`` (created if missing, opened for appending), if it is
    a regular file: a symbolic link (O_NOFOLLOW), a FIFO (O_NONBLOCK: the open never waits for a
    reader), a device or a folder in its place is refused with CorruptFileError naming it; checked
    with ``fstat`` on the descriptor. The one way the package opens a lock (run folders, GPU slots)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as error:  # ELOOP: a link; EISDIR: a folder; ENXIO: a FIFO no one reads
        try:
            kind = f"a {file_kind(os.lstat(path).st_mode)}"
        except OSError:
            kind = f"not a lock file ({error.strerror})"
        raise CorruptFileError(f"{path} is {kind}; a lock must be a regular file: delete it") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CorruptFileError(f"{path} is a {file_kind(info.st_mode)}; a lock must be a regular file: delete it")
    return fd
