"""Running a batch from the CLI: the runner with a progress bar, each input's output path on stdout, and the
summary (a per-file table, one error line per failure, the summary line) with the exit status, written once."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from co2cli.batch import BatchItem
from co2cli.cli.app import echo_err, stderr_console

if TYPE_CHECKING:
    from co2cli.distributed import WorkerSpec
    from co2cli.extract import FeatureExtractor
    from co2cli.runner import Job, Pool


class Reporter:
    """A progress bar over inputs (and frames of the current video) on stderr when it is a terminal."""

    def __init__(self, total: int, unit: str, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

        self.enabled = not quiet and sys.stderr.isatty()
        # The current video's speed and ETA come from its frames (rich's own ETA needs several updates).
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                                 console=stderr_console(), transient=True, disable=not self.enabled)
        self.overall = self.progress.add_task(unit, total=total, rate="")
        self.current = self.progress.add_task("", total=None, rate="", visible=False)
        self.started = time.perf_counter()
        self.video_started = self.started

    def __enter__(self) -> Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, path: Path, *_: object) -> None:
        self.video_started = time.perf_counter()
        self.progress.reset(self.current, total=None, description=path.name, visible=True, rate="")

    def frames(self, done: int, estimate: int | None) -> None:
        rate = done / max(time.perf_counter() - self.video_started, 1e-9)
        text = f"{rate:6.1f} frames/s" if done else ""
        if done and estimate and estimate > done:
            left_s = round((estimate - done) / rate)
            text += f"  ETA {left_s // 60}:{left_s % 60:02d}"
        self.progress.update(self.current, completed=done, total=max(estimate or 0, done) or None, rate=text)

    def end(self, *_: object) -> None:
        self.progress.update(self.current, visible=False)
        self.progress.advance(self.overall)

    def note(self, message: str, quiet: bool = False) -> None:
        """A stderr line printed above the live bars (a plain write would leave stale copies of them)."""
        if self.enabled:
            self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            echo_err(message, quiet)


def summary_line(verb: str, done: int, failed: int, video_seconds: float, wall_seconds: float) -> str:
    """'localized 3 videos (2.1 min of video) in 12.3 s (10.2x real time), 1 failed' (seconds of video below a
    minute: '(2.0 s of video)')."""
    parts = [f"{verb} {done} input{'s' if done != 1 else ''}"]
    if video_seconds > 0:
        parts.append(f"({video_seconds / 60:.1f} min of video)" if video_seconds >= 60 else
                     f"({video_seconds:.1f} s of video)")
    parts.append(f"in {wall_seconds:.1f} s")
    if video_seconds > 0 and wall_seconds > 0:
        parts.append(f"({video_seconds / wall_seconds:.2f}x real time)")
    text = " ".join(parts)
    return text + (f", {failed} failed" if failed else "")


def run_jobs(named: list[tuple[Path, str]], job: Job, pool: Pool, unit: str, overwrite: bool, quiet: bool,
             on_item: Callable[[BatchItem, Reporter], None] | None = None) -> tuple[list[BatchItem], float]:
    """runner.run_batch with the CLI's progress (a bar per video for the local pool: Ray shows its own):
    (batch items, wall seconds). `on_item(item, reporter)` is called as each input ends (`reporter.note` prints
    above the live bars)."""
    from co2cli.batch import BatchEvents
    from co2cli.runner import run_batch

    started = time.perf_counter()
    with pool, Reporter(len(named), unit, quiet or pool.shows_progress) as reporter:
        def on_end(item: BatchItem) -> None:
            reporter.end()
            if on_item is not None:
                on_item(item, reporter)

        items = run_batch(named, job, pool, overwrite, BatchEvents(reporter.start, reporter.frames, on_end))
    return items, time.perf_counter() - started


def open_pool(cluster: Any, local: Callable[[], FeatureExtractor], spec: Callable[[], WorkerSpec],
              state_dicts: Mapping[str, Mapping] | None = None) -> Pool:
    """The pool of the chosen executor, the one place the CLI picks one: this process (`cluster` None, an
    extractor from `local()` on first use) or Ray workers built from `spec()`."""
    if cluster is None:
        from co2cli.runner import LocalPool

        return LocalPool(local)
    from co2cli import distributed

    return distributed.RayPool(spec(), cluster, state_dicts=state_dicts)


def print_output_path(first_output: Callable[[str], Path]) -> Callable[[BatchItem, Reporter], None]:
    """An on_item callback printing the (first) output path of each input that has one (on stdout, which the
    bars on stderr do not touch)."""
    def on_item(item: BatchItem, _: Reporter) -> None:
        if item.status != "failed":
            sys.stdout.write(f"{first_output(item.name)}\n")
            sys.stdout.flush()

    return on_item


def print_batch_summary(items: Sequence[BatchItem], failures: Sequence[tuple[Path, str]], title: str) -> None:
    """One row per input: processed, skipped, failed (with why), and those refused before the batch started
    (missing, not a video, a name clash)."""
    from rich.table import Table

    summary = Table(title=title)
    for column in ("video", "status", "snippets" if "features" in title else "fields", "seconds", "note"):
        summary.add_column(column, overflow="fold")
    for item in items:
        summary.add_row(item.name, item.status, str(item.snippets or "-"), f"{item.seconds:.1f}",
                        item.message.removeprefix(f"{item.path}: "))
    for path, message in failures:
        summary.add_row(str(path), "failed", "-", "-", message.removeprefix(f"{path}: "))
    stderr_console().print(summary)


def finish_batch(command: str, verb: str, items: Sequence[BatchItem], failures: Sequence[tuple[Path, str]],
                 wall: float, quiet: bool) -> None:
    """Per-file summary, one error line per failure, the summary line, exit 1 when anything failed."""
    if not quiet:
        print_batch_summary(items, failures, command)
    for path, message in failures:
        typer.echo(f"error: {message}", err=True)
    failed = [item for item in items if item.status == "failed"]
    for item in failed:
        typer.echo(f"error: {item.message}", err=True)
    done = [item for item in items if item.status == "done"]
    skipped = len(items) - len(done) - len(failed)
    echo_err(summary_line(verb, len(done), len(failed) + len(failures), sum(item.duration_s for item in done), wall)
             + (f", {skipped} already done" if skipped else ""), quiet)
    if failed or failures:
        raise typer.Exit(1)
