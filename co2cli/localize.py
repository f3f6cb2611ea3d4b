"""Class activation sequences -> action segments (the original `multiple_threshold_hamnet` + Gaussian soft-NMS).

Everything inside works in snippet indices with exclusive ends (`Detection`, the one detection type, also read
by the evaluator); `Segment` converts to seconds at the boundary (timebase.py: one snippet = 16 frames / 25 fps =
0.64 s unless the features record another rate). numpy only at import; torch is imported by the CO2-Net path.
Output-affecting quirks of the original are reproduced on purpose and marked "Quirk".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from co2cli.timebase import SNIPPET_SECONDS, snippets_to_seconds

if TYPE_CHECKING:
    import torch

ATTENTION_THRESHOLDS = np.linspace(0.1, 0.9, 10)  # applied to the fused attention with a strict '>'
MIN_VIDEO_SCORE = 0.2  # classes whose video score reaches this are localized (else only the best one)
OIC_LAMBDA = 0.25  # outer window = 25 % of the proposal length on each side
OIC_GAMMA = 0.2  # weight of the video-level score in a proposal's score
SOFT_NMS_SIGMA = 0.3


@dataclass(frozen=True)
class Detection:
    """One detection in snippet units: [start, end) with an exclusive end, label = class index.

    `video` is empty while a single video's sequence is being processed, set once results are gathered.
    """

    label: int
    score: float
    start: float
    """First snippet index (inclusive)."""
    end: float
    """Snippet index after the last one (exclusive)."""
    video: str = ""

    def of_video(self, video: str) -> Detection:
        return replace(self, video=video)


@dataclass(frozen=True)
class Segment:
    """One detection in seconds on the video's timeline, ready for output."""

    video: str
    label: int
    label_name: str
    score: float
    start_s: float
    end_s: float


def runs_of_consecutive(indices: np.ndarray) -> list[np.ndarray]:
    """Split sorted snippet indices into runs of consecutive values."""
    return np.split(indices, np.where(np.diff(indices) != 1)[0] + 1)


def oic_proposals(positions: np.ndarray, class_cas: np.ndarray, class_id: int, video_score: float) -> list[Detection]:
    """Outer-inner-contrast proposals of one class from the snippets above an attention threshold.

    class_cas: (T,) float32 attention-weighted activation of this class. Score = inner mean - outer mean
    + 0.2 * video score, the outer region being 25 % of the run length on each side (truncated with int()).
    """
    n = class_cas.shape[0]
    # numpy 1.x (the original's) computes 0.2 * float32 in float64 and the final sum in float64; keep that.
    score_term = OIC_GAMMA * float(video_score)
    found = []
    for run in runs_of_consecutive(positions):
        inner = np.mean(class_cas[run])
        length = len(run)
        outer_start = max(0, int(run[0] - OIC_LAMBDA * length))
        outer_end = min(int(n - 1), int(run[-1] + OIC_LAMBDA * length))
        outer_idx = list(range(outer_start, int(run[0]))) + list(range(int(run[-1] + 1), outer_end + 1))
        # Quirk: the outer score is 0 when the run touches both ends; the mean is float32 like the original's.
        outer = np.mean(class_cas[outer_idx]) if outer_idx else np.float32(0)
        score = float(np.float32(inner - outer)) + score_term
        found.append(Detection(class_id, score, float(run[0]), float(run[-1] + 1)))
    return found


def soft_nms(proposals: Sequence[Detection], sigma: float = SOFT_NMS_SIGMA) -> list[Detection]:
    """Gaussian soft-NMS as in the original: nothing is removed, scores decay, output in selection order.

    Quirks: IoU uses the "+1" convention on already-exclusive ends (area = e - s + 1), and the selected row is
    swapped with row 0 before the rest is kept, which decides later ties (first argmax wins).
    """
    dets = np.array([[p.label, p.score, p.start, p.end] for p in proposals], dtype=np.float64)
    areas = dets[:, 3] - dets[:, 2] + 1
    dets = np.concatenate((dets, areas[:, None]), axis=1)
    kept = []
    while dets.size > 0:
        best = np.argmax(dets[:, 1], axis=0)
        dets[[0, best], :] = dets[[best, 0], :]
        kept.append(Detection(int(dets[0, 0]), float(dets[0, 1]), float(dets[0, 2]), float(dets[0, 3])))
        inter = np.maximum(np.minimum(dets[0, 3], dets[1:, 3]) - np.maximum(dets[0, 2], dets[1:, 2]) + 1, 0.0)
        iou = inter / (dets[0, -1] + dets[1:, -1] - inter)
        dets[1:, 1] *= np.exp(-(iou * iou) / sigma)
        dets = dets[1:, :]
    return kept


def select_classes(scores: np.ndarray, min_score: float = MIN_VIDEO_SCORE) -> np.ndarray:
    """Classes to localize: those with video score >= min_score, else only the argmax class."""
    chosen = np.where(scores >= min_score)[0]
    return chosen if len(chosen) else np.array([np.argmax(scores)])


@dataclass(frozen=True)
class CO2Localization:
    """What the proposal stage computes for one video: detections plus what a plot shows."""

    detections: list[Detection]
    video_scores: np.ndarray
    """(C,) float32 per-class video score (softmax over C+1, background dropped)."""
    classes: np.ndarray
    """Class indices that were localized (video score >= 0.2, else the best one)."""
    weighted_cas: np.ndarray
    """(T, C) float32 attention-weighted class activations."""
    attention: np.ndarray
    """(T,) float32 fused attention."""


def multiple_threshold_proposals(cas: torch.Tensor | np.ndarray, attn: torch.Tensor | np.ndarray) -> list[Detection]:
    """The original `multiple_threshold_hamnet` without the ambiguous-segment filter (that belongs to evaluation).

    cas: (1, T, C+1) or (T, C+1) logits, last column background; attn: (1, T, 1) or (T,) fused attention.
    Returns detections in the original's output order (classes by first appearance, soft-NMS selection order).
    """
    return co2_localize(cas, attn).detections


def co2_localize(cas: torch.Tensor | np.ndarray, attn: torch.Tensor | np.ndarray) -> CO2Localization:
    """`multiple_threshold_proposals` with the video scores, kept classes and curves it computed on the way."""
    import torch

    from co2cli.co2net import video_scores

    cas_t = torch.as_tensor(cas, dtype=torch.float32).reshape(1, -1, np.shape(cas)[-1])
    attn_t = torch.as_tensor(attn, dtype=torch.float32).reshape(1, -1, 1)
    weighted = (cas_t * attn_t)[0, :, :-1].numpy()  # float32 (T, C), computed in torch like the original
    scores = video_scores(cas_t, attn_t)
    classes = select_classes(scores)
    attention = attn_t[0, :, 0].numpy()
    per_class: dict[int, list[Detection]] = {}
    for threshold in ATTENTION_THRESHOLDS:
        positions = np.where(attention > threshold)[0]
        # Quirk: `positions.any()` is False both when nothing passes and when only snippet 0 passes.
        if not positions.any():
            continue
        # Quirk: the same attention runs serve every kept class; only the scores are class-specific.
        for class_id in classes:
            found = oic_proposals(positions, weighted[:, class_id], int(class_id), scores[class_id])
            per_class.setdefault(int(class_id), []).extend(found)
    detections = [p for class_id in per_class for p in soft_nms(per_class[class_id])]
    return CO2Localization(detections, scores, classes, weighted, attention)


def to_segments(video: str, detections: Sequence[Detection], class_names: Sequence[str],
                snippet_seconds: Fraction = SNIPPET_SECONDS, min_score: float | None = None,
                offset_s: float = 0.0) -> list[Segment]:
    """Convert snippet-index detections to seconds: offset_s + index * snippet_seconds (0.64 s by default).

    offset_s is the video time of snippet 0 (the first frame's presentation time, usually 0). The rate is a
    Fraction so that e.g. snippet 2981 gives 1907.84 s, not 1907.8400000000001.
    """
    return [Segment(video, p.label, class_names[p.label], p.score,
                    snippets_to_seconds(p.start, snippet_seconds, offset_s),
                    snippets_to_seconds(p.end, snippet_seconds, offset_s))
            for p in detections if min_score is None or p.score >= min_score]


# ---------------------------------------------------------------------------------------------------------------
# Zero-shot Kinetics-400 localization (not part of the original): per-snippet I3D probabilities stand in for the
# CAS and each class's own smoothed probability stands in for CO2-Net's class-agnostic attention.

KINETICS_MIN_VIDEO_SCORE = 0.1  # classes whose top-k mean probability reaches this are localized ...
KINETICS_MAX_CLASSES = 3  # ... at most this many, and always the best one
SMOOTH_SNIPPETS = 3  # moving-average window over snippets (odd)
KINETICS_MIN_SEGMENT_SCORE = 0.1  # soft-NMS keeps every decayed duplicate; a user-facing zero-shot list does not


def smooth(values: np.ndarray, window: int = SMOOTH_SNIPPETS) -> np.ndarray:
    """Centred moving average along time (axis 0) with edge replication; window in snippets."""
    if window <= 1 or values.shape[0] < 2:
        return values.astype(np.float64)
    pad = window // 2
    padded = np.concatenate([np.repeat(values[:1], pad, 0), values, np.repeat(values[-1:], pad, 0)])
    kernel = np.ones(window) / window
    return np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="valid"), 0, padded)


def topk_video_scores(probs: np.ndarray) -> np.ndarray:
    """Per-class video score: mean of the top max(1, T // 8) snippet probabilities. probs: (T, C)."""
    k = max(1, probs.shape[0] // 8)
    return np.sort(probs, axis=0)[-k:].mean(axis=0)


def kinetics_proposals(logits: np.ndarray) -> tuple[list[Detection], np.ndarray, np.ndarray]:
    """Segments from per-snippet Kinetics logits (T, 400): softmax, smooth, then per chosen class the original's
    ten thresholds (0.1..0.9 of the class's peak), OIC scores and Gaussian soft-NMS.

    Returns (proposals in snippet units, smoothed probabilities (T, C), video scores (C,)).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    curves = smooth(probs)
    scores = topk_video_scores(curves)
    ranked = np.argsort(-scores)
    chosen = [int(c) for c in ranked[:KINETICS_MAX_CLASSES] if scores[c] >= KINETICS_MIN_VIDEO_SCORE] or [int(ranked[0])]
    proposals: list[Detection] = []
    for class_id in chosen:
        curve = curves[:, class_id]
        pooled = []
        for fraction in ATTENTION_THRESHOLDS:
            positions = np.where(curve > fraction * curve.max())[0]
            if len(positions):
                pooled.extend(oic_proposals(positions, curve.astype(np.float32), class_id, scores[class_id]))
        proposals.extend(p for p in (soft_nms(pooled) if pooled else []) if p.score >= KINETICS_MIN_SEGMENT_SCORE)
    return proposals, curves, scores
