"""The resumable batch runner behind `co2 extract-features`: one output pair per input, finished ones skipped.

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

from co2cli.errors import Co2Error
from co2cli.extract import FeatureExtractor, Progress
from co2cli.features import is_complete, output_paths, save
from co2cli.fsio import remove_partials


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
    is killed, so a dead job never leaves an output stuck. The lock file itself stays (it is empty and hidden).
    """
    import fcntl

    lock_path = out_dir / f".{name.replace('/', '__')}.claim"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


BUSY_MESSAGE = "being extracted by another job"


@dataclass
class BatchEvents:
    """Callbacks a front end uses to show progress (all optional)."""

    on_start: Callable[[Path, str], None] | None = None
    on_progress: Progress | None = None
    on_end: Callable[[BatchItem], None] | None = None


def run_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, extractor: FeatureExtractor,
              overwrite: bool = False, events: BatchEvents = BatchEvents()) -> list[BatchItem]:
    """Extract every (video, output name) into `out_dir`; finished outputs are skipped unless `overwrite`.

    An output another job is working on is left to it and revisited at the end: once that job lets go, it is
    taken as done if complete, or extracted here if the other job died before finishing. So concurrent jobs on
    one folder never compute a video twice and every input ends with an output or an error.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[BatchItem] = []
    busy: list[int] = []
    for path, name in inputs:
        item = _process(path, name, out_dir, extractor, overwrite, events, wait=False)
        if item.status == "busy":
            busy.append(len(items))
        elif events.on_end:
            events.on_end(item)
        items.append(item)
    for index in busy:
        path, name = inputs[index]
        item = _process(path, name, out_dir, extractor, False, events, wait=True)
        if item.status == "skipped":
            item.message = "extracted by another job"
        items[index] = item
        if events.on_end:
            events.on_end(item)
    return items


def _process(path: Path, name: str, out_dir: Path, extractor: FeatureExtractor, overwrite: bool,
             events: BatchEvents, wait: bool) -> BatchItem:
    started = time.perf_counter()
    with claim(out_dir, name, wait) as mine:
        if not mine:
            item = BatchItem(path, name, "busy", message=BUSY_MESSAGE)
        elif not overwrite and is_complete(out_dir, name, extractor.streams):
            item = BatchItem(path, name, "skipped", message="already extracted")
        else:
            for final in output_paths(out_dir, name):  # leftovers of a killed run on this output
                remove_partials(final.parent, final.name)
            item = _extract_one(path, name, out_dir, extractor, events)
    item.seconds = time.perf_counter() - started
    return item


def _extract_one(path: Path, name: str, out_dir: Path, extractor: FeatureExtractor, events: BatchEvents) -> BatchItem:
    """Extract and save one video (the caller holds its claim); a Co2Error fails this input only."""
    try:
        if events.on_start:
            events.on_start(path, name)
        extracted = extractor.extract(path, events.on_progress)
        save(out_dir, name, extracted.features, extracted.recipe)
    except Co2Error as exc:
        return BatchItem(path, name, "failed", message=str(exc))
    return BatchItem(path, name, "done", int(extracted.features.shape[0]),
                     frames=int(extracted.recipe.get("frame_count") or 0),
                     duration_s=float(extracted.recipe.get("duration_s") or 0.0))


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
