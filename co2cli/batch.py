"""The resumable batch runner behind `co2 extract-features` and `co2 extract-flow`: one output per input,
finished ones skipped.

Each input is isolated (a bad file fails alone), each output is written under a temporary name then renamed, and a
rerun after a kill resumes with the unfinished inputs. The caller chooses the output names (unique in the batch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typing import Protocol

from co2cli.errors import Co2Error
from co2cli.extract import FeatureExtractor, Progress
from co2cli.features import is_complete, output_paths, save
from co2cli.fsio import remove_partials


class Job(Protocol):
    """What a batch does per input: whether its output is already there, which files it writes, and the work."""

    def is_done(self, out_dir: Path, name: str) -> bool: ...

    def outputs(self, out_dir: Path, name: str) -> Sequence[Path]: ...

    def run(self, path: Path, out_dir: Path, name: str, progress: Progress | None) -> tuple[int, int, float]:
        """Do the work and write the outputs atomically; returns (rows or fields, 25 fps frames, duration s)."""
        ...


class FeatureJob:
    """`co2 extract-features`: `<name>.npy` (T, D) + `<name>.json` recipe per video."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor

    def is_done(self, out_dir: Path, name: str) -> bool:
        return is_complete(out_dir, name, self.extractor.identity())

    def outputs(self, out_dir: Path, name: str) -> Sequence[Path]:
        return output_paths(out_dir, name)

    def run(self, path: Path, out_dir: Path, name: str, progress: Progress | None) -> tuple[int, int, float]:
        extracted = self.extractor.extract(path, progress)
        save(out_dir, name, extracted.features, extracted.recipe)
        return (int(extracted.features.shape[0]), int(extracted.recipe.get("frame_count") or 0),
                float(extracted.recipe.get("duration_s") or 0.0))


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


def run_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, job: Job | FeatureExtractor,
              overwrite: bool = False, events: BatchEvents = BatchEvents()) -> list[BatchItem]:
    """Run `job` (or extract features with an extractor) for every (video, output name) into `out_dir`;
    finished outputs are skipped unless `overwrite`.

    An output another job is working on is left to it and revisited at the end: once that job lets go, it is
    taken as done if complete, or extracted here if the other job died before finishing. So concurrent jobs on
    one folder never compute a video twice and every input ends with an output or an error.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(job, FeatureExtractor):
        job = FeatureJob(job)
    items: list[BatchItem] = []
    busy: list[int] = []
    for path, name in inputs:
        item = _process(path, name, out_dir, job, overwrite, events, wait=False)
        if item.status == "busy":
            busy.append(len(items))
        elif events.on_end:
            events.on_end(item)
        items.append(item)
    for index in busy:
        path, name = inputs[index]
        item = _process(path, name, out_dir, job, False, events, wait=True)
        if item.status == "skipped":
            item.message = "extracted by another job"
        items[index] = item
        if events.on_end:
            events.on_end(item)
    return items


def _process(path: Path, name: str, out_dir: Path, job: Job, overwrite: bool, events: BatchEvents,
             wait: bool) -> BatchItem:
    started = time.perf_counter()
    with claim(out_dir, name, wait) as mine:
        if not mine:
            item = BatchItem(path, name, "busy", message=BUSY_MESSAGE)
        elif not overwrite and job.is_done(out_dir, name):
            item = BatchItem(path, name, "skipped", message="already extracted")
        else:
            for final in job.outputs(out_dir, name):  # leftovers of a killed run on this output
                remove_partials(final.parent, final.name)
            item = _run_one(path, name, out_dir, job, events)
    item.seconds = time.perf_counter() - started
    return item


def _run_one(path: Path, name: str, out_dir: Path, job: Job, events: BatchEvents) -> BatchItem:
    """Do one input's work (the caller holds its claim); a Co2Error fails this input only."""
    try:
        if events.on_start:
            events.on_start(path, name)
        rows, frames, duration_s = job.run(path, out_dir, name, events.on_progress)
    except Co2Error as exc:
        return BatchItem(path, name, "failed", message=str(exc))
    return BatchItem(path, name, "done", rows, frames=frames, duration_s=duration_s)


def result_names(paths: Sequence[Path]) -> list[str]:
    """A name per input, unique in the batch wherever the inputs allow it: file stems when those differ, else
    each path relative to the inputs' common folder without its extension (`class1/clip1`). Two inputs that
    still share a name (a.mp4 and a.mkv in one folder) keep it; the caller reports the clash."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    return [r.relative_to(common).with_suffix("").as_posix() for r in resolved]
