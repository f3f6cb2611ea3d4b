"""A self-contained HTML review page for localization results: videos, segment timelines, class activation curves.

`render_review_page` is pure (no file or network I/O, stdlib only) and returns one HTML document that works from
file:// with no external scripts, styles or fonts. Per video: a header, a `<video>` player when a source is given,
one timeline lane per label with clickable segments (a click seeks the player to the segment's start and plays),
a playhead that follows the player, and the per-snippet curves as inline SVG polylines with a legend.

Everything user-controlled is escaped: text and attributes with `html.escape`, the data for the script as JSON in a
`<script type="application/json">` with `<`, `>` and `&` written as \\u003c etc. A Content-Security-Policy allows only
the page's own script (by hash), inline styles and media, so nothing can load from the network or run unasked.

Stable hooks for tests and tooling: `section.video[data-video][data-index]` per video (id `video-<i>`), one
`.lane[data-label]` per label, each segment `button.seg[data-video][data-label][data-start][data-end][data-score]`
(data-start/end/score are Python float reprs), `.playhead`, `.time-readout`, `svg.curves polyline.curve[data-class]`
and `.legend-item[data-class]`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#8c564b")
MAX_TICKS = 10
SUB_ROW_PX = 26  # height of one row of segments inside a lane (overlapping segments of one label stack)
CURVES_PX = 120
CURVE_VIEW_W = 1000.0  # SVG user units across the timeline (stretched to the width with preserveAspectRatio=none)


@dataclass(frozen=True)
class ReviewSegment:
    label: str
    score: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class ReviewVideo:
    name: str  # unique display name
    video_src: str | None  # URL relative to the page (see `video_url`), None for feature-only inputs
    duration_s: float  # timeline length in seconds (extended to the last segment end if shorter)
    segments: Sequence[ReviewSegment]
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)  # class name -> per-snippet values
    snippet_seconds: float = 0.64
    offset_s: float = 0.0  # time of snippet 0
    model: str = ""  # which model produced it


def video_url(video: str | os.PathLike, page_dir: str | os.PathLike) -> str:
    """The URL of `video` relative to a page written into `page_dir`, percent-encoded ('#', '?', spaces, non-ASCII).

    Pure path arithmetic (only the current directory is consulted, for relative inputs). Falls back to an absolute
    file:// URL when no relative path exists (different Windows drives).
    """
    target, base = os.path.abspath(video), os.path.abspath(page_dir)
    try:
        rel = os.path.relpath(target, base)
    except ValueError:
        return PurePath(target).as_uri()
    return urllib.parse.quote(PurePath(rel).as_posix())


def format_clock(seconds: float) -> str:
    """mm:ss.ss (minutes keep counting past 59); negative times get a leading '-'."""
    centis = round(abs(seconds) * 100)
    sign = "-" if seconds < 0 and centis else ""
    minutes, rest = divmod(centis, 6000)
    return f"{sign}{minutes:02d}:{rest / 100:05.2f}"


def render_review_page(videos: Sequence[ReviewVideo], title: str = "co2cli review") -> str:
    """One self-contained HTML document reviewing `videos` (see the module docstring for its structure)."""
    prepared = [_prepare(i, v) for i, v in enumerate(videos)]
    data = {"videos": [p["json"] for p in prepared]}
    total = sum(len(v.segments) for v in videos)
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "media-src * file: blob: data:; img-src data:; base-uri 'none'; form-action 'none'")
    nav = ""
    if len(videos) > 1:
        items = "".join(f'<li><a href="#video-{p["index"]}">{_text(p["video"].name)}</a> '
                        f'<span class="muted">{len(p["video"].segments)}</span></li>' for p in prepared)
        nav = f'<nav class="toc"><ol>{items}</ol></nav>'
    sections = "\n".join(_section(p) for p in prepared) or '<p class="empty">No videos.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_attr(csp)}">
<meta name="generator" content="co2cli">
<title>{_text(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header class="page-header">
<h1>{_text(title)}</h1>
<p class="muted">{len(videos)} video{"s" if len(videos) != 1 else ""} · {total} segment{"s" if total != 1 else ""}
 · click a segment to play from its start, or click the timeline to seek</p>
{nav}
</header>
<main>
{sections}
</main>
<script type="application/json" id="co2-review-data">{_json_for_script(data)}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


# --- preparation ------------------------------------------------------------------------------------------------

def _prepare(index: int, video: ReviewVideo) -> dict:
    step = float(video.snippet_seconds)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"{video.name}: snippet_seconds must be a positive number, got {video.snippet_seconds!r}")
    offset = float(video.offset_s)
    if not math.isfinite(offset):
        raise ValueError(f"{video.name}: offset_s must be finite, got {video.offset_s!r}")
    for seg in video.segments:
        if not all(math.isfinite(float(x)) for x in (seg.score, seg.start_s, seg.end_s)):
            raise ValueError(f"{video.name}: segment {seg!r} has a non-finite score or time")
    duration = float(video.duration_s)
    ends = [float(s.end_s) for s in video.segments]
    curve_end = offset + max((len(c) for c in video.curves.values()), default=0) * step
    if not (math.isfinite(duration) and duration > 0):
        duration = max(ends + [curve_end, 0.0]) or 1.0
    timeline = max([duration] + ends)

    labels = _label_order(video.segments)
    names = labels + [c for c in video.curves if c not in labels]
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    payload = {"name": video.name, "video_src": video.video_src, "duration_s": duration, "timeline_s": timeline,
               "segments": [{"label": s.label, "score": float(s.score), "start_s": float(s.start_s),
                             "end_s": float(s.end_s)} for s in video.segments]}
    return {"index": index, "video": video, "duration": duration, "timeline": timeline, "labels": labels,
            "colors": colors, "json": payload}


def _label_order(segments: Sequence[ReviewSegment]) -> list[str]:
    """Labels by their best score, highest first (ties by name), so the most confident lane is on top."""
    best: dict[str, float] = {}
    for s in segments:
        best[s.label] = max(best.get(s.label, -math.inf), float(s.score))
    return sorted(best, key=lambda label: (-best[label], label))


def _pack(indexed: list[tuple[int, ReviewSegment]]) -> list[list[tuple[int, ReviewSegment]]]:
    """Rows of non-overlapping segments, best score first into the first row that has room (first fit)."""
    rows: list[list[tuple[int, ReviewSegment]]] = []
    for item in sorted(indexed, key=lambda t: (-float(t[1].score), float(t[1].start_s))):
        seg = item[1]
        for row in rows:
            if all(seg.end_s <= other.start_s or seg.start_s >= other.end_s for _, other in row):
                row.append(item)
                break
        else:
            rows.append([item])
    return rows


def _ticks(length: float) -> list[float]:
    candidates = sorted({k * 10.0 ** e for e in range(-2, 7) for k in (1, 2, 5)} | {15.0, 30.0, 120.0, 300.0, 900.0})
    step = next((c for c in candidates if length / c <= MAX_TICKS), candidates[-1])
    return [i * step for i in range(int(length / step + 1e-9) + 1)]


# --- HTML pieces ------------------------------------------------------------------------------------------------

def _section(p: dict) -> str:
    video: ReviewVideo = p["video"]
    i, length = p["index"], p["timeline"]
    n = len(video.segments)
    model = f'<span class="model">model <b>{_text(video.model)}</b></span>' if video.model else ""
    meta = (f'{model}<span>duration <b>{format_clock(p["duration"])}</b> ({p["duration"]:.2f} s)</span>'
            f'<span><b>{n}</b> segment{"s" if n != 1 else ""}</span>')
    if video.video_src is not None:
        where = urllib.parse.unquote(video.video_src)
        player = (f'<video id="player-{i}" class="player" controls preload="metadata" '
                  f'src="{_attr(video.video_src)}"></video>'
                  f'<p class="video-error" id="video-error-{i}" role="alert" hidden>The video could not be loaded '
                  f'from <code>{_text(where)}</code> (moved, renamed or deleted?). The timeline and curves below '
                  f'still work; regenerate the page next to the video to play it.</p>')
    else:
        player = '<div class="no-video">features only: no video to play (the timeline cursor still moves)</div>'

    def pct(t: float) -> float:
        return min(max(t / length, 0.0), 1.0) * 100.0

    ticks = _ticks(length)
    axis = "".join(f'<span class="tick" style="left:{pct(t):.4f}%">{_tick_label(t)}</span>' for t in ticks)
    grid = "".join(f'<i class="gridline" style="left:{pct(t):.4f}%"></i>' for t in ticks[1:])
    label_cells = ['<div class="cell axis-cell">time (s)</div>']
    track_rows = [f'<div class="axis">{axis}</div>']
    by_label: dict[str, list[tuple[int, ReviewSegment]]] = {}
    for j, seg in enumerate(video.segments):
        by_label.setdefault(seg.label, []).append((j, seg))
    for label in p["labels"]:
        rows = _pack(by_label[label])
        height = len(rows) * SUB_ROW_PX
        sizes = f"height:{height}px;--narrow-h:{_narrow_label_px(label)}px"
        color = p["colors"][label]
        label_cells.append(f'<div class="cell lane-label" style="{sizes}" title="{_attr(label)}">'
                           f'<i class="swatch" style="background:{color}"></i>{_text(label)}</div>')
        segs = []
        for r, row in enumerate(rows):
            for j, seg in sorted(row, key=lambda t: t[1].start_s):
                left, right = pct(seg.start_s), pct(seg.end_s)
                tip = (f"{seg.label} · score {seg.score:.3f}\n{format_clock(seg.start_s)}–{format_clock(seg.end_s)}"
                       f" ({seg.end_s - seg.start_s:.2f} s)")
                segs.append(
                    f'<button type="button" class="seg" id="seg-{i}-{j}" data-index="{j}" '
                    f'data-video="{_attr(video.name)}" data-label="{_attr(seg.label)}" '
                    f'data-start="{float(seg.start_s)!r}" data-end="{float(seg.end_s)!r}" '
                    f'data-score="{float(seg.score)!r}" title="{_attr(tip)}" '
                    f'style="left:{left:.4f}%;width:max({right - left:.4f}%,3px);top:{r * SUB_ROW_PX + 2}px;'
                    f'background:{color};color:{_ink(color)}">'
                    f'<span class="seg-label">{_text(seg.label)}</span> <span class="seg-score">{seg.score:.2f}</span>'
                    f'</button>')
        track_rows.append(f'<div class="lane" data-label="{_attr(label)}" style="{sizes}">'
                          f'{"".join(segs)}</div>')
    if not p["labels"]:
        label_cells.append('<div class="cell lane-label muted">no segments</div>')
        track_rows.append('<div class="lane empty-lane"></div>')
    legend = ""
    if video.curves:
        svg, lo, hi = _curves_svg(video, p["colors"], length)
        label_cells.append(f'<div class="cell curves-cell"><span>{_num(hi)}</span><span>curves</span>'
                           f'<span>{_num(lo)}</span></div>')
        track_rows.append(svg)
        legend = '<div class="legend">' + "".join(
            f'<button type="button" class="legend-item" data-class="{_attr(name)}" aria-pressed="true" '
            f'title="show/hide this curve"><i class="swatch" style="background:{p["colors"][name]}"></i>'
            f'{_text(name)}</button>' for name in video.curves) + "</div>"
    return f"""<section class="video" id="video-{i}" data-index="{i}" data-video="{_attr(video.name)}">
<div class="video-header"><h2>{_text(video.name)}</h2><div class="meta">{meta}</div></div>
<div class="stage">{player}<div class="readout">at <span class="time-readout" id="time-{i}">00:00.00</span></div></div>
<div class="timeline">
<div class="labels">{"".join(label_cells)}</div>
<div class="tracks" id="tracks-{i}">{grid}{"".join(track_rows)}<div class="playhead" id="playhead-{i}"></div></div>
</div>
{legend}
</section>"""


def _curves_svg(video: ReviewVideo, colors: Mapping[str, str], length: float) -> tuple[str, float, float]:
    finite = [float(v) for values in video.curves.values() for v in values if math.isfinite(float(v))]
    lo = min([0.0] + finite)
    hi = max(finite, default=1.0)
    if hi <= lo:
        hi = lo + 1.0
    height = float(CURVES_PX)
    pad = 4.0

    def y(v: float) -> float:
        return pad + (hi - v) / (hi - lo) * (height - 2 * pad)

    lines = []
    for name, values in video.curves.items():
        runs: list[list[str]] = [[]]
        for k, v in enumerate(values):
            v = float(v)
            if not math.isfinite(v):  # a gap: start a new polyline
                runs.append([])
                continue
            t = video.offset_s + (k + 0.5) * video.snippet_seconds
            runs[-1].append(f"{t / length * CURVE_VIEW_W:.2f},{y(v):.2f}")
        for run in runs:
            if run:
                lines.append(f'<polyline class="curve" data-class="{_attr(name)}" points="{" ".join(run)}" '
                             f'stroke="{colors[name]}"><title>{_text(name)}</title></polyline>')
    grid = "".join(f'<line class="grid" x1="0" x2="{CURVE_VIEW_W:g}" y1="{y(v):.2f}" y2="{y(v):.2f}"/>'
                   for v in (lo, (lo + hi) / 2, hi))
    svg = (f'<svg class="curves" viewBox="0 0 {CURVE_VIEW_W:g} {height:g}" preserveAspectRatio="none" '
           f'height="{CURVES_PX}" role="img" aria-label="class activation curves">{grid}{"".join(lines)}</svg>')
    return svg, lo, hi


NARROW_LABEL_CHARS = 11  # characters per line of a lane label on a narrow screen (11 px font, 96 px column)


def _narrow_label_px(label: str) -> int:
    """Lane height that shows `label` whole when it wraps on a narrow screen (13 px per line, room for 2 lines
    more than a conservative estimate, since glyph widths vary)."""
    lines = -(-len(label) // NARROW_LABEL_CHARS)
    return SUB_ROW_PX if lines <= 1 else 13 * (lines + 1) + 4


def _tick_label(t: float) -> str:
    return f"{round(t, 2):g}"


def _num(v: float) -> str:
    return f"{v:.3g}"


def _ink(color: str) -> str:
    """Dark or white text, whichever reads better on `color` (#rrggbb)."""
    r, g, b = (int(color[k:k + 2], 16) / 255 for k in (1, 3, 5))
    return "#1d1d1f" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55 else "#ffffff"


def _text(s: object) -> str:
    return html.escape(str(s), quote=False)


def _attr(s: object) -> str:
    return html.escape(str(s), quote=True)


def _json_for_script(data: object) -> str:
    """JSON that cannot end its <script> element or open a comment: <, >, & and the JS line separators escaped."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


_STYLE = """
:root { --ink:#1d1d1f; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#ffffff; --accent:#d62728;
  --label-w:170px; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif; }
.page-header, main { max-width:1180px; margin:0 auto; padding:0 24px; }
.page-header { padding-top:22px; padding-bottom:6px; }
h1 { font-size:22px; margin:0 0 2px; font-weight:650; }
h2 { font-size:17px; margin:0; font-weight:620; overflow-wrap:anywhere; }
.muted { color:var(--muted); }
.toc ol { display:flex; flex-wrap:wrap; gap:2px 18px; margin:6px 0 0; padding:0; list-style:none; }
.toc a { color:#2457a6; text-decoration:none; } .toc a:hover { text-decoration:underline; }
.video { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 20px 14px;
  margin:16px 0 24px; box-shadow:0 1px 2px rgba(0,0,0,.04); }
.video-header { display:flex; flex-wrap:wrap; align-items:baseline; gap:6px 18px; margin-bottom:10px; }
.meta { display:flex; flex-wrap:wrap; gap:4px 16px; color:var(--muted); }
.meta b { color:var(--ink); font-weight:600; }
.stage { display:flex; align-items:flex-end; gap:14px; margin-bottom:12px; }
.player { display:block; width:min(640px,100%); max-height:360px; background:#000; border-radius:6px; }
.no-video { padding:10px 14px; border:1px dashed var(--line); border-radius:6px; color:var(--muted); }
.readout { color:var(--muted); font-variant-numeric:tabular-nums; }
.time-readout { color:var(--ink); font-weight:600; }
.timeline { display:flex; align-items:flex-start; }
.labels { width:var(--label-w); flex:none; padding-right:10px; }
.cell { display:flex; align-items:center; gap:6px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.axis-cell { height:22px; color:var(--muted); font-size:12px; }
.lane-label { min-height:26px; font-weight:550; align-items:flex-start; padding-top:5px; display:block; }
.lane-label .swatch { margin-right:6px; vertical-align:-1px; }
.curves-cell { height:120px; flex-direction:column; justify-content:space-between; align-items:flex-end;
  color:var(--muted); font-size:11px; font-variant-numeric:tabular-nums; }
.curves-cell span:nth-child(2) { font-size:12px; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; flex:none; }
.tracks { position:relative; flex:1; min-width:0; border-left:1px solid var(--line); cursor:crosshair; }
.axis { position:relative; height:22px; border-bottom:1px solid #cfd4dc; }
.tick { position:absolute; bottom:3px; transform:translateX(-50%); font-size:11px; color:var(--muted);
  font-variant-numeric:tabular-nums; }
.tick::after { content:""; position:absolute; left:50%; bottom:-4px; height:4px; border-left:1px solid #cfd4dc; }
.lane { position:relative; min-height:26px; border-bottom:1px solid var(--line); }
.gridline { position:absolute; top:22px; bottom:0; width:0; border-left:1px solid #f0f1f4; pointer-events:none; }
.seg { position:absolute; height:22px; margin:0; padding:0 6px; border:0; border-radius:4px; font:inherit;
  font-size:12px; line-height:22px; text-align:left; white-space:nowrap; overflow:hidden; text-overflow:ellipsis;
  cursor:pointer; box-shadow:inset 0 0 0 1px rgba(0,0,0,.12); opacity:.92; }
.seg:hover, .seg:focus-visible { opacity:1; box-shadow:inset 0 0 0 2px rgba(0,0,0,.45); outline:none; z-index:2; }
.seg.active { opacity:1; box-shadow:inset 0 0 0 2px var(--ink); z-index:1; }
.seg-score { opacity:.8; font-variant-numeric:tabular-nums; }
.curves { display:block; width:100%; height:120px; overflow:hidden; border-bottom:1px solid var(--line); }
.curves .grid { stroke:#eef0f3; stroke-width:1; vector-effect:non-scaling-stroke; }
.curve { fill:none; stroke-width:1.8; stroke-linejoin:round; vector-effect:non-scaling-stroke; }
.curve.hidden { display:none; }
.playhead { position:absolute; top:0; bottom:0; left:0; width:0; border-left:2px solid var(--accent);
  pointer-events:none; z-index:3; }
.playhead::before { content:""; position:absolute; top:-1px; left:-6px; border:5px solid transparent;
  border-top:7px solid var(--accent); }
.legend { display:flex; flex-wrap:wrap; gap:4px 8px; margin:8px 0 0 var(--label-w); }
.legend-item { display:inline-flex; align-items:center; gap:6px; font:inherit; font-size:12px; padding:2px 8px;
  border:1px solid var(--line); border-radius:999px; background:#fff; cursor:pointer; color:var(--ink); }
.legend-item[aria-pressed="false"] { opacity:.45; text-decoration:line-through; }
.empty { color:var(--muted); }
.video-error { margin:0; padding:10px 14px; border:1px solid #f3b4b4; border-radius:6px; background:#fff5f5;
  color:#8a1c1c; max-width:640px; overflow-wrap:anywhere; }
.stage { flex-wrap:wrap; }
.readout { flex:none; white-space:nowrap; }
@media (max-width: 600px) {
  :root { --label-w:96px; }
  .page-header, main { padding-left:8px; padding-right:8px; }
  .video { padding:10px 8px; }
  .lane-label { white-space:normal; overflow-wrap:anywhere; font-size:11px; line-height:13px; padding-top:2px; }
  .lane-label, .lane { min-height:var(--narrow-h, 26px); }
  .legend { margin-left:0; }
}
"""

_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("co2-review-data").textContent);
  function clock(t) {
    var c = Math.round(Math.abs(t) * 100), sign = t < 0 && c ? "-" : "", m = Math.floor(c / 6000), s = (c % 6000) / 100;
    return sign + (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + s.toFixed(2);
  }
  var players = [];
  Array.prototype.forEach.call(document.querySelectorAll("section.video"), function (section) {
    var info = data.videos[Number(section.getAttribute("data-index"))];
    var player = section.querySelector("video");
    var tracks = section.querySelector(".tracks");
    var playhead = section.querySelector(".playhead");
    var readout = section.querySelector(".time-readout");
    var segs = Array.prototype.slice.call(section.querySelectorAll(".seg"));
    var cursor = 0, pending = null, waiting = false;
    if (player) players.push(player);

    function now() { return pending !== null ? pending : (player ? player.currentTime : cursor); }
    function draw() {
      var t = now(), f = Math.min(Math.max(t / info.timeline_s, 0), 1);
      playhead.style.left = (f * 100) + "%";
      readout.textContent = clock(t);
      segs.forEach(function (el) {
        var s = info.segments[Number(el.getAttribute("data-index"))];
        el.classList.toggle("active", t >= s.start_s && t < s.end_s);
      });
    }
    function applyPending() {
      if (pending === null) return;
      var t = pending;
      if (isFinite(player.duration) && player.duration > 0) t = Math.min(t, player.duration);
      try { player.currentTime = Math.max(t, 0); } catch (e) { return; }  // retried at loadedmetadata
      pending = null;
      draw();
    }
    // Seek to t (seconds) and optionally play; works before the metadata has loaded (the seek then waits for it).
    function seek(t, play) {
      if (!player) { cursor = t; draw(); return; }
      pending = t;
      if (player.readyState >= 1) {
        applyPending();
      } else {
        if (!waiting) {
          waiting = true;
          player.addEventListener("loadedmetadata", function () { waiting = false; applyPending(); }, {once: true});
        }
        // Make sure metadata is on its way: preload="none" or a stalled/empty element would otherwise wait forever.
        if (player.preload === "none") player.preload = "metadata";
        if (player.networkState !== 2 && !player.error) player.load();  // 2 = NETWORK_LOADING: already fetching
        draw();
      }
      if (play) {
        var p = player.play();
        if (p && p.catch) p.catch(function () { /* autoplay refused: the seek still happened */ });
      }
    }
    segs.forEach(function (el) {
      function go(ev) {
        ev.stopPropagation();
        seek(info.segments[Number(el.getAttribute("data-index"))].start_s, true);
      }
      el.addEventListener("click", go);
    });
    tracks.addEventListener("click", function (ev) {
      var box = tracks.getBoundingClientRect();
      if (box.width > 0) seek((ev.clientX - box.left) / box.width * info.timeline_s, false);
    });
    Array.prototype.forEach.call(section.querySelectorAll(".legend-item"), function (item) {
      item.addEventListener("click", function () {
        var on = item.getAttribute("aria-pressed") !== "true";
        item.setAttribute("aria-pressed", on ? "true" : "false");
        var name = item.getAttribute("data-class");
        Array.prototype.forEach.call(section.querySelectorAll("polyline.curve"), function (line) {
          if (line.getAttribute("data-class") === name) line.classList.toggle("hidden", !on);
        });
      });
    });
    if (player) {
      var failed = section.querySelector(".video-error");
      function showError() { if (failed) failed.hidden = false; }
      player.addEventListener("error", showError);
      if (player.error) showError();  // failed before this script ran
      var frame = 0;
      function loop() { draw(); frame = player.paused ? 0 : requestAnimationFrame(loop); }
      ["timeupdate", "seeking", "seeked", "loadedmetadata", "pause", "ended"].forEach(function (name) {
        player.addEventListener(name, draw);
      });
      player.addEventListener("play", function () {
        players.forEach(function (other) { if (other !== player && !other.paused) other.pause(); });
        if (!frame) frame = requestAnimationFrame(loop);
      });
    }
    draw();
  });
})();
"""
