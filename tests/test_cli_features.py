"""`co2 localize` on feature files and `co2 evaluate`, run as a user runs them (a subprocess)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.shared_paths import CO2_FIXTURES, THUMOS_ANNOTATIONS, need

CKPT = CO2_FIXTURES / "reference_ckpt.pkl.gz"


def co2(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and any(fragment in line for line in errors), proc.stderr


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """The T=320 forward-case input saved as a feature file named after the proposal case's video."""
    folder = tmp_path_factory.mktemp("feats")
    data = np.load(need(CO2_FIXTURES / "forward_cases.npz"))
    path = folder / "video_test_0000004.npy"
    np.save(path, data["T320_input"][0].astype(np.float32))
    return path


def test_localize_json_equals_original_proposals_in_seconds(features: Path) -> None:
    proc = co2("localize", features, "--checkpoint", need(CKPT), "--classes", "thumos", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["results"]["video_test_0000004"]
    names = (Path(__file__).parents[1] / "co2cli" / "data" / "thumos14_classes.txt").read_text().split()
    with open(CO2_FIXTURES / "proposals_random320.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))  # same cas/attn as the T=320 forward case; not in the ambiguous list
    assert len(got) == len(rows) == 75
    for seg, row in zip(got, rows):
        assert seg["label"] == names[int(float(row["label"]))]
        assert seg["segment"] == pytest.approx([float(row["t-start"]) * 0.64, float(row["t-end"]) * 0.64],
                                               abs=1e-9)
        assert seg["score"] == pytest.approx(float(row["score"]), abs=1e-5)


def test_plain_checkpoint_csv_and_output_file(features: Path, tmp_path: Path) -> None:
    import gzip

    plain = tmp_path / "best_CO2.pkl"
    plain.write_bytes(gzip.decompress(need(CKPT).read_bytes()))
    out = tmp_path / "out" / "segments.csv"
    proc = co2("localize", features, "-c", plain, "--format", "csv", "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["segments.csv"]  # no temporary left behind
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 75 and rows[0]["video-id"] == "video_test_0000004"
    table = co2("localize", features, "-c", plain)
    assert table.returncode == 0 and "00:0" in table.stdout and "video_test_0000004" in table.stdout


def test_batch_isolates_bad_feature_files(features: Path, tmp_path: Path) -> None:
    bad_shape = tmp_path / "wrong_shape.npy"
    np.save(bad_shape, np.zeros((10, 1024), np.float32))
    nan = tmp_path / "nan.npy"
    arr = np.zeros((10, 2048), np.float32)
    arr[3, 5] = np.nan
    np.save(nan, arr)
    text = tmp_path / "text.npy"
    text.write_text("not an array")
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    proc = co2("localize", features, bad_shape, nan, text, pickled, empty, tmp_path / "missing.npy",
               "-c", need(CKPT), "--format", "json")
    assert proc.returncode == 1
    assert list(json.loads(proc.stdout)["results"]) == ["video_test_0000004"]
    for fragment in ("expected (T, 2048)", "NaN", "not a .npy file", "object arrays are refused", "empty",
                     "not found"):
        assert_one_line_error(proc, fragment)


def test_bad_checkpoint_is_one_line(features: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pkl"
    junk.write_text("junk")
    assert_one_line_error(co2("localize", features, "-c", junk), "not a readable PyTorch")
    assert_one_line_error(co2("localize", features, "-c", tmp_path / "none.pkl"), "not found")


# Runs argv[2:] and writes its peak RSS (KiB, from wait4) to argv[1]. Linux starts a process's ru_maxrss at the
# peak of the image it was forked from, so a direct child of pytest would report pytest's own peak; forked from
# this small wrapper, the CLI's figure is its own (plus the wrapper's ~20 MB at most).
PEAK_RSS_WRAPPER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(child.returncode)
"""


def test_ten_thousand_snippets_under_2gb(tmp_path: Path) -> None:
    """A 107-minute video's features (10,000 snippets) localize on the CPU with peak memory < 2 GB."""
    path = tmp_path / "long_video.npy"
    np.save(path, (np.abs(np.random.RandomState(7).randn(10_000, 2048)) * 0.5).astype(np.float32))
    report = tmp_path / "peak_kib"
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, str(report), sys.executable, "-m", "co2cli.cli",
                           "localize", str(path), "-c", str(need(CKPT)), "--format", "csv"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_kib = int(report.read_text())
    print(f"\nco2 localize on 10,000 snippets: peak RSS {peak_kib / 1024:.0f} MiB")
    assert path.stat().st_size // 1024 < peak_kib  # the 80 MB of features were resident: it measured the CLI
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    rows = proc.stdout.splitlines()
    assert len(rows) > 1 and max(float(r.split(",")[2]) for r in rows[1:]) <= 10_000 * 0.64


def test_evaluate_cli_json(tmp_path: Path) -> None:
    expected = json.loads(need(CO2_FIXTURES / "detection_expected.json").read_text())["medium_int"]
    proc = co2("evaluate", CO2_FIXTURES / "detection_predictions_medium_int.csv", "--annotations",
               need(THUMOS_ANNOTATIONS), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out["map"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    np.testing.assert_allclose(list(out["map"].values()), expected["mAP"], atol=1e-9, rtol=0)
    assert out["average"]["0.1:0.7"] == pytest.approx(expected["avg_0p1_0p7"], abs=1e-9)
    table = co2("evaluate", CO2_FIXTURES / "detection_predictions_medium_int.csv", "-a", THUMOS_ANNOTATIONS)
    assert table.returncode == 0 and "avg 0.1:0.7" in table.stdout
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_one_line_error(co2("evaluate", empty, "-a", THUMOS_ANNOTATIONS), "empty")
    header = tmp_path / "header.csv"
    header.write_text("video-id,t-start,t-end,label,score\n")
    assert_one_line_error(co2("evaluate", header, "-a", THUMOS_ANNOTATIONS), "no predictions")


def test_localize_then_evaluate_round_trip(features: Path, tmp_path: Path) -> None:
    """Our JSON (seconds, class names) through `co2 evaluate` (ambiguous filter on) scores what the original's own
    proposals for the same cas/attn (proposals_random320.csv, snippet units) score. The features are saved under
    the name of a test video with BaseballPitch (class 0, the proposals' class) ground truth and no ambiguous
    ranges, so the mAP is not 0."""
    video = "video_test_0001324"
    renamed = tmp_path / f"{video}.npy"
    renamed.write_bytes(features.read_bytes())
    original = tmp_path / "original.csv"
    original.write_text((CO2_FIXTURES / "proposals_random320.csv").read_text().replace("video_test_0000004", video))
    out = tmp_path / "results.json"
    assert co2("localize", renamed, "-c", need(CKPT), "--format", "json", "-o", out).returncode == 0
    proc = co2("evaluate", out, "-a", need(THUMOS_ANNOTATIONS), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "filter on" in proc.stderr
    want = co2("evaluate", original, "-a", THUMOS_ANNOTATIONS, "--format", "json")
    assert want.returncode == 0 and "filter off" in want.stderr, want.stderr
    got, want = json.loads(proc.stdout), json.loads(want.stdout)
    assert want["map"]["0.1"] > 0 and list(got["map"]) == list(want["map"])
    np.testing.assert_allclose(list(got["map"].values()), list(want["map"].values()), atol=1e-12, rtol=0)
    assert set(got["average"]) == {"0.1:0.5", "0.1:0.7", "0.1:0.9"}
    for name, (lo, hi) in {"0.1:0.5": (0, 5), "0.1:0.7": (0, 7), "0.1:0.9": (0, 9)}.items():
        assert got["average"][name] == pytest.approx(np.mean(list(got["map"].values())[lo:hi]), abs=1e-15)


def test_activitynet_checkpoint_with_class_names_beside_it(features: Path, tmp_path: Path) -> None:
    """An ANT_CO2 state dict (original key names, 100 classes) + `<stem>.classes.txt` localizes with the
    original's ActivityNet smoothing kernel (max_seqlen 60, t 5 -> 13)."""
    import torch

    from co2cli.co2net import CO2Net, activitynet_pool_kernel, run_co2net
    from co2cli.localize import multiple_threshold_proposals

    torch.manual_seed(5)
    ckpt = tmp_path / "ANT_CO2.pkl"
    torch.save(CO2Net(100).state_dict(), ckpt)
    names = [f"activity {i:03d}" for i in range(100)]
    (tmp_path / "ANT_CO2.classes.txt").write_text("\n".join(names) + "\n")
    proc = co2("localize", features, "--classes", "activitynet", "-c", ckpt, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["results"]["video_test_0000004"]
    model = CO2Net(100, temporal_pool_kernel=activitynet_pool_kernel(60, 5)).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    out = run_co2net(model, np.load(features))
    want = multiple_threshold_proposals(out["cas"], out["attn"])
    assert [(s["label"], s["segment"]) for s in got] == [
        (names[p.label], pytest.approx([p.start * 0.64, p.end * 0.64])) for p in want]
    (tmp_path / "ANT_CO2.classes.txt").unlink()
    assert_one_line_error(co2("localize", features, "--classes", "activitynet", "-c", ckpt), "classes.txt")
