"""Writing outputs safely: atomic file writes (a crash never leaves a half-written file under the final name),
the leftovers of killed writes, and output folders checked before anything is written."""
from __future__ import annotations

import os
import tempfile
from typing import Callable

from full.errors import ConfigError, SidError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write(final: str | os.PathLike, write: Callable[[str], None], durable: bool = True) -> None:
    """``write(tmp)`` into a temporary file ``.NAME.XXXX.tmp`` next to ``final``, flush it to disk (unless not
    `durable`: a progress note may be lost in a power cut, never torn), give it the usual permissions
    (0666 less the umask), then rename it over ``final``; on any failure remove it."""
    final = os.fspath(final)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final) or ".", prefix=f".{os.path.basename(final)}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(final: str | os.PathLike, text: str, durable: bool = True) -> None:
    """`atomic_write` of a UTF-8 text file."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(final, write, durable)


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete the temporary files of interrupted `atomic_write` calls in `folder` (a killed process cannot
    clean up after itself); returns how many bytes were freed. Call it only while no other process writes there."""
    freed = 0
    for entry in os.scandir(folder):
        if entry.is_file() and entry.name.startswith(".") and entry.name.endswith(".tmp"):
            freed += entry.stat().st_size
            os.unlink(entry.path)
    return freed


def output_folder(folder: str | os.PathLike, what: str, error: type[SidError] = ConfigError) -> None:
    """Create `folder` (with its parents) for a command's outputs, or raise `error` naming `what` (the option and
    its value): a file in its place, a folder that cannot be made, or one this process cannot write into."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise error(f"{what} is a file; give a directory")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise error(f"{what} cannot be created ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{what} is not writable; choose another directory")
