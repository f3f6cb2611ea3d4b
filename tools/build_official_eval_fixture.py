"""Build tests/fixtures/official_eval/ by running the official ActivityNet detection evaluator itself.

The official code (activitynet/ActivityNet, Evaluation/eval_detection.py + utils.py) is Python 2 and is NOT part of
this repository: export it somewhere and give its folder with --official. It runs in a throwaway Python 2.7 with
its own era's numpy/pandas/joblib (--python2, --python2-path), one subprocess per build, in this file's --worker
mode. Everything else (writing the annotation folders, the protocol transforms) runs in Python 3, so that Python
3's round (half to even) is the one used, as in the original CO2-Net evaluator.

    git --git-dir=<mirror> show <commit>:Evaluation/eval_detection.py > /tmp/anet-official/Evaluation/eval_detection.py
    git --git-dir=<mirror> show <commit>:Evaluation/utils.py > /tmp/anet-official/Evaluation/utils.py
    ~/.pyenv/versions/2.7.18/bin/python -m pip install --target /tmp/anet-py27 "numpy<1.17" "pandas<0.25" "joblib<0.15"
    python3 tools/build_official_eval_fixture.py --official /tmp/anet-official/Evaluation \\
        --official-commit <commit> --python2 ~/.pyenv/versions/2.7.18/bin/python --python2-path /tmp/anet-py27

The cases are hand-made tables below (seconds). Two protocols are evaluated with the official ANETdetection:
  official: GT seconds and predictions seconds as they are (no quantisation, no filter);
  original: the CO2-Net evaluator's inputs, GT round(s*25/16) (Python round), predictions s*25/16, and for
            THUMOS14 predictions whose snippets range(int(s), int(e)) share one with an ambiguous range
            range(int(round(a*25/16)), int(round(b*25/16))) of the same video dropped first (filter_segments).
ANETdetection is constructed with check_status=False (no blocked-video download; nothing is blocked).

This file must stay parseable by Python 2.7 (the worker mode): no f-strings, no annotations.
"""

from __future__ import absolute_import, division, print_function

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

# --------------------------------------------------------------------------------------------------------------
# The cases (seconds). Each prediction: (video, label, start_s, end_s, score, note).

THUMOS_CLASSES = ["BaseballPitch", "CliffDiving", "HighJump", "Shotput"]

# (video, subset, duration_s, [(start_s, end_s, label), ...])
THUMOS_VIDEOS = [
    ("video_validation_0000051", "validation", 169.8, [(67.5, 75.9, "BaseballPitch"), (85.9, 90.6, "BaseballPitch")]),
    ("video_validation_0000090", "validation", 100.0, [(10.0, 20.0, "Shotput")]),
    ("video_validation_0000123", "validation", 80.5, [(30.0, 36.5, "HighJump")]),
    ("video_test_0000004", "test", 180.2, [(2.88, 8.0, "BaseballPitch"), (24.0, 29.76, "BaseballPitch"),
                                           (40.0, 45.12, "BaseballPitch")]),
    ("video_test_0000007", "test", 95.4, [(5.44, 8.96, "CliffDiving"), (33.6, 36.16, "CliffDiving"),
                                          (60.8, 67.36, "HighJump")]),
    ("video_test_0000011", "test", 140.0, [(12.16, 18.56, "HighJump"), (20.8, 26.88, "HighJump"),
                                           (28.48, 34.24, "HighJump"), (80.32, 86.72, "HighJump")]),
    ("video_test_0000026", "test", 120.5, [(1.7, 1.9, "Shotput"), (14.4, 20.16, "Shotput"),
                                           (50.24, 57.92, "Shotput")]),
    ("video_test_0000039", "test", 200.0, [(100.16, 104.32, "CliffDiving")]),
    ("video_test_0000045", "test", 75.0, [(8.0, 16.32, "Shotput"), (30.72, 33.28, "BaseballPitch")]),
    ("video_test_0000051", "test", 110.0, [(5.0, 11.0, "HighJump"), (60.0, 66.0, "HighJump")]),
    ("video_test_0000062", "test", 60.0, []),  # a test video without ground truth
]

# Ambiguous_test.txt ('video  start end', two spaces as in the real file)
THUMOS_AMBIGUOUS = [
    ("video_test_0000004", 30.4, 33.6),   # snippets range(48, 52) (47.5 -> 48, 52.5 -> 52)
    ("video_test_0000039", 102.0, 103.0),  # range(159, 161): inside the only CliffDiving GT of the video
    ("video_test_0000051", 8.0, 8.3),     # range(12, 13) (12.5 -> 12; half-up would make it empty)
    ("video_test_0000051", 20.0, 24.0),   # range(31, 38)
    ("video_test_0000026", 110.0, 110.2),  # range(172, 172): empty after rounding, drops nothing
    ("video_test_0000999", 1.0, 2.0),     # a video not in the annotations: still drops its prediction
]

THUMOS_PREDICTIONS = [
    # validation video: its GT is not evaluated, so even a perfect hit is a false positive (top score)
    ("video_validation_0000051", "BaseballPitch", 67.6, 75.8, 0.99, "validation video: FP"),
    ("video_validation_0000051", "BaseballPitch", 86.0, 90.0, 0.845, "validation video: FP"),
    # video_test_0000004
    ("video_test_0000004", "BaseballPitch", 2.9, 8.1, 0.96, "good"),
    ("video_test_0000004", "BaseballPitch", 24.3, 29.5, 0.91, "good"),
    ("video_test_0000004", "BaseballPitch", 30.5, 32.0, 0.88, "FP inside ambiguous range: dropped by original"),
    ("video_test_0000004", "BaseballPitch", 40.2, 45.0, 0.83, "good"),
    ("video_test_0000004", "CliffDiving", 24.1, 29.9, 0.79, "wrong class"),
    ("video_test_0000004", "BaseballPitch", 39.7, 41.9, 0.62, "partial duplicate"),
    ("video_test_0000004", "BaseballPitch", 28.8, 30.6, 0.55,
     "overlaps the ambiguous range in seconds but not in snippets: kept"),
    ("video_test_0000004", "BaseballPitch", 2.5, 5.0, 0.47, "partial duplicate"),
    # video_test_0000007
    ("video_test_0000007", "CliffDiving", 5.6, 9.0, 0.94, "good"),
    ("video_test_0000007", "HighJump", 61.0, 67.0, 0.89, "good"),
    ("video_test_0000007", "CliffDiving", 33.0, 35.0, 0.72, "jittered"),
    ("video_test_0000007", "CliffDiving", 34.0, 36.5, 0.58, "jittered duplicate"),
    ("video_test_0000007", "CliffDiving", 60.0, 63.0, 0.36, "wrong class"),
    # video_test_0000011: four HighJump close together
    ("video_test_0000011", "HighJump", 12.0, 18.0, 0.93, "good"),
    ("video_test_0000011", "HighJump", 19.5, 27.5, 0.86, "good"),
    ("video_test_0000011", "HighJump", 18.0, 29.0, 0.77, "spans three GTs, best one taken"),
    ("video_test_0000011", "HighJump", 28.0, 35.0, 0.69, "good"),
    ("video_test_0000011", "HighJump", 29.0, 33.5, 0.52, "duplicate inside a GT"),
    ("video_test_0000011", "HighJump", 79.0, 84.0, 0.41, "partial"),
    ("video_test_0000011", "HighJump", 100.0, 110.0, 0.33, "FP"),
    # video_test_0000026: the first Shotput GT is 0.2 s long and rounds to an empty [3, 3] snippet segment
    ("video_test_0000026", "Shotput", 14.0, 20.0, 0.9, "good"),
    ("video_test_0000026", "Shotput", 51.0, 58.5, 0.81, "good"),
    ("video_test_0000026", "Shotput", 1.65, 1.95, 0.74, "hits the 0.2 s GT (zero-length in snippets)"),
    ("video_test_0000026", "Shotput", 49.0, 53.0, 0.45, "partial duplicate"),
    ("video_test_0000026", "BaseballPitch", 90.0, 95.0, 0.3, "FP"),
    # video_test_0000039
    ("video_test_0000039", "CliffDiving", 100.5, 104.0, 0.87, "good, touches the ambiguous range: dropped by original"),
    ("video_test_0000039", "CliffDiving", 99.0, 101.5, 0.63, "partial, kept by the filter"),
    ("video_test_0000039", "CliffDiving", 150.0, 155.0, 0.44, "FP"),
    # video_test_0000045
    ("video_test_0000045", "Shotput", 8.5, 16.0, 0.84, "good"),
    ("video_test_0000045", "BaseballPitch", 30.5, 33.5, 0.78, "good"),
    ("video_test_0000045", "BaseballPitch", 31.0, 32.0, 0.39, "duplicate"),
    ("video_test_0000045", "Shotput", 40.0, 44.0, 0.27, "FP"),
    # video_test_0000051
    ("video_test_0000051", "HighJump", 5.2, 10.8, 0.95, "good, covers snippet 12 (ambiguous): dropped by original"),
    ("video_test_0000051", "HighJump", 60.5, 66.5, 0.68, "good"),
    ("video_test_0000051", "HighJump", 21.0, 23.0, 0.61, "FP inside ambiguous range: dropped by original"),
    ("video_test_0000051", "HighJump", 4.0, 9.0, 0.5, "partial, covers snippet 12: dropped by original"),
    ("video_test_0000051", "HighJump", 17.92, 19.84, 0.31, "FP ending at the ambiguous range's first snippet: kept"),
    ("video_test_0000051", "HighJump", 19.0, 20.5, 0.22, "FP touching the ambiguous range: dropped by original"),
    # video_test_0000062: no ground truth
    ("video_test_0000062", "HighJump", 10.0, 15.0, 0.8, "video without GT: FP"),
    ("video_test_0000062", "CliffDiving", 30.0, 33.0, 0.57, "video without GT: FP"),
    # a video that is not in the annotations at all
    ("video_test_0000999", "CliffDiving", 1.0, 4.0, 0.66, "unknown video: FP"),
    ("video_test_0000999", "Shotput", 5.0, 9.0, 0.2, "unknown video: FP"),
]

ANET_CLASSES = ["Drinking coffee", "Long jump", "Playing bagpipes", "Using the balance beam"]

ANET_VIDEOS = [
    ("v_tr01Kq2mPaZ", "training", 140.55, [(20.12, 60.7, "Long jump")]),
    ("v_tr02Bn5xLcW", "training", 210.3, [(5.0, 80.25, "Drinking coffee"), (120.4, 180.9, "Drinking coffee")]),
    ("v_tr03Hs8eVrT", "training", 98.0, [(10.0, 90.5, "Using the balance beam")]),
    ("v_va01Gt4nQwE", "validation", 182.36, [(12.37, 21.9, "Long jump"), (95.02, 103.77, "Long jump"),
                                            (150.3, 152.9, "Long jump")]),
    ("v_va02Rd7uYhJ", "validation", 236.8, [(3.5, 228.13, "Playing bagpipes")]),
    ("v_va03Mk1oXsB", "validation", 121.07, [(10.41, 48.3, "Using the balance beam"),
                                             (55.0, 97.66, "Using the balance beam")]),
    ("v_va04Pz6iCfN", "validation", 305.2, [(44.13, 61.0, "Drinking coffee"), (150.25, 171.6, "Drinking coffee"),
                                            (260.9, 288.44, "Drinking coffee")]),
    ("v_va05Wy3tDgM", "validation", 95.5, [(30.08, 41.6, "Long jump"), (60.0, 80.33, "Drinking coffee")]),
    ("v_va06Lc9aEvK", "validation", 150.0, [(20.48, 88.32, "Playing bagpipes"), (101.6, 139.04, "Playing bagpipes")]),
    ("v_va07Jf2sUbR", "validation", 264.1, [(40.0, 61.28, "Using the balance beam"),
                                            (130.72, 203.52, "Using the balance beam")]),
]

ANET_PREDICTIONS = [
    ("v_tr02Bn5xLcW", "Drinking coffee", 5.1, 80.0, 0.985, "training video: FP"),
    ("v_va01Gt4nQwE", "Long jump", 12.5, 21.6, 0.97, "good"),
    ("v_va01Gt4nQwE", "Long jump", 94.1, 104.9, 0.81, "jittered"),
    ("v_va01Gt4nQwE", "Long jump", 10.0, 30.0, 0.52, "loose duplicate"),
    ("v_va01Gt4nQwE", "Drinking coffee", 95.0, 103.0, 0.43, "wrong class"),
    ("v_va01Gt4nQwE", "Long jump", 150.0, 152.5, 0.68, "short GT: tIoU 0.76 in seconds, 0.71 in snippets"),
    ("v_va02Rd7uYhJ", "Playing bagpipes", 1.0, 230.5, 0.95, "whole video"),
    ("v_va02Rd7uYhJ", "Playing bagpipes", 50.0, 160.0, 0.74, "duplicate, half of it"),
    ("v_va02Rd7uYhJ", "Playing bagpipes", 3.9, 227.4, 0.58, "tighter duplicate, lower score"),
    ("v_va03Mk1oXsB", "Using the balance beam", 9.8, 97.9, 0.93, "merges both GTs"),
    ("v_va03Mk1oXsB", "Using the balance beam", 11.02, 47.7, 0.88, "good"),
    ("v_va03Mk1oXsB", "Using the balance beam", 56.3, 95.0, 0.69, "good"),
    ("v_va03Mk1oXsB", "Long jump", 60.0, 90.0, 0.37, "wrong class"),
    ("v_va04Pz6iCfN", "Drinking coffee", 45.0, 60.4, 0.91, "good"),
    ("v_va04Pz6iCfN", "Drinking coffee", 149.0, 173.0, 0.86, "jittered"),
    ("v_va04Pz6iCfN", "Drinking coffee", 262.5, 287.0, 0.77, "jittered"),
    ("v_va04Pz6iCfN", "Drinking coffee", 100.0, 130.0, 0.64, "FP"),
    ("v_va04Pz6iCfN", "Drinking coffee", 255.0, 270.0, 0.47, "partial duplicate"),
    ("v_va05Wy3tDgM", "Long jump", 29.4, 42.3, 0.89, "good"),
    ("v_va05Wy3tDgM", "Drinking coffee", 61.5, 78.0, 0.84, "jittered"),
    ("v_va05Wy3tDgM", "Drinking coffee", 30.0, 41.0, 0.55, "wrong class (on the Long jump GT)"),
    ("v_va05Wy3tDgM", "Long jump", 85.0, 95.0, 0.34, "FP"),
    ("v_va06Lc9aEvK", "Playing bagpipes", 21.0, 87.8, 0.92, "good"),
    ("v_va06Lc9aEvK", "Playing bagpipes", 100.0, 141.0, 0.71, "jittered"),
    ("v_va06Lc9aEvK", "Playing bagpipes", 20.0, 139.0, 0.66, "merges both GTs"),
    ("v_va07Jf2sUbR", "Using the balance beam", 41.3, 60.2, 0.83, "good"),
    ("v_va07Jf2sUbR", "Using the balance beam", 128.0, 190.0, 0.79, "jittered"),
    ("v_va07Jf2sUbR", "Using the balance beam", 135.0, 205.0, 0.61, "jittered duplicate"),
    ("v_va07Jf2sUbR", "Playing bagpipes", 131.0, 200.0, 0.49, "wrong class"),
    ("v_va07Jf2sUbR", "Using the balance beam", 230.0, 260.0, 0.28, "FP"),
    ("v_unknown0001", "Long jump", 10.0, 20.0, 0.76, "unknown video: FP"),
    ("v_unknown0001", "Playing bagpipes", 0.0, 60.0, 0.25, "unknown video: FP"),
]

THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # the literal list (co2cli THUMOS_TIOU)
ANET_TIOU_LITERAL = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]  # co2cli ACTIVITYNET_TIOU
DEFAULT = "default"  # ANETdetection's own default, np.linspace(0.5, 0.95, 10), made by the tool's numpy
SNIPPETS_PER_SECOND = 25 / 16


# --------------------------------------------------------------------------------------------------------------
# Worker (Python 2.7, official code)


def worker(job_path):
    with open(job_path) as fh:
        job = json.load(fh)
    sys.path.insert(0, job["official"])
    import numpy as np
    import pandas
    import joblib
    from eval_detection import ANETdetection
    out = {"versions": {"python": sys.version.split()[0], "numpy": np.__version__, "pandas": pandas.__version__,
                        "joblib": joblib.__version__}, "runs": {}}
    for name, run in sorted(job["runs"].items()):
        kwargs = {}
        if run["thresholds"] != DEFAULT:
            kwargs["tiou_thresholds"] = np.array(run["thresholds"], dtype=np.float64)
        det = ANETdetection(run["ground_truth"], run["predictions"], subset=run["subset"], verbose=False,
                            check_status=False, **kwargs)
        det.evaluate()
        out["runs"][name] = {
            "thresholds": [float(t) for t in det.tiou_thresholds],
            "activity_index": dict((k, int(v)) for k, v in det.activity_index.items()),
            "ap": det.ap.tolist(), "mAP": det.mAP.tolist(), "average_mAP": float(det.average_mAP),
            "n_ground_truth": int(len(det.ground_truth)), "n_predictions": int(len(det.prediction)),
        }
    with open(job["output"], "w") as fh:
        json.dump(out, fh)


# --------------------------------------------------------------------------------------------------------------
# Builder (Python 3)


def sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def git_blob_id(path):
    with open(path, "rb") as fh:
        data = fh.read()
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def write_annotations(folder, classes, videos, ambiguous):
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    names = [v[0] for v in videos]
    # Same layout and dtypes as the real W-TALC folders: bytes arrays for names, object arrays of lists elsewhere.
    np.save(os.path.join(folder, "classlist.npy"), np.array([c.encode() for c in classes]))
    np.save(os.path.join(folder, "videoname.npy"), np.array([n.encode() for n in names]))
    np.save(os.path.join(folder, "subset.npy"), np.array([v[1].encode() for v in videos]))
    np.save(os.path.join(folder, "duration.npy"), np.array([[float(v[2])] for v in videos], dtype=np.float64))

    def objects(rows):
        arr = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            arr[i] = row
        return arr

    np.save(os.path.join(folder, "segments.npy"), objects([[[float(s), float(e)] for s, e, _ in v[3]] for v in videos]))
    np.save(os.path.join(folder, "labels.npy"), objects([[lab for _, _, lab in v[3]] for v in videos]))
    np.save(os.path.join(folder, "labels_all.npy"), objects([sorted({lab for _, _, lab in v[3]}) for v in videos]))
    if ambiguous:
        with open(os.path.join(folder, "Ambiguous_test.txt"), "w") as fh:
            for video, a, b in ambiguous:
                fh.write("{}  {!r} {!r}\n".format(video, a, b))


def read_annotations(folder):
    """Read the folder back with plain numpy (independent of co2cli's loader)."""
    import numpy as np

    def load(name):
        return np.load(os.path.join(folder, name), allow_pickle=True, encoding="latin1")

    def text(x):
        return x.decode() if isinstance(x, bytes) else str(x)

    videos = []
    for name, sub, dur, segs, labs in zip(load("videoname.npy"), load("subset.npy"), load("duration.npy"),
                                          load("segments.npy"), load("labels.npy")):
        videos.append((text(name), text(sub), float(np.ravel(dur)[0]),
                       [(float(s[0]), float(s[1]), text(lab)) for s, lab in zip(segs, labs)]))
    ambiguous = []
    path = os.path.join(folder, "Ambiguous_test.txt")
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                f = line.split()
                if len(f) >= 3:
                    ambiguous.append((f[0], float(f[1]), float(f[2])))
    return [text(c) for c in load("classlist.npy")], videos, ambiguous


def predictions_json(rows):
    results = {}
    for video, label, s, e, score, _ in rows:
        results.setdefault(video, []).append({"label": label, "score": score, "segment": [s, e]})
    return {"version": "co2cli official_eval fixture", "results": results, "external_data": {}}


def gt_database(videos, to_unit):
    db = {}
    for video, subset, duration, segs in videos:
        db[video] = {"subset": subset, "duration": duration, "url": "",
                     "annotations": [{"label": lab, "segment": [to_unit(s), to_unit(e)]} for s, e, lab in segs]}
    return {"version": "co2cli official_eval fixture", "taxonomy": [], "database": db}


def snippet_round(seconds):
    return round(seconds * 25 / 16)  # Python 3 round: half to even, as the original CO2-Net evaluator


def snippet_round_half_up(seconds):
    import math
    return math.floor(seconds * 25 / 16 + 0.5)


def ambiguous_ranges(ambiguous, rounding):
    ranges = {}
    for video, a, b in ambiguous:
        ranges.setdefault(video, []).append(range(int(rounding(a)), int(rounding(b))))
    return ranges


def touches(s_snip, e_snip, ranges):
    mine = set(range(int(s_snip), int(e_snip)))
    return any(mine & set(r) for r in ranges)


def original_predictions(pred_rows, ambiguous, rounding=snippet_round, filter_ambiguous=True):
    """Seconds -> snippets (no rounding); THUMOS: drop rows touching an ambiguous range (filter_segments)."""
    ranges = ambiguous_ranges(ambiguous, rounding) if filter_ambiguous else {}
    kept, dropped = [], []
    for row in pred_rows:
        video, label, s, e, score, note = row
        s2, e2 = s * SNIPPETS_PER_SECOND, e * SNIPPETS_PER_SECOND
        if touches(s2, e2, ranges.get(video, [])):
            dropped.append(row)
        else:
            kept.append((video, label, s2, e2, score, note))
    return kept, dropped


def tiou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (b[1] - b[0]) + (a[1] - a[0]) - inter
    return inter / union if union > 0 else float("nan")


def diagnostics(videos, subset, pred_rows, gt_unit, thresholds_lists):
    """Tie / near-threshold report for one protocol's inputs (already in that protocol's unit)."""
    import numpy as np
    gts = {}
    for video, sub, _, segs in videos:
        if sub == subset:
            for s, e, lab in segs:
                gts.setdefault((video, lab), []).append((gt_unit(s), gt_unit(e)))
    thresholds = sorted({float(t) for ts in thresholds_lists for t in ts})
    near, ties = [], []
    for video, label, s, e, score, note in pred_rows:
        values = [tiou((s, e), g) for g in gts.get((video, label), [])]
        for v in values:
            for t in thresholds:
                if v == t:
                    near.append((video, label, s, e, v, t, "exactly equal"))
                elif abs(v - t) < 1e-6:
                    near.append((video, label, s, e, v, t, "within 1e-6"))
        positive = [v for v in values if v >= min(thresholds)]
        if len(set(positive)) != len(positive):
            ties.append((video, label, s, e, values))
    scores = [r[4] for r in pred_rows]
    return {"near_threshold": near, "tiou_ties": ties, "unique_scores": len(set(scores)) == len(scores),
            "min_gap_to_threshold": min([abs(tiou((r[2], r[3]), g) - t) for r in pred_rows
                                         for g in gts.get((r[0], r[1]), []) for t in thresholds
                                         if tiou((r[2], r[3]), g) != t] or [np.inf])}


def half_boundaries(videos, subset):
    halves = []
    for video, sub, _, segs in videos:
        if sub != subset:
            continue
        for s, e, lab in segs:
            for x in (s, e):
                v = x * 25 / 16
                if v - int(v) == 0.5:
                    halves.append({"video": video, "seconds": x, "snippets": v, "round": round(v),
                                   "half_up": int(v) + 1})
    return halves


def fmt(t):
    return "{:g}".format(t)


def summarise(run, classes, average_keys):
    import numpy as np
    index = run["activity_index"]
    mAP = np.array(run["mAP"])
    averages = {}
    for key, n in average_keys:
        averages[key] = float(np.mean(mAP[:n]))
    ap = np.array(run["ap"])
    return {
        "thresholds": run["thresholds"],
        "map": dict((fmt(t), float(m)) for t, m in zip(run["thresholds"], run["mAP"])),
        "average": averages,
        "average_mAP_official": run["average_mAP"],
        "ap_per_class": dict((c, ap[:, index[c]].tolist()) for c in classes if c in index),
        "n_ground_truth": run["n_ground_truth"],
        "n_predictions_evaluated": run["n_predictions"],
    }


def dump(path, obj):
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")


def build(args):
    import numpy as np
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    cases = {
        "thumos14": dict(classes=THUMOS_CLASSES, videos=THUMOS_VIDEOS, ambiguous=THUMOS_AMBIGUOUS,
                         predictions=THUMOS_PREDICTIONS, subset="test", filter=True,
                         official_thresholds=THUMOS_TIOU, original_thresholds=THUMOS_TIOU,
                         averages=[("0.1:0.5", 5), ("0.1:0.7", 7), ("0.1:0.9", 9)]),
        "activitynet12": dict(classes=ANET_CLASSES, videos=ANET_VIDEOS, ambiguous=[], predictions=ANET_PREDICTIONS,
                              subset="validation", filter=False,
                              official_thresholds=DEFAULT, original_thresholds=ANET_TIOU_LITERAL,
                              averages=[("0.5:0.95", 10)]),
    }
    tmp = tempfile.mkdtemp(prefix="official_eval_")
    job = {"official": os.path.abspath(args.official), "output": os.path.join(tmp, "results.json"), "runs": {}}
    info = {}
    for name, case in cases.items():
        folder = os.path.join(out, name)
        ann_dir = os.path.join(folder, "annotations")
        write_annotations(ann_dir, case["classes"], case["videos"], case["ambiguous"])
        dump(os.path.join(folder, "predictions.json"), predictions_json(case["predictions"]))
        # Everything below starts from the files just written, read back with plain numpy / json.
        classes, videos, ambiguous = read_annotations(ann_dir)
        with open(os.path.join(folder, "predictions.json")) as fh:
            pred = json.load(fh)
        rows = [(v, r["label"], r["segment"][0], r["segment"][1], r["score"], "")
                for v, items in sorted(pred["results"].items()) for r in items]
        inputs = os.path.join(folder, "official_inputs")
        os.makedirs(inputs, exist_ok=True)

        def put(filename, obj, keep=True):
            path = os.path.join(inputs if keep else tmp, "{}_{}".format(name, filename) if not keep else filename)
            dump(path, obj)
            return path

        gt_seconds = put("ground_truth_seconds.json", gt_database(videos, float))
        gt_snippets = put("ground_truth_snippets.json", gt_database(videos, snippet_round))
        kept, dropped = original_predictions(rows, ambiguous, filter_ambiguous=case["filter"])
        pred_original = put("predictions_snippets.json", predictions_json(kept))
        pred_seconds = os.path.join(folder, "predictions.json")
        runs = {
            "official": (gt_seconds, pred_seconds, case["official_thresholds"]),
            "original": (gt_snippets, pred_original, case["original_thresholds"]),
        }
        # Informational variants (not what co2 evaluate computes): show what each ingredient changes.
        unfiltered, _ = original_predictions(rows, ambiguous, filter_ambiguous=False)
        gt_half_up = put("gt_half_up.json", gt_database(videos, snippet_round_half_up), keep=False)
        if case["filter"]:
            runs["original_without_ambiguous_filter"] = (
                gt_snippets, put("pred_nofilter.json", predictions_json(unfiltered), keep=False),
                case["original_thresholds"])
            kept_hu, _ = original_predictions(rows, ambiguous, rounding=snippet_round_half_up)
            runs["original_with_half_up_rounding"] = (
                gt_half_up, put("pred_half_up.json", predictions_json(kept_hu), keep=False),
                case["original_thresholds"])
        else:
            runs["original_with_half_up_rounding"] = (gt_half_up, pred_original, case["original_thresholds"])
            runs["official_with_literal_thresholds"] = (gt_seconds, pred_seconds, ANET_TIOU_LITERAL)
            runs["original_with_linspace_thresholds"] = (gt_snippets, pred_original, DEFAULT)
        for run_name, (g, p, t) in runs.items():
            job["runs"]["{}/{}".format(name, run_name)] = {"ground_truth": g, "predictions": p, "thresholds": t,
                                                          "subset": case["subset"]}
        literal = case["original_thresholds"]
        linspace = [float(x) for x in np.linspace(0.5, 0.95, 10)] if case["official_thresholds"] == DEFAULT else literal
        info[name] = {
            "rows": rows, "dropped": dropped, "classes": classes, "videos": videos, "case": case,
            "diag_official": diagnostics(videos, case["subset"], rows, float, [literal, linspace]),
            "diag_original": diagnostics(videos, case["subset"], kept, snippet_round, [literal, linspace]),
            "halves": half_boundaries(videos, case["subset"]),
            "zero_length": [(v, s, e) for v, sub, _, segs in videos if sub == case["subset"]
                            for s, e, _ in segs if snippet_round(s) == snippet_round(e)],
        }
    job_path = os.path.join(tmp, "job.json")
    dump(job_path, job)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([p for p in [args.python2_path] if p]))
    try:
        subprocess.check_call([args.python2, os.path.abspath(__file__), "--worker", job_path], env=env, cwd=tmp)
        with open(job["output"]) as fh:
            results = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    official_dir = os.path.abspath(args.official)
    expected = {
        "_about": "Ground truth for co2 evaluate --protocol official|original, computed by the official ActivityNet "
                  "ANETdetection (see README.md). 'official' = seconds as given; 'original' = CO2-Net's inputs "
                  "(GT round(s*25/16), predictions s*25/16, THUMOS14 ambiguous filter) fed to the same tool. "
                  "map/average values are fractions; keys are thresholds formatted with :g.",
        "official_tool": {
            "repository": "https://github.com/activitynet/ActivityNet",
            "commit": args.official_commit,
            "files": dict((f, {"git_blob": git_blob_id(os.path.join(official_dir, f)),
                               "sha256": sha256(os.path.join(official_dir, f))})
                          for f in ("eval_detection.py", "utils.py")),
            "call": "ANETdetection(gt_json, pred_json, subset=..., tiou_thresholds=..., verbose=False, "
                    "check_status=False).evaluate()",
            "environment": results["versions"],
        },
        "builder_environment": {"python": sys.version.split()[0], "numpy": np.__version__},
        "cases": {},
    }
    for name, case_info in info.items():
        case = case_info["case"]
        entry = {
            "dataset": name, "subset": case["subset"],
            "annotations": "{}/annotations".format(name), "predictions": "{}/predictions.json".format(name),
            "n_predictions": len(case_info["rows"]),
            "protocols": {}, "informational": {},
            "informational_about": "not computed by co2 evaluate: the official tool on variants of the original "
                                   "protocol's inputs (or other thresholds), to show what each ingredient changes",
            "original_dropped_by_ambiguous_filter": [
                {"video": r[0], "label": r[1], "segment": [r[2], r[3]], "score": r[4]} for r in case_info["dropped"]],
            "half_boundaries_in_subset": case_info["halves"],
            "zero_length_after_rounding": [{"video": v, "segment": [s, e]} for v, s, e in case_info["zero_length"]],
            "exact_threshold_hits": {
                "official": [{"video": n[0], "label": n[1], "segment": [n[2], n[3]], "tiou": n[4], "threshold": n[5]}
                             for n in case_info["diag_official"]["near_threshold"]],
                "original": [{"video": n[0], "label": n[1], "segment": [n[2], n[3]], "tiou": n[4], "threshold": n[5]}
                             for n in case_info["diag_original"]["near_threshold"]],
            },
        }
        for run_key, run in results["runs"].items():
            case_name, run_name = run_key.split("/")
            if case_name != name:
                continue
            summary = summarise(run, case_info["classes"], case["averages"])
            target = entry["protocols"] if run_name in ("official", "original") else entry["informational"]
            target[run_name] = summary
        expected["cases"][name] = entry
        for label, diag in (("official", case_info["diag_official"]), ("original", case_info["diag_original"])):
            print("{} {}: unique scores {}, tIoU ties {}, near/exact threshold {}, min gap {:.3g}".format(
                name, label, diag["unique_scores"], diag["tiou_ties"], diag["near_threshold"],
                diag["min_gap_to_threshold"]))
    expected["inputs_sha256"] = dict(
        (os.path.relpath(os.path.join(root, f), out), sha256(os.path.join(root, f)))
        for name in info for root, _, files in os.walk(os.path.join(out, name)) for f in sorted(files))
    dump(os.path.join(out, "expected.json"), expected)
    for name, entry in expected["cases"].items():
        for proto, summary in sorted(list(entry["protocols"].items()) + list(entry["informational"].items())):
            print("{:14s} {:36s} {}  avg {}".format(name, proto, " ".join("{:.4f}".format(v) for v in
                  [summary["map"][k] for k in sorted(summary["map"], key=float)]),
                  " ".join("{}={:.6f}".format(k, v) for k, v in sorted(summary["average"].items()))))
    print("wrote {}".format(os.path.join(out, "expected.json")))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--official", help="folder holding the official eval_detection.py and utils.py")
    p.add_argument("--official-commit", default="unknown", help="activitynet/ActivityNet commit the files came from")
    p.add_argument("--python2", default="python2", help="Python 2.7 interpreter for the official code")
    p.add_argument("--python2-path", default="", help="PYTHONPATH with numpy/pandas/joblib for --python2")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests",
                                                 "fixtures", "official_eval"))
    args = p.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if sys.version_info < (3, 6):
        raise SystemExit("run the builder with Python 3 (only --worker mode runs under Python 2)")
    if not args.official:
        raise SystemExit("--official FOLDER is required")
    build(args)


if __name__ == "__main__":
    main()
