"""Output formats: segments as a Rich table, ActivityNet JSON, CSV, SRT/VTT subtitles, an HTML review page and a
PNG timeline; the evaluation table.

`FORMATS` is the registry of result formats (one class per format: its name, file extensions, default view and
render); `all` is every per-input format of it plus the review page. Formatting only: the CLI decides where the
text goes, and files are written with `fsio` (atomic).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from co2cli.fsio import atomic_path

if TYPE_CHECKING:
    import numpy as np

    from co2cli.evaluate import DetectionResult
    from co2cli.localize import Segment



CSV_COLUMNS = ("video-id", "start_s", "end_s", "label", "score", "duration_s", "model", "co2cli_version")
"""Seconds; label = class name; the last three repeat per row so any row is self-describing."""
SCORE_LEGEND = ("score = outer-inner contrast of the class activation (mean inside the segment minus mean around "
                "it) + 0.2 x the class's video-level score: higher is more confident; not a probability, can "
                "exceed 1")
ACTIVITYNET_VERSION = "VERSION 1.3"
"""The `version` key ActivityNet's evaluator expects at the top of a results file."""


@dataclass(frozen=True)
class RunInfo:
    """Who produced a set of results, recorded in JSON and CSV outputs."""

    model: str
    weights_sha256: Mapping[str, str | None]
    co2cli_version: str
    durations_s: Mapping[str, float | None]
    """Video name -> duration in seconds (None when unknown)."""


def merge_segments(segments: Sequence[Segment], top_k: int | None = None,
                   only: Sequence[str] | None = None) -> list[Segment]:
    """The view a person wants: per class, segments that overlap or touch are merged into one (start = the
    earliest start, end = the latest end, score = the best score of the merged ones); then `only` keeps the
    named classes (case-insensitive), `top_k` keeps the k best-scoring, and the result is sorted by start time
    (ties: higher score first, then label)."""
    wanted = {name.casefold() for name in only} if only else None
    by_class: dict[str, list[Segment]] = {}
    for seg in segments:
        if wanted is None or seg.label_name.casefold() in wanted:
            by_class.setdefault(seg.label_name, []).append(seg)
    merged: list[Segment] = []
    for group in by_class.values():
        group = sorted(group, key=lambda s: (s.start_s, s.end_s))
        current = group[0]
        for seg in group[1:]:
            if seg.start_s <= current.end_s:
                current = replace(current, end_s=max(current.end_s, seg.end_s), score=max(current.score, seg.score))
            else:
                merged.append(current)
                current = seg
        merged.append(current)
    if top_k is not None:
        merged = sorted(merged, key=lambda s: -s.score)[:max(top_k, 0)]
    return sorted(merged, key=lambda s: (s.start_s, -s.score, s.label_name))


def format_timestamp(seconds: float) -> str:
    """hh:mm:ss.ss (hundredths, rounded)."""
    centis = int(round(seconds * 100))
    hours, rest = divmod(centis, 360_000)
    minutes, rest = divmod(rest, 6_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def _cue_time(seconds: float, separator: str) -> str:
    """hh:mm:ss<sep>mmm (milliseconds, rounded; negative times clamp to 0)."""
    millis = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def _cues(segments: Sequence[Segment], separator: str) -> list[tuple[str, str, str]]:
    """(start, end, text) per segment in time order; text 'label (0.88)'; every cue lasts at least 1 ms."""
    cues = []
    for seg in sorted(segments, key=lambda s: (s.start_s, s.label_name)):
        start = _cue_time(seg.start_s, separator)
        end = _cue_time(max(seg.end_s, seg.start_s + 0.001), separator)
        cues.append((start, end, f"{seg.label_name} ({seg.score:.2f})"))
    return cues


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip subtitles: numbered cues 'hh:mm:ss,mmm --> hh:mm:ss,mmm' then the text and a blank line."""
    return "".join(f"{i}\n{start} --> {end}\n{text}\n\n"
                   for i, (start, end, text) in enumerate(_cues(segments, ","), start=1))


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT subtitles ('WEBVTT' header, 'hh:mm:ss.mmm --> hh:mm:ss.mmm' cues)."""
    return "WEBVTT\n\n" + "".join(f"{start} --> {end}\n{text}\n\n" for start, end, text in _cues(segments, "."))


def activitynet_json(results: Mapping[str, Sequence[Segment]], run: RunInfo | None = None) -> dict:
    """ActivityNet's results format, readable by its official evaluator unchanged:
    {"version", "results": {video: [{"label", "score", "segment": [start_s, end_s]}]}, "external_data"},
    plus a "co2cli" object saying which model, weights and version produced it and each video's duration."""
    out: dict = {"version": ACTIVITYNET_VERSION,
                 "results": {video: [{"label": s.label_name, "score": s.score, "segment": [s.start_s, s.end_s]}
                                     for s in segs] for video, segs in results.items()},
                 "external_data": {"used": True, "details": "I3D features pretrained on Kinetics-400"}}
    if run is not None:
        out["co2cli"] = {"model": run.model, "weights_sha256": dict(run.weights_sha256),
                         "version": run.co2cli_version,
                         "videos": {video: {"duration_s": run.durations_s.get(video)} for video in results}}
    return out


def to_json_text(results: Mapping[str, Sequence[Segment]], run: RunInfo | None = None) -> str:
    return json.dumps(activitynet_json(results, run), indent=1) + "\n"


CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters that make a spreadsheet read a cell as a formula (OWASP CSV injection)."""


def csv_text_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading formula character gets a single quote in front (OWASP).
    A cell that already starts with a quote gets one too, so `csv_text_value` restores every name exactly."""
    return "'" + text if text.startswith((*CSV_FORMULA_STARTS, "'")) else text


def csv_text_value(cell: str) -> str:
    """The text a `csv_text_cell` cell stands for (one leading quote removed)."""
    return cell[1:] if cell.startswith("'") else cell


def to_csv_text(results: Mapping[str, Sequence[Segment]], run: RunInfo | None = None) -> str:
    """Segments as CSV (CSV_COLUMNS). Text cells (video, label, model, version) are neutralised against formula
    injection (`csv_text_cell`); the numbers are plain Python float reprs a spreadsheet reads as numbers."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for video, segs in results.items():
        duration = run.durations_s.get(video) if run else None
        extra = ["" if duration is None else repr(duration), csv_text_cell(run.model if run else ""),
                 csv_text_cell(run.co2cli_version if run else "")]
        for s in segs:
            writer.writerow([csv_text_cell(video), repr(s.start_s), repr(s.end_s), csv_text_cell(s.label_name),
                             repr(s.score), *extra])
    return buf.getvalue()


def to_table(results: Mapping[str, Sequence[Segment]], title: str | None = None,
             caption: str | None = SCORE_LEGEND) -> Table:
    """One row per segment, videos in input order, segments as given (merge them first for people)."""
    table = Table(title=title, caption=caption, caption_justify="left")
    for name, justify in (("video", "left"), ("start", "right"), ("end", "right"), ("action", "left"),
                          ("score", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "action")  # type: ignore[arg-type]
    for video, segs in results.items():
        if not segs:
            table.add_row(video, "-", "-", "(no segments)", "-")
        for s in segs:
            table.add_row(video, format_timestamp(s.start_s), format_timestamp(s.end_s), s.label_name,
                          f"{s.score:.2f}")
    return table


def plot_timeline(path: str | Path, title: str, snippet_seconds: float, curves: Mapping[str, np.ndarray],
                  segments: Sequence[Segment], attention: np.ndarray | None = None,
                  attention_label: str = "attention", offset_s: float = 0.0) -> None:
    """One PNG, time in seconds on the x axis: attention (top), the top classes' activation (middle) and the
    segments (bottom): one lane per class, each segment its own bar labelled with its score (pass merged
    segments for a readable plot). Curves are per snippet, drawn at snippet centres."""
    # The object-oriented API with an Agg canvas: no pyplot state and no process-wide backend switch.
    import numpy as np
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    snippet_seconds = float(snippet_seconds)
    n = len(next(iter(curves.values()))) if curves else (len(attention) if attention is not None else 0)
    times = offset_s + (np.arange(n) + 0.5) * snippet_seconds
    lanes = list(dict.fromkeys([*curves, *(s.label_name for s in segments)]))
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {name: colours[i % len(colours)] for i, name in enumerate(lanes)}
    panels = (["attention"] if attention is not None else []) + ["curves", "segments"]
    heights = {"attention": 1.4, "curves": 2.2, "segments": 0.6 + 0.5 * max(len(lanes), 1)}
    fig = Figure(figsize=(11, 1.2 + sum(heights[p] for p in panels)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [heights[p] for p in panels]})
    ax_of = dict(zip(panels, axes[:, 0]))
    if attention is not None:
        ax = ax_of["attention"]
        ax.plot(times, attention, color="black", lw=1.4)
        ax.set_ylabel(attention_label, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    ax = ax_of["curves"]
    for name, values in curves.items():
        ax.plot(times, values, lw=1.5, label=name, color=colour_of[name])
    ax.set_ylabel("class activation", fontsize=8)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax = ax_of["segments"]
    end_s = offset_s + max(n * snippet_seconds, max((s.end_s for s in segments), default=0.0) - offset_s, 1e-6)
    for row, name in enumerate(lanes):
        for seg in (s for s in segments if s.label_name == name):
            ax.broken_barh([(seg.start_s, seg.end_s - seg.start_s)], (row - 0.32, 0.64),
                           facecolors=colour_of[name], edgecolors="black", linewidth=0.8, alpha=0.85)
            ax.text(seg.start_s + 0.005 * (end_s - offset_s), row, f"{seg.score:.2f}", va="center", ha="left",
                    fontsize=7, color="white" if seg.end_s - seg.start_s > 0.06 * (end_s - offset_s) else "black",
                    clip_on=True)
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_ylabel("segments", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    ax.set_xlabel("time (s)")
    ax.set_xlim(offset_s, end_s)
    if not segments:
        ax.text(0.5, 0.5, "no segments", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)


def evaluation_table(result: DetectionResult, title: str) -> Table:
    """mAP (%) per tIoU threshold and the averages, as `co2 evaluate` prints it."""
    table = Table(title=title)
    table.add_column("tIoU")
    table.add_column("mAP (%)", justify="right")
    for t, m in zip(result.thresholds, result.map):
        table.add_row(f"{t:g}", f"{100 * m:.2f}")
    for name, value in result.averages().items():
        table.add_row(f"avg {name}", f"{100 * value:.2f}")
    return table


def render_text(table: Table, width: int = 100) -> str:
    """A Rich table as plain text (no colour codes), for writing to a file."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(table)
    return console.export_text()


# ---------------------------------------------------------------------------------------------------------------
# The registry of result formats


@dataclass(frozen=True)
class Rendering:
    """What a result format renders: the segments shown per video (in input order) and their context."""

    results: Mapping[str, Sequence[Segment]]
    run: RunInfo
    title: str
    page: Callable[[], str] | None = None
    """The batch's review page (HTML), made only when a format asks for it."""


class ResultFormat:
    """One output format of `co2 localize`."""

    name = ""
    extensions: tuple[str, ...] = ()
    """File endings that imply this format; the first is the one written."""
    merged = True
    """Default view: overlapping segments of a class merged (True) or the raw proposals (False, for evaluators)."""
    per_input = True
    """With --output-dir: one file per input (False: one page for the whole batch)."""

    @property
    def extension(self) -> str:
        return self.extensions[0]

    def render(self, rendering: Rendering) -> str:
        raise NotImplementedError


class TableFormat(ResultFormat):
    name, extensions = "table", (".txt",)

    def render(self, rendering: Rendering) -> str:
        # the legend is its own line under the table (a caption would be wrapped to the table's width)
        return render_text(to_table(rendering.results, title=rendering.title, caption=None), width=110) + \
            SCORE_LEGEND + "\n"


class JsonFormat(ResultFormat):
    name, extensions, merged = "json", (".json",), False

    def render(self, rendering: Rendering) -> str:
        return to_json_text(rendering.results, rendering.run)


class CsvFormat(ResultFormat):
    name, extensions, merged = "csv", (".csv",), False

    def render(self, rendering: Rendering) -> str:
        return to_csv_text(rendering.results, rendering.run)


class SrtFormat(ResultFormat):
    name, extensions = "srt", (".srt",)

    def render(self, rendering: Rendering) -> str:
        return to_srt([s for segs in rendering.results.values() for s in segs])


class VttFormat(ResultFormat):
    name, extensions = "vtt", (".vtt",)

    def render(self, rendering: Rendering) -> str:
        return to_vtt([s for segs in rendering.results.values() for s in segs])


class HtmlFormat(ResultFormat):
    name, extensions, per_input = "html", (".html", ".htm"), False

    def render(self, rendering: Rendering) -> str:
        assert rendering.page is not None, "the html format renders the batch's review page"
        return rendering.page()


FORMATS: dict[str, ResultFormat] = {f.name: f for f in (TableFormat(), JsonFormat(), CsvFormat(), SrtFormat(),
                                                        VttFormat(), HtmlFormat())}
EXTENSIONS = {ext: f.name for f in FORMATS.values() for ext in f.extensions}
"""Output file endings and the format each one implies."""
ALL = "all"
"""Every format at once: each per-input format's files and the review page (with --output-dir)."""


def formats_named(name: str) -> list[ResultFormat]:
    """The formats `name` stands for (`all`: every format of the registry)."""
    return list(FORMATS.values()) if name == ALL else [FORMATS[name]]
