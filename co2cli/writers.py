"""Output formats for segments (Rich table, ActivityNet JSON, CSV) and atomic file writes."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.table import Table

from co2cli.localize import Segment

FORMATS = ("table", "json", "csv")
CSV_COLUMNS = ("video-id", "start_s", "end_s", "label", "score")  # seconds; label = class name


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds.

    A killed or failed run therefore never leaves a partial file under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".part", dir=target.parent)
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


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    """`data` to `target` via `atomic_path`, fsynced before the rename: readers see the old or the new file."""
    with atomic_path(target) as tmp:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(target: str | Path, text: str) -> None:
    write_bytes_atomic(target, text.encode())


def format_timestamp(seconds: float) -> str:
    """hh:mm:ss.ss (hundredths, rounded)."""
    centis = int(round(seconds * 100))
    hours, rest = divmod(centis, 360_000)
    minutes, rest = divmod(rest, 6_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def activitynet_json(results: Mapping[str, Sequence[Segment]], extra: Mapping | None = None) -> dict:
    """{"results": {video: [{"label", "score", "segment": [start_s, end_s]}]}} in the given order."""
    out: dict = {"results": {video: [{"label": s.label_name, "score": s.score, "segment": [s.start_s, s.end_s]}
                                     for s in segs] for video, segs in results.items()}}
    if extra:
        out.update(extra)
    return out


def to_json_text(results: Mapping[str, Sequence[Segment]], extra: Mapping | None = None) -> str:
    return json.dumps(activitynet_json(results, extra), indent=1) + "\n"


def to_csv_text(results: Mapping[str, Sequence[Segment]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for video, segs in results.items():
        for s in segs:
            writer.writerow([video, repr(s.start_s), repr(s.end_s), s.label_name, repr(s.score)])
    return buf.getvalue()


def to_table(results: Mapping[str, Sequence[Segment]], title: str | None = None) -> Table:
    table = Table(title=title)
    for name, justify in (("video", "left"), ("start", "right"), ("end", "right"), ("action", "left"),
                          ("score", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for video, segs in results.items():
        if not segs:
            table.add_row(video, "-", "-", "(no segments)", "-")
        for s in segs:
            table.add_row(video, format_timestamp(s.start_s), format_timestamp(s.end_s), s.label_name,
                          f"{s.score:.4f}")
    return table


def plot_timeline(path: str | Path, title: str, snippet_seconds: float, curves: Mapping[str, "np.ndarray"],
                  segments: Sequence[Segment], attention: "np.ndarray | None" = None,
                  attention_label: str = "attention", offset_s: float = 0.0) -> None:
    """One PNG, time in seconds on the x axis: attention (top), the top classes' activation (middle) and the
    detected segments (bottom), one lane per class, darker for higher scores, the best one outlined and shaded
    behind the activation curves. Curves are per snippet, drawn at snippet centres."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(next(iter(curves.values()))) if curves else (len(attention) if attention is not None else 0)
    times = offset_s + (np.arange(n) + 0.5) * snippet_seconds
    lanes = list(dict.fromkeys([*curves, *(s.label_name for s in segments)]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {name: colours[i % len(colours)] for i, name in enumerate(lanes)}
    panels = (["attention"] if attention is not None else []) + ["curves", "segments"]
    heights = {"attention": 1.6, "curves": 2.2, "segments": 0.5 + 0.45 * max(len(lanes), 1)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.2 + sum(heights[p] for p in panels)), sharex=True,
                             gridspec_kw={"height_ratios": [heights[p] for p in panels]}, squeeze=False)
    ax_of = dict(zip(panels, axes[:, 0]))
    best: dict[str, Segment] = {}
    for seg in segments:
        if seg.label_name not in best or seg.score > best[seg.label_name].score:
            best[seg.label_name] = seg
    if attention is not None:
        ax = ax_of["attention"]
        ax.plot(times, attention, color="black", lw=1.4)
        ax.set_ylabel(attention_label)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    ax = ax_of["curves"]
    for seg in best.values():
        ax.axvspan(seg.start_s, seg.end_s, color=colour_of[seg.label_name], alpha=0.12, lw=0)
    for name, values in curves.items():
        ax.plot(times, values, lw=1.5, label=name, color=colour_of[name])
    ax.set_ylabel("class activation")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax = ax_of["segments"]
    top = max((s.score for s in segments), default=1.0) or 1.0
    for row, name in enumerate(lanes):
        for seg in (s for s in segments if s.label_name == name):
            strength = float(np.clip(seg.score / top, 0.08, 1.0))
            ax.broken_barh([(seg.start_s, seg.end_s - seg.start_s)], (row - 0.35, 0.7),
                           facecolors=colour_of[name], alpha=0.15 + 0.5 * strength, lw=0)
        if name in best:
            b = best[name]
            ax.broken_barh([(b.start_s, b.end_s - b.start_s)], (row - 0.35, 0.7), facecolors="none",
                           edgecolors="black", lw=1.2)
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_ylabel("segments")
    ax.grid(alpha=0.3, axis="x")
    ax.set_xlabel("time (s)")
    ax.set_xlim(offset_s, offset_s + max(n * snippet_seconds, 1e-6))
    if not segments:
        ax.text(0.5, 0.5, "no segments", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
