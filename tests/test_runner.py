"""runner.run_batch's rules with any pool: a tiny job (each input's lines become the output, one chunk per line)
run on the local pool and on a test pool that finishes tasks out of order and loses a worker under one of them.
Expected outputs are the inputs' own text; statuses follow from which inputs are bad, done or claimed."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from co2cli.batch import BatchEvents, BatchItem, claim
from co2cli.errors import Co2Error
from co2cli.runner import Chunk, Compute, Computed, LocalPool, Message, Sink, Task, run_batch, run_compute


def line_chunks(extractor: object, path: str, progress: object) -> Iterator[Message]:
    """The compute: one chunk per line of a text input; an input saying 'bad' is a bad input."""
    lines = Path(path).read_text().splitlines(keepends=True)
    if lines == ["bad\n"]:
        raise Co2Error(f"{path}: bad input")
    for line in lines:
        yield Chunk(line)
    yield Computed({}, frames=len(lines), duration_s=0.0)


class LinesWriter:
    def __init__(self, out_dir: Path, path: Path, name: str) -> None:
        self.path, self.name, self.final = path, name, out_dir / f"{name}.out"
        self.tmp = out_dir / f".{name}.out.part"
        self.tmp.write_text("")

    def add(self, chunk: str) -> None:
        with self.tmp.open("a") as fh:
            fh.write(chunk)

    def finish(self, result: Computed) -> BatchItem:
        self.tmp.replace(self.final)
        return BatchItem(self.path, self.name, "done", frames=result.frames)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


@dataclass
class LinesJob:
    out_dir: Path
    compute: Compute = line_chunks

    def is_done(self, name: str) -> bool:
        return (self.out_dir / f"{name}.out").is_file()

    def outputs(self, name: str) -> list[Path]:
        return [self.out_dir / f"{name}.out"]

    def answer(self, path: Path, name: str) -> BatchItem | None:
        return None

    def writer(self, path: Path, name: str) -> LinesWriter:
        return LinesWriter(self.out_dir, path, name)


class ShuffledPool:
    """A second executor, written against runner.Pool only: takes every task first, runs them last to first,
    and 'loses the worker' under the first task after one chunk (void, then runs it again)."""

    shows_progress = False

    def __enter__(self) -> ShuffledPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, tasks: Iterable[Task], compute: Compute, sink: Sink, pending: int) -> None:
        taken = list(tasks)
        for task in reversed(taken):
            first = next(run_compute(compute, None, task.path, None))  # type: ignore[arg-type]
            if task is taken[0] and isinstance(first, Chunk):
                sink.chunk(task.key, first.data)
                sink.void(task.key)  # the worker died: what it sent is void, the task runs again
            for message in run_compute(compute, None, task.path, None):  # type: ignore[arg-type]
                sink.chunk(task.key, message.data) if isinstance(message, Chunk) else sink.result(task.key, message)


def inputs(folder: Path) -> list[tuple[Path, str]]:
    texts = {"a": "one\ntwo\n", "bad": "bad\n", "c": "x\ny\nz\n"}
    folder.mkdir()
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text)
    return [(folder / f"{name}.txt", name) for name in texts]


@pytest.mark.parametrize("pool", [LocalPool(lambda: None), ShuffledPool()], ids=["local", "shuffled"])
def test_outputs_statuses_and_resume_whatever_the_pool(tmp_path: Path, pool: object) -> None:
    named, out = inputs(tmp_path / "in"), tmp_path / "out"
    ended: list[str] = []
    items = run_batch(named, LinesJob(out), pool, events=BatchEvents(on_end=lambda i: ended.append(i.name)))
    assert [(i.name, i.status, i.frames) for i in items] == [("a", "done", 2), ("bad", "failed", 0),
                                                             ("c", "done", 3)]
    assert items[1].message == f"{named[1][0]}: bad input"
    assert (out / "a.out").read_text() == "one\ntwo\n" and (out / "c.out").read_text() == "x\ny\nz\n"
    assert sorted(p.name for p in out.iterdir()) == ["a.out", "c.out"]  # no partial, no claim file left
    assert sorted(ended) == ["a", "bad", "c"]
    again = run_batch(named, LinesJob(out), pool)
    assert [(i.status, i.message) for i in again] == [("skipped", "already extracted"), ("failed",
                                                      f"{named[1][0]}: bad input"), ("skipped", "already extracted")]


def test_a_claimed_output_is_revisited_and_computed_when_its_holder_lets_go(tmp_path: Path) -> None:
    named, out = inputs(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    holder = ExitStack()
    assert holder.enter_context(claim(out, "a"))  # another job works on a
    timer = threading.Timer(0.5, holder.close)  # ... and dies without finishing it
    timer.start()
    try:
        items = run_batch(named, LinesJob(out), LocalPool(lambda: None))
    finally:
        timer.join()
    assert [(i.name, i.status) for i in items] == [("a", "done"), ("bad", "failed"), ("c", "done")]
    assert (out / "a.out").read_text() == "one\ntwo\n"


def test_an_output_finished_by_its_claim_holder_is_taken_as_done(tmp_path: Path) -> None:
    named, out = inputs(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    holder = ExitStack()
    assert holder.enter_context(claim(out, "c"))  # another job works on c ...

    def finish_and_let_go() -> None:
        (out / "c.out").write_text("theirs\n")  # ... and finishes it
        holder.close()

    timer = threading.Timer(0.5, finish_and_let_go)
    timer.start()
    try:
        items = run_batch(named, LinesJob(out), LocalPool(lambda: None))
    finally:
        timer.join()
    assert [(i.name, i.status, i.message) for i in items] == [
        ("a", "done", ""), ("bad", "failed", f"{named[1][0]}: bad input"), ("c", "skipped", "extracted by another job")]
    assert (out / "c.out").read_text() == "theirs\n"  # not computed twice
