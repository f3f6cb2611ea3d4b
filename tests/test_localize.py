"""Proposal generation against the original `multiple_threshold_hamnet` (../shared/fixtures/co2net)."""

from __future__ import annotations

import csv
from fractions import Fraction

import numpy as np
import pytest

from co2cli.evaluate import filter_ambiguous, load_annotations
from co2cli.localize import Detection, multiple_threshold_proposals, soft_nms, to_segments
from tests.shared_paths import CO2_FIXTURES, THUMOS_ANNOTATIONS, need

CASES = ["random320", "structured200", "structured200_noambig", "tiny5", "single1"]


def read_rows(case: str) -> list[dict]:
    with open(need(CO2_FIXTURES / f"proposals_{case}.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same(got: list[Detection], rows: list[dict]) -> None:
    assert len(got) == len(rows)
    for p, row in zip(got, rows):
        assert (p.video, p.start, p.end, p.label) == (row["video-id"], float(row["t-start"]), float(row["t-end"]),
                                                      int(float(row["label"])))
        assert p.score == pytest.approx(float(row["score"]), abs=1e-6, rel=1e-5)


def as_predictions(video: str, proposals: list[Detection]) -> list[Detection]:
    return [p.of_video(video) for p in proposals]


@pytest.mark.parametrize("case", CASES)
def test_proposals_match_original(case: str) -> None:
    data = np.load(need(CO2_FIXTURES / "proposal_cases.npz"))
    video = str(data[f"{case}_video_name"])
    got = as_predictions(video, multiple_threshold_proposals(data[f"{case}_cas"], data[f"{case}_attn"]))
    # The original filters ambiguous segments inside its proposal stage; we do it at evaluation time.
    got = filter_ambiguous(got, load_annotations(need(THUMOS_ANNOTATIONS)).ambiguous)
    assert_same(got, read_rows(case))


def test_structured_case_really_exercises_the_filter() -> None:
    data = np.load(need(CO2_FIXTURES / "proposal_cases.npz"))
    unfiltered = multiple_threshold_proposals(data["structured200_cas"], data["structured200_attn"])
    assert len(unfiltered) == len(read_rows("structured200_noambig")) == len(read_rows("structured200")) + 22


def test_snippet_zero_quirk() -> None:
    """A threshold is skipped when only snippet 0 passes it, so a 1-snippet video yields nothing."""
    cas = np.zeros((1, 3, 21), np.float32)
    cas[0, :, 4] = 2.0
    attn = np.array([0.95, 0.05, 0.05], np.float32).reshape(1, 3, 1)
    assert multiple_threshold_proposals(cas, attn) == []
    attn = np.array([0.05, 0.95, 0.05], np.float32).reshape(1, 3, 1)
    got = multiple_threshold_proposals(cas, attn)
    assert {(p.start, p.end, p.label) for p in got} == {(1.0, 2.0, 4)}
    assert len(got) == 10  # all ten thresholds 0.1 .. 0.9 pass (0.9 < 0.95): pooled, then soft-NMSed


def test_soft_nms_keeps_everything_and_decays_overlaps() -> None:
    props = [Detection(0, 0.9, 0, 10), Detection(0, 0.8, 0, 10), Detection(0, 0.5, 20, 30)]
    out = soft_nms(props)
    assert [(p.start, p.end) for p in out] == [(0, 10), (20, 30), (0, 10)]
    assert out[0].score == 0.9 and out[1].score == 0.5
    assert out[2].score == pytest.approx(0.8 * np.exp(-1 / 0.3))


def test_seconds_at_the_boundary() -> None:
    segs = to_segments("v", [Detection(3, 1.0, 2981.0, 2983.0)], [f"c{i}" for i in range(20)])
    assert (segs[0].start_s, segs[0].end_s, segs[0].label_name) == (1907.84, 1909.12, "c3")
    other_rate = to_segments("v", [Detection(0, 1.0, 3.0, 4.0)], ["a"], Fraction(8, 30))
    assert other_rate[0].start_s == pytest.approx(0.8) and other_rate[0].end_s == pytest.approx(32 / 30)
