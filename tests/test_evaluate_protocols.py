"""`co2 evaluate --protocol original|official`, held to numbers computed by the official ActivityNet evaluator.

The fixture (tests/fixtures/official_eval/, built by tools/build_official_eval_fixture.py, see its README.md) holds
two hand-made cases, a THUMOS14 layout (subset `test`, tIoU 0.1..0.9, with `Ambiguous_test.txt`) and an
ActivityNet1.2 layout (subset `validation`, tIoU 0.5..0.95), and for each the mAP that activitynet/ActivityNet's
own `ANETdetection` (Evaluation/eval_detection.py, Python 2.7) computes under both protocols.

Contract for `co2 evaluate` (what these tests hold it to):
- `--protocol original` (the default, same numbers as giving no --protocol): the CO2-Net evaluator. Ground truth
  is quantised to snippets with Python round(s * 25 / 16) (half to even), predictions in seconds are converted with
  s * 25 / 16 (no rounding), and for thumos14 predictions read from JSON (`co2 localize` output) are filtered with
  `Ambiguous_test.txt` by default: a prediction whose snippets range(int(s), int(e)) share one with an ambiguous
  range range(int(round(a * 25/16)), int(round(b * 25/16))) of the same video name is dropped. activitynet12 has no
  ambiguous filter (its annotation folder has no Ambiguous_test.txt here). Thresholds: the literal lists
  (0.1, ..., 0.9) and (0.5, 0.55, ..., 0.95).
- `--protocol official`: the official evaluator on seconds. It never quantises and never filters (the THUMOS14
  case's ambiguous ranges must not drop anything). Thresholds: THUMOS14 the literal (0.1, ..., 0.9);
  ActivityNet1.2 the official default np.linspace(0.5, 0.95, 10) (on this case identical in effect to the literal
  list, see the fixture README).
- Both: the evaluated subset is `test` / `validation` (other subsets' ground truth ignored; predictions for videos
  without ground truth in that subset, or not in the annotations at all, are false positives); mAP is the mean
  over the classes with ground truth in that subset; tIoU == threshold matches.
- `--format json` prints {"map": {"<threshold:g>": fraction}, "average": {name: fraction}} with averages
  "0.1:0.5", "0.1:0.7", "0.1:0.9" (mean of the first 5, 7, 9 thresholds) for thumos14 and "0.5:0.95" for
  activitynet12.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "official_eval"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
DATASETS = ("thumos14", "activitynet12")
PROTOCOLS = ("original", "official")
ATOL = 1e-9


def case(dataset: str) -> dict:
    return EXPECTED["cases"][dataset]


@pytest.fixture(scope="module")
def co2_evaluate(tmp_path_factory):
    """Run `co2 evaluate ... --format json` in a subprocess (cached per dataset/protocol); returns its JSON."""
    home = tmp_path_factory.mktemp("co2cli-home")
    cache: dict = {}

    def run(dataset: str, protocol: str | None) -> dict:
        key = (dataset, protocol)
        if key not in cache:
            c = case(dataset)
            args = [sys.executable, "-m", "co2cli.cli", "evaluate", str(FIXTURE / c["predictions"]),
                    "--annotations", str(FIXTURE / c["annotations"]), "--dataset", dataset, "--format", "json"]
            if protocol is not None:
                args += ["--protocol", protocol]
            env = {**os.environ, "CO2CLI_HOME": str(home),
                   "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
            proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
            assert proc.returncode == 0, f"co2 evaluate failed ({proc.returncode}):\n{proc.stderr}"
            cache[key] = json.loads(proc.stdout)
        return cache[key]

    return run


def assert_same_numbers(got: dict, want: dict, what: str) -> None:
    for part in ("map", "average"):
        assert set(got[part]) == set(want[part]), f"{what}: {part} keys {sorted(got[part])} != {sorted(want[part])}"
        for key, value in want[part].items():
            assert abs(got[part][key] - value) <= ATOL, f"{what}: {part}[{key}] = {got[part][key]!r}, want {value!r}"


def max_difference(a: dict, b: dict) -> float:
    return max(abs(a[part][k] - b[part][k]) for part in ("map", "average") for k in a[part])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_cli_matches_official_evaluator(co2_evaluate, dataset: str, protocol: str) -> None:
    want = case(dataset)["protocols"][protocol]
    assert_same_numbers(co2_evaluate(dataset, protocol), want, f"{dataset} --protocol {protocol}")


@pytest.mark.parametrize("dataset", DATASETS)
def test_original_is_the_default(co2_evaluate, dataset: str) -> None:
    default = co2_evaluate(dataset, None)
    assert_same_numbers(default, case(dataset)["protocols"]["original"], f"{dataset} without --protocol")
    assert_same_numbers(default, co2_evaluate(dataset, "original"), f"{dataset} default vs --protocol original")


@pytest.mark.parametrize("dataset", DATASETS)
def test_protocols_differ(co2_evaluate, dataset: str) -> None:
    """The cases separate the protocols, so one silently computing the other is caught."""
    protocols = case(dataset)["protocols"]
    assert max_difference(protocols["original"], protocols["official"]) > 1e-3  # the fixture itself
    assert max_difference(co2_evaluate(dataset, "original"), co2_evaluate(dataset, "official")) > 1e-3


# ---- the fixture itself -------------------------------------------------------------------------------------


def test_fixture_inputs_are_the_ones_evaluated() -> None:
    """The inputs are byte-for-byte those the official tool saw (rebuild with the tool after any change)."""
    for rel, digest in EXPECTED["inputs_sha256"].items():
        assert hashlib.sha256((FIXTURE / rel).read_bytes()).hexdigest() == digest, f"{rel} changed"


@pytest.mark.parametrize("dataset", DATASETS)
def test_library_original_path_reproduces_fixture(dataset: str) -> None:
    """Cross-check of both sides: co2cli's existing original-protocol evaluator gives the official tool's numbers
    for the original protocol's inputs (and the same per-class AP)."""
    from co2cli.evaluate import ACTIVITYNET_TIOU, THUMOS_TIOU, detection_map, load_annotations, read_predictions

    c = case(dataset)
    ann = load_annotations(FIXTURE / c["annotations"])
    preds, from_localize = read_predictions(FIXTURE / c["predictions"], ann.classlist)
    assert from_localize and len(preds) == c["n_predictions"]
    thumos = dataset == "thumos14"
    result = detection_map(preds, ann, subset=c["subset"], thresholds=THUMOS_TIOU if thumos else ACTIVITYNET_TIOU,
                           filter_ambiguous_segments=thumos)
    want = c["protocols"]["original"]
    assert_same_numbers(result.to_json(), want, f"{dataset} detection_map")
    for column, class_index in enumerate(result.classes):
        np.testing.assert_allclose(result.ap[:, column], want["ap_per_class"][ann.classlist[class_index]],
                                   atol=ATOL, rtol=0)
