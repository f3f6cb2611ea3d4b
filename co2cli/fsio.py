"""File-system helpers every writer uses: atomic replacement, so no reader ever sees half a file.

A result is written to a temporary name in the target's folder, flushed to disk, then renamed over the target
(`os.replace`, atomic on POSIX). A killed or failed run therefore leaves either the old file or the new one, and at
most a hidden `.<name>.*.part` temporary that `remove_partials` cleans up.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from co2cli.errors import Co2Error

PARTIAL_GLOB = ".*.part*"
"""Temporary files made by `atomic_path` (hidden, never under a final name)."""


_HINTS = {errno.EACCES: "check the permissions or choose another location",
          errno.EPERM: "check the permissions or choose another location",
          errno.EROFS: "the file system is read-only; choose another location",
          errno.ENOSPC: "the disk is full; free space or choose another location",
          errno.EDQUOT: "the disk quota is exceeded; free space or choose another location",
          errno.ENOENT: "it does not exist (was it moved or deleted?)",
          errno.EISDIR: "it is a folder; give a file name",
          errno.ENOTDIR: "a part of the path is a file, not a folder",
          errno.EEXIST: "something else is in the way there"}


def os_error_message(exc: OSError, path: str | Path | None = None) -> str:
    """'PATH: No space left on device (the disk is full; free space or choose another location)'."""
    where = path if path is not None else (exc.filename or "")
    reason = exc.strerror or type(exc).__name__
    hint = _HINTS.get(exc.errno or -1, "")
    text = f"{reason} ({hint})" if hint else reason
    return f"{where}: {text}" if where else text


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds.

    The temporary name is `.<target name>.<random>.part<suffix>` so `remove_partials` can find it. An OS-level
    failure (permission, full disk, a folder in the way) becomes one Co2Error naming `target`; the temporary file
    is removed in every case.
    """
    target = Path(target)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + suffix, dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; final files get the usual permissions
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        raise Co2Error(os_error_message(exc, target)) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_file(target: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `target` atomically, fsynced before the rename (streamed, so
    large objects such as a training state are never held twice in memory)."""
    with atomic_path(target) as tmp:
        with tmp.open("wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    """`data` to `target` atomically: readers see the old or the new file, never a mix."""
    with atomic_file(target) as fh:
        fh.write(data)


def write_text_atomic(target: str | Path, text: str) -> None:
    """UTF-8 `text` to `target` atomically."""
    write_bytes_atomic(target, text.encode())


def remove_partials(folder: Path, target_name: str | None = None) -> None:
    """Remove temporary files a killed run left in `folder` (they never carry a final name): all of them, or only
    those of the file called `target_name` (use that while other jobs may be writing beside you)."""
    if folder.is_dir():
        pattern = f".{target_name}.*.part*" if target_name else PARTIAL_GLOB
        for stale in folder.glob(pattern):
            stale.unlink(missing_ok=True)


def write_result_file(target: Path, text: str) -> None:
    """--output: a regular file is replaced atomically (no reader sees half a file); a pipe, a device or a symlink
    (/dev/stdout, a FIFO) is written into in place, never replaced by a new file."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        write_text_atomic(target, text)
