"""The one time base of co2cli: frame rate, snippet length and the conversions between frames, snippets and seconds.

Every stage uses these names; no module restates 25, 16 or 0.64.

* Videos are resampled to ``FPS`` = 25 frames per second (video.py).
* One I3D snippet is ``SNIPPET_FRAMES`` = 16 consecutive frames, non-overlapping, so one feature row lasts
  ``SNIPPET_SECONDS`` = 16/25 s = 0.64 s, kept as an exact ``Fraction`` (snippet 2981 starts at 1907.84 s, not
  1907.8400000000001).
* Inside the model, the proposal generator and the evaluator, time is a **snippet index** (start inclusive, end
  exclusive). Users see **seconds** on the video's timeline: ``offset_s + snippets * snippet_seconds``.
"""

from __future__ import annotations

from fractions import Fraction

FPS = 25
"""Frames per second every video is resampled to before flow and I3D."""

SNIPPET_FRAMES = 16
"""Frames per I3D snippet (and the stride between snippets)."""

SNIPPET_SECONDS = Fraction(SNIPPET_FRAMES, FPS)
"""Seconds per snippet, exactly 16/25 = 0.64."""


def n_snippets(n_frames: int) -> int:
    """T = floor(N / 16): whole snippets in N frames at 25 fps (the remainder is dropped)."""
    return n_frames // SNIPPET_FRAMES


def snippets_to_seconds(snippets: float, snippet_seconds: Fraction = SNIPPET_SECONDS, offset_s: float = 0.0) -> float:
    """A snippet index (or boundary) in seconds: offset_s + snippets * snippet_seconds, computed exactly."""
    return offset_s + float(Fraction(snippets) * Fraction(snippet_seconds))


def seconds_to_snippets(seconds: float, snippet_seconds: Fraction = SNIPPET_SECONDS) -> float:
    """Seconds in (continuous, unrounded) snippet units, as the original's evaluator expects predictions.

    The decimal the seconds were written as is converted exactly (Fraction of its shortest repr), so a boundary
    written by `snippets_to_seconds` comes back as the same snippet: 4.48 s -> 7.0, not 7.000000000000001,
    which would flip tIoU ties at the thresholds.
    """
    return float(Fraction(repr(float(seconds))) / Fraction(snippet_seconds))


def quantize_to_snippet(seconds: float) -> int:
    """The original evaluator's ground-truth quantisation: Python round (half to even) of seconds * 25 / 16."""
    return round(seconds * FPS / SNIPPET_FRAMES)


def snippet_seconds_of(fps: float | str | Fraction = FPS, stride_frames: int = SNIPPET_FRAMES) -> Fraction:
    """Seconds per feature row for features made at `fps` with a `stride_frames` snippet stride."""
    return Fraction(stride_frames) / Fraction(str(fps))
