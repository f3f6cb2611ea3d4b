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
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


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
