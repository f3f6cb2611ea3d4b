"""The vocabulary of a resumable batch (`runner.run_batch` runs it): an output's claim, an input's outcome
(`BatchItem`), and the callbacks a front end gets (`BatchEvents`).

Each input is isolated (a bad file fails alone), each output is written under a temporary name then renamed, and a
rerun after a kill resumes with the unfinished inputs. The caller chooses the output names (unique in the batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from co2cli.extract import Progress


@dataclass
class BatchItem:
    """The outcome for one input of a batch: status is 'done', 'skipped' (finished earlier), 'busy' (another job
    holds its claim) or 'failed'."""

    path: Path
    name: str
    """Output stem: `<name>.npy` / `<name>.json` in the output folder."""
    status: str
    snippets: int = 0
    seconds: float = 0.0
    frames: int = 0
    """25 fps frames processed (0 when skipped or failed)."""
    duration_s: float = 0.0
    message: str = ""
    output: object = None
    """What the job made in memory (`co2 localize`: the input's pipeline.Analysis); None for file outputs."""


@contextmanager
def claim(out_dir: Path, name: str, wait: bool = False) -> Iterator[bool]:
    """Claim output `name` in `out_dir` for this process: yields True when claimed, False when another live job
    (another shell, or another executor) is working on it (with `wait`, block until it is done instead).

    The claim is an exclusive `flock` on `<out_dir>/.<name>.claim`: the kernel drops it when the holder exits or
    is killed, so a dead job never leaves an output stuck. The holder removes the file when done (a killed one
    leaves an unlocked file that the next claim takes over); a lock taken on a file that was meanwhile removed
    is retried on the new one.
    """
    import fcntl

    lock_path = out_dir / f".{name.replace('/', '__')}.claim"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the previous holder removed this file after we opened it: claim the new one
    try:
        yield True
    finally:
        lock_path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


BUSY_MESSAGE = "being extracted by another job"


@dataclass
class BatchEvents:
    """Callbacks a front end uses to show progress (all optional)."""

    on_start: Callable[[Path, str], None] | None = None
    on_progress: Progress | None = None
    on_end: Callable[[BatchItem], None] | None = None
