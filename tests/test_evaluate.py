"""Detection and classification mAP against the original evaluator's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from co2cli.errors import Co2Error
from co2cli.evaluate import (THUMOS_TIOU, classification_map, detection_map, ground_truth, load_annotations,
                             read_predictions)
from co2cli.timebase import quantize_to_snippet as to_snippet
from tests.shared_paths import CO2_FIXTURES, THUMOS_ANNOTATIONS, need


@pytest.fixture(scope="module")
def ann():
    return load_annotations(need(THUMOS_ANNOTATIONS))


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(need(CO2_FIXTURES / "detection_expected.json").read_text())


@pytest.mark.parametrize("table", ["good", "medium_int", "poor"])
def test_detection_map_matches_original(ann, expected, table: str) -> None:
    preds, from_localize = read_predictions(CO2_FIXTURES / f"detection_predictions_{table}.csv", ann.classlist)
    assert not from_localize and len(preds) == expected[table]["n_predictions"]
    result = detection_map(preds, ann, filter_ambiguous_segments=False)
    np.testing.assert_allclose(result.map, expected[table]["mAP"], atol=1e-9, rtol=0)
    np.testing.assert_allclose(result.ap, np.array(expected[table]["ap_per_class"]), atol=1e-9, rtol=0)
    averages = result.averages()
    for key, name in (("avg_0p1_0p5", "0.1:0.5"), ("avg_0p1_0p7", "0.1:0.7"), ("avg_0p1_0p9", "0.1:0.9")):
        assert averages[name] == pytest.approx(expected[table][key], abs=1e-9)


def test_literal_thresholds_matter(ann, expected) -> None:
    """np.linspace thresholds change mAP@0.3 and @0.7 exactly as the original would (tIoU == thr matches)."""
    preds, _ = read_predictions(CO2_FIXTURES / "detection_predictions_medium_int.csv", ann.classlist)
    info = expected["_informational_medium_int_with_linspace_thresholds"]
    result = detection_map(preds, ann, thresholds=np.linspace(0.1, 0.9, 9), filter_ambiguous_segments=False)
    np.testing.assert_allclose(result.map, info["mAP"], atol=1e-9, rtol=0)
    assert tuple(THUMOS_TIOU) == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_ground_truth_rounds_half_to_even(ann) -> None:
    assert to_snippet(1.6) == 2 and to_snippet(2.5 * 16 / 25) == 2 and to_snippet(197.5 * 16 / 25) == 198
    gts = ground_truth(ann, "test")
    assert len(gts) == 3358 and len({g.video for g in gts}) == 212
    assert sum(g.start == g.end for g in gts) == 17  # zero-length after rounding; still counted


def readme_ambiguous_filter(preds: list, path) -> list:
    """The original `filter_segments` as the fixture README states it, written here independently: a prediction
    is dropped if range(int(s), int(e)) shares a snippet with range(round(a*25/16), round(b*25/16)) for any entry
    (video, a, b) of Ambiguous_test.txt (whitespace-split fields 0, 1, 2: two spaces follow the name)."""
    ranges: dict[str, list[set]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            video, a, b = line.split()[:3]
            ranges.setdefault(video, []).append(set(range(round(float(a) * 25 / 16), round(float(b) * 25 / 16))))
    return [p for p in preds if not any(set(range(int(p.start), int(p.end))) & r for r in ranges.get(p.video, []))]


def test_ambiguous_filter_changes_the_score(ann, expected) -> None:
    """With the filter on, the mAP is that of the predictions left by the README's rule (evaluated unfiltered,
    which equals the fixture's numbers for the full table)."""
    preds, _ = read_predictions(CO2_FIXTURES / "detection_predictions_good.csv", ann.classlist)
    kept = readme_ambiguous_filter(preds, THUMOS_ANNOTATIONS / "Ambiguous_test.txt")
    assert 0 < len(preds) - len(kept) < len(preds)
    on = detection_map(preds, ann, filter_ambiguous_segments=True)
    off = detection_map(preds, ann, filter_ambiguous_segments=False)
    np.testing.assert_allclose(off.map, expected["good"]["mAP"], atol=1e-9, rtol=0)
    np.testing.assert_allclose(on.map, detection_map(kept, ann, filter_ambiguous_segments=False).map,
                               atol=1e-12, rtol=0)
    assert not np.allclose(on.map, off.map)


@pytest.mark.parametrize("case", ["basic", "testpy_21col"])
def test_classification_map(case: str) -> None:
    data = np.load(need(CO2_FIXTURES / "cmap_case.npz"))
    want = json.loads((CO2_FIXTURES / "cmap_case.json").read_text())["cases"][case]["cmap"]
    assert classification_map(data[f"{case}_scores"], data[f"{case}_labels"]) == pytest.approx(want, abs=1e-4)


def test_seconds_json_equals_snippet_csv(ann, tmp_path) -> None:
    preds, _ = read_predictions(CO2_FIXTURES / "detection_predictions_poor.csv", ann.classlist)
    results: dict = {}
    for p in preds:
        results.setdefault(p.video, []).append(
            {"label": ann.classlist[p.label], "score": p.score, "segment": [p.start * 0.64, p.end * 0.64]})
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results}))
    as_json, from_localize = read_predictions(path, ann.classlist)
    assert from_localize and len(as_json) == len(preds)
    key = lambda p: (p.video, p.score)  # noqa: E731 - JSON groups rows by video
    for a, b in zip(sorted(as_json, key=key), sorted(preds, key=key)):  # seconds x 25/16 back to snippets (float rounding only)
        assert (a.video, a.label, a.score) == (b.video, b.label, b.score)
        assert a.start == pytest.approx(b.start, abs=1e-9) and a.end == pytest.approx(b.end, abs=1e-9)


def test_bad_prediction_files(ann, tmp_path) -> None:
    cases = {
        "empty.csv": ("", "empty"),
        "header_only.csv": ("foo,bar\n", "lacks column"),
        "bad_row.csv": ("video-id,t-start,t-end,label,score\nv,1,x,0,0.5\n", "cannot parse"),
        "bad_label.csv": ("video-id,t-start,t-end,label,score\nv,1,2,NotAClass,0.5\n", "unknown class"),
        "bad.json": ("{not json", "not valid JSON"),
        "noresults.json": ('{"x": 1}', "no 'results'"),
    }
    for name, (text, fragment) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(Co2Error, match=fragment):
            read_predictions(path, ann.classlist)
    with pytest.raises(Co2Error, match="not found"):
        read_predictions(tmp_path / "missing.csv", ann.classlist)
    with pytest.raises(Co2Error, match="annotation folder not found"):
        load_annotations(tmp_path / "nowhere")
