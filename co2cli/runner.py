"""The one batch runner behind `co2 extract-features`, `co2 extract-flow` and `co2 localize`, for every executor.

A batch is a `Job` (what to compute per input, and how the driver writes it) run on a `Pool` (where the compute
runs: `LocalPool` in this process, `distributed.RayPool` on Ray workers). The runner owns the rules that make a
batch resumable and safe whatever the executor: an output's claim (`batch.claim`) is taken before its input is
submitted and held until the output is written, finished outputs are skipped, leftovers of a killed run are
removed, outputs another job holds are revisited at the end, and every input ends as one `BatchItem`.

The work of one input is split where a cluster splits it: `Job.compute` runs anywhere (given a FeatureExtractor)
and yields `Chunk`s then one `Computed` or `ComputeFailed`; `Job.writer` runs on the driver and turns those
messages into the output. Adding an executor is one new module with a class that has `Pool.run`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

from co2cli.batch import BUSY_MESSAGE, BatchEvents, BatchItem, claim
from co2cli.errors import Co2Error
from co2cli.fsio import remove_partials

if TYPE_CHECKING:
    import numpy as np

    from co2cli.extract import FeatureExtractor, Progress

# ---------------------------------------------------------------------------------------------------------------
# Messages from a compute (picklable: they cross process and node boundaries)


@dataclass
class Chunk:
    """A piece of an output, streamed before the input's end (encoded flow fields)."""

    data: Any


@dataclass
class Computed:
    """An input's compute ended well: its recipe, the 25 fps frames and duration (s) read, and the features
    (None when the output was streamed as chunks)."""

    recipe: dict
    frames: int
    duration_s: float
    features: np.ndarray | None = None


@dataclass
class ComputeFailed:
    """An input's compute ended with a Co2Error (a bad video): this input fails alone."""

    message: str


Message = Union[Chunk, Computed, ComputeFailed]
Compute = Callable[["FeatureExtractor", str, "Progress | None"], Iterator[Message]]
"""compute(extractor, video path, progress) -> messages; a picklable callable, run on any executor."""


def run_compute(compute: Compute, extractor: FeatureExtractor, path: str,
                progress: Progress | None) -> Iterator[Message]:
    """`compute`'s messages, a Co2Error turned into the input's ComputeFailed (any other error is a bug and
    stops the batch)."""
    try:
        yield from compute(extractor, path, progress)
    except Co2Error as exc:
        yield ComputeFailed(str(exc))


# ---------------------------------------------------------------------------------------------------------------
# Jobs (the driver's half) and pools (where computes run)


class Writer(Protocol):
    """Writes one input's output on the driver: chunks as they come, then `finish`; `abort` leaves nothing."""

    def add(self, chunk: Any) -> None: ...

    def finish(self, result: Computed) -> BatchItem: ...

    def abort(self) -> None: ...


class WholeResultWriter:
    """A Writer for a compute that streams no chunks (its whole result comes in `Computed`), so a batch that stops
    leaves nothing of it behind."""

    def add(self, chunk: Any) -> None:
        raise TypeError(f"{type(self).__name__} takes no chunks")

    def finish(self, result: Computed) -> BatchItem:
        raise NotImplementedError

    def abort(self) -> None:
        """Nothing to remove: the output is written in `finish`, under temporary names."""


class Job(Protocol):
    """What a batch does per input."""

    out_dir: Path | None
    """Where the outputs go (claims, skips and partial cleanup happen there); None: no files (localize)."""
    compute: Compute

    def is_done(self, name: str) -> bool: ...

    def outputs(self, name: str) -> Sequence[Path]: ...

    def answer(self, path: Path, name: str) -> BatchItem | None:
        """The item of an input the driver answers without a compute (None: compute it)."""
        ...

    def writer(self, path: Path, name: str) -> Writer: ...


@dataclass(frozen=True)
class Task:
    """One input to compute: its key in the batch, the path as given and its absolute form (for a worker whose
    node lacks the driver's working directory)."""

    key: int
    path: str
    absolute: str


class Sink(Protocol):
    """Where a pool reports what happens to the tasks it was given (on the driver, in completion order)."""

    def chunk(self, key: int, data: Any) -> None: ...

    def result(self, key: int, message: Computed | ComputeFailed) -> None: ...

    def void(self, key: int) -> None:
        """What was received of task `key` is void (its worker died); it is resubmitted or fails."""
        ...

    def progress(self, key: int, frames_done: int, frames_estimate: int | None) -> None: ...


class Pool(Protocol):
    """An executor: runs `compute` for every task `tasks` yields (pulled lazily, as places free up). A context
    manager: what it started (processes, a cluster connection) is released on exit."""

    shows_progress: bool
    """True when the pool draws its own progress (then the caller draws none)."""

    def __enter__(self) -> Pool: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, tasks: Iterable[Task], compute: Compute, sink: Sink, pending: int) -> None:
        """Report every task's messages to `sink`; `pending` is how many tasks to expect at most (to size
        the workers)."""
        ...


class LocalPool:
    """Computes in this process, one input at a time, with one FeatureExtractor built on first use (so a batch
    with nothing left to do loads no network)."""

    shows_progress = False
    """The caller shows per-video progress from the Sink's progress reports."""

    def __init__(self, make_extractor: Callable[[], FeatureExtractor]) -> None:
        self._make = make_extractor
        self._extractor: FeatureExtractor | None = None

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release (the interface of every pool: a Ray pool stops its workers here)."""

    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = self._make()
        return self._extractor

    def run(self, tasks: Iterable[Task], compute: Compute, sink: Sink, pending: int) -> None:
        for task in tasks:
            def progress(done: int, estimate: int | None, key: int = task.key) -> None:
                sink.progress(key, done, estimate)

            for message in run_compute(compute, self.extractor(), task.path, progress):
                if isinstance(message, Chunk):
                    sink.chunk(task.key, message.data)
                else:
                    sink.result(task.key, message)


# ---------------------------------------------------------------------------------------------------------------
# The runner


def run_batch(inputs: Sequence[tuple[Path, str]], job: Job, pool: Pool, overwrite: bool = False,
              events: BatchEvents = BatchEvents()) -> list[BatchItem]:
    """Run `job` for every (input, output name) on `pool`; items come back in input order, `events.on_end` is
    called as each input ends.

    An output another job is working on is left to it and revisited at the end: once that job lets go, it is
    taken as done if complete, or computed here if the other job died before finishing. So concurrent jobs on
    one folder never compute a video twice and every input ends with an output or an error.
    """
    batch = _Batch(inputs, job, overwrite, events)
    if job.out_dir is not None:
        job.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        pool.run(batch.tasks(range(len(inputs)), False), job.compute, batch, batch.pending())
        if batch.busy:
            later, batch.busy = batch.busy, []
            pool.run(batch.tasks(later, True), job.compute, batch, len(later))
    finally:
        batch.release()
    return [item for item in batch.items if item is not None]


@dataclass
class _Held:
    """An input being computed: its claim, start time and (once its first chunk or result comes) its writer."""

    stack: ExitStack
    started: float
    writer: Writer | None = None
    error: str | None = None
    """A write failure (disk full, ...): the input fails with it; its later chunks are dropped."""


@dataclass
class _Batch:
    """The state of one run_batch call; also the Sink its pool reports to."""

    inputs: Sequence[tuple[Path, str]]
    job: Job
    overwrite: bool
    events: BatchEvents
    items: list[BatchItem | None] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    held: dict[int, _Held] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = [None] * len(self.inputs)

    def pending(self) -> int:
        return sum(1 for _, name in self.inputs if self.overwrite or not self.job.is_done(name))

    def tasks(self, indices: Iterable[int], wait: bool) -> Iterator[Task]:
        """The inputs to compute, claimed one by one as the pool pulls them; the others end here."""
        for index in indices:
            path, name = self.inputs[index]
            started = time.perf_counter()
            stack = ExitStack()
            if self.job.out_dir is not None and not stack.enter_context(claim(self.job.out_dir, name, wait)):
                stack.close()
                self.busy.append(index)
                self.items[index] = BatchItem(path, name, "busy", message=BUSY_MESSAGE)
                continue
            item = self._without_compute(path, name, wait)
            if item is not None:
                stack.close()
                item.seconds = time.perf_counter() - started
                self._end(index, item)
                continue
            self.held[index] = _Held(stack, started)
            if self.events.on_start:
                self.events.on_start(path, name)
            yield Task(index, str(path), os.path.abspath(path))

    def _without_compute(self, path: Path, name: str, wait: bool) -> BatchItem | None:
        """The item of an input that needs no compute (finished earlier, or answered by the job), after removing
        the leftovers of a killed run on an output about to be redone."""
        if self.job.out_dir is not None:
            if (wait or not self.overwrite) and self.job.is_done(name):
                return BatchItem(path, name, "skipped",
                                 message="extracted by another job" if wait else "already extracted")
            for final in self.job.outputs(name):
                remove_partials(final.parent, final.name)
        return self.job.answer(path, name)

    def _end(self, index: int, item: BatchItem) -> None:
        self.items[index] = item
        if self.events.on_end:
            self.events.on_end(item)

    # -- Sink ---------------------------------------------------------------------------------------------

    def _writer(self, key: int, held: _Held) -> Writer:
        """The input's writer, opened on its first chunk or its result (a video that fails to open leaves
        nothing)."""
        if held.writer is None:
            held.writer = self.job.writer(*self.inputs[key])
        return held.writer

    def chunk(self, key: int, data: Any) -> None:
        held = self.held[key]
        if held.error is not None:
            return
        try:
            self._writer(key, held).add(data)
        except Co2Error as exc:  # the writer removed its partial output
            held.writer, held.error = None, str(exc)

    def void(self, key: int) -> None:
        held = self.held[key]
        if held.writer is not None:
            held.writer.abort()
        held.writer, held.error = None, None

    def progress(self, key: int, frames_done: int, frames_estimate: int | None) -> None:
        if self.events.on_progress:
            self.events.on_progress(frames_done, frames_estimate)

    def result(self, key: int, message: Computed | ComputeFailed) -> None:
        held = self.held.pop(key)
        with held.stack:
            item = self._finish(key, held, message)
        item.seconds = time.perf_counter() - held.started
        self._end(key, item)

    def _finish(self, key: int, held: _Held, message: Computed | ComputeFailed) -> BatchItem:
        path, name = self.inputs[key]
        if held.error is not None or isinstance(message, ComputeFailed):
            if held.writer is not None:
                held.writer.abort()
            failure = held.error or message.message  # type: ignore[union-attr]
            return BatchItem(path, name, "failed", message=failure)
        try:
            return self._writer(key, held).finish(message)  # a video of no chunks still gets its (empty) output
        except Co2Error as exc:
            return BatchItem(path, name, "failed", message=str(exc))

    def release(self) -> None:
        """The batch stopped (done, an interrupt, a bug): no half output stays, every claim is let go."""
        for held in self.held.values():
            if held.writer is not None:
                held.writer.abort()
            held.stack.close()
        self.held.clear()
