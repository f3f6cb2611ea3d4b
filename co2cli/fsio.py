"""File-system helpers every writer uses: atomic replacement, so no reader ever sees half a file.

A result is written to a temporary name in the target's folder, flushed to disk, then renamed over the target
(`os.replace`, atomic on POSIX). A killed or failed run therefore leaves either the old file or the new one, and at
most a hidden `.<name>.*.part` temporary that `remove_partials` cleans up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PARTIAL_GLOB = ".*.part*"
"""Temporary files made by `atomic_path` (hidden, never under a final name)."""


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds.

    The temporary name is `.<target name>.<random>.part<suffix>` so `remove_partials` can find it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; final files get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
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
