"""Atomic file writes: a crash never leaves a half-written file under the final name."""
from __future__ import annotations

import os
import tempfile
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write(final: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file next to ``final``, flush it to disk, give it the usual
    permissions (0666 less the umask), then rename it over ``final``; on any failure remove it."""
    final = os.fspath(final)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final) or ".", prefix=f".{os.path.basename(final)}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
