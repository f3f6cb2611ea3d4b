"""Detection mAP and classification mAP exactly as the original CO2-Net evaluator computes them, and each
dataset's evaluation protocol (subset, tIoU thresholds, ambiguous-segment filter).

Detection works in snippet units (`localize.Detection`): ground-truth seconds are quantised with Python's round
(half to even) of seconds * 25 / 16 (`timebase.quantize_to_snippet`), as the original does. Predictions in
seconds are converted with `timebase.seconds_to_snippets` when read.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from co2cli.errors import Co2Error
from co2cli.localize import Detection
from co2cli.safe_pickle import Refused, load_npy
from co2cli.timebase import quantize_to_snippet, seconds_to_snippets, snippets_to_seconds
from co2cli.writers import csv_text_value

# The original passes this literal list; np.linspace would give 0.30000000000000004 and change mAP@0.3/0.7.
THUMOS_TIOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ACTIVITYNET_TIOU = (0.5, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
THUMOS_AVERAGES = {"0.1:0.5": 5, "0.1:0.7": 7, "0.1:0.9": 9}  # mean over the first n thresholds


@dataclass(frozen=True)
class EvalProtocol:
    """How a dataset is evaluated: which subset, at which tIoU thresholds, with or without the ambiguous filter,
    and which videos are too short to count (ANT's loader drops videos of <= 10 snippets)."""

    name: str
    train_subset: str
    eval_subset: str
    thresholds: tuple[float, ...]
    filter_ambiguous: bool
    min_snippets: int = 1


PROTOCOLS = {
    "thumos14": EvalProtocol("thumos14", "validation", "test", THUMOS_TIOU, True),
    "activitynet12": EvalProtocol("activitynet12", "training", "validation", ACTIVITYNET_TIOU, False, 11),
}
"""The original's protocols (test.py / ANT test): the numbers papers report."""


@dataclass
class Annotations:
    """A W-TALC annotation folder (`classlist.npy`, `videoname.npy`, `subset.npy`, `segments.npy`, ...)."""

    classlist: list[str]
    videonames: list[str]
    subsets: list[str]
    segments: list[list[tuple[float, float]]]  # seconds
    labels: list[list[str]]  # class name per segment
    labels_all: list[list[str]]  # video-level label set
    ambiguous: list[tuple[str, float, float]] = field(default_factory=list)  # (video, start_s, end_s)
    durations: list[float] | None = None

    def class_index(self, name: str) -> int:
        try:
            return self.classlist.index(name)
        except ValueError:
            raise Co2Error(f"unknown class name {name!r} (not in classlist.npy)") from None


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_npy(folder: Path, name: str, required: bool = True) -> np.ndarray | None:
    path = folder / name
    if not path.is_file():
        if required:
            raise Co2Error(f"annotation folder {folder} lacks {name}")
        return None
    try:
        # The W-TALC files are object arrays of lists/strings (pickles): read with the numpy-only unpickler.
        return load_npy(path, encoding="latin1")
    except Refused as exc:
        raise Co2Error(f"{path} was refused by the safe unpickler: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise Co2Error(f"cannot read {path}: {type(exc).__name__}") from None


def read_ambiguous(path: Path) -> list[tuple[str, float, float]]:
    """`Ambiguous_test.txt`: 'video  start end' lines (two spaces after the name; split on any whitespace)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            entries.append((fields[0], float(fields[1]), float(fields[2])))
    return entries


def load_annotations(folder: str | Path) -> Annotations:
    """Read a W-TALC annotation folder; shapes and lengths are checked with clear errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Co2Error(f"annotation folder not found: {folder}")
    classlist = [_decode(c) for c in _load_npy(folder, "classlist.npy")]
    videonames = [_decode(v) for v in _load_npy(folder, "videoname.npy")]
    subsets = [_decode(s) for s in _load_npy(folder, "subset.npy")]
    segments = [[(float(s[0]), float(s[1])) for s in video] for video in _load_npy(folder, "segments.npy")]
    labels = [[_decode(lab) for lab in video] for video in _load_npy(folder, "labels.npy")]
    labels_all_arr = _load_npy(folder, "labels_all.npy", required=False)
    labels_all = ([[_decode(lab) for lab in video] for video in labels_all_arr] if labels_all_arr is not None
                  else [sorted(set(v)) for v in labels])
    duration_arr = _load_npy(folder, "duration.npy", required=False)
    n = len(videonames)
    for name, values in (("subset.npy", subsets), ("segments.npy", segments), ("labels.npy", labels),
                         ("labels_all.npy", labels_all)):
        if len(values) != n:
            raise Co2Error(f"{folder}: {name} has {len(values)} entries but videoname.npy has {n}")
    for video, segs, labs in zip(videonames, segments, labels):
        if len(segs) != len(labs):
            raise Co2Error(f"{folder}: video {video} has {len(segs)} segments but {len(labs)} segment labels")
        unknown = [lab for lab in labs if lab not in classlist]
        if unknown:
            raise Co2Error(f"{folder}: video {video} has unknown class {unknown[0]!r}")
    return Annotations(classlist, videonames, subsets, segments, labels, labels_all,
                       read_ambiguous(folder / "Ambiguous_test.txt"),
                       [float(d) for d in np.ravel(duration_arr)] if duration_arr is not None else None)


@dataclass(frozen=True)
class GroundTruth:
    video: str
    start: float  # snippets (quantised, integers) or seconds (official protocol)
    end: float
    label: int


def ground_truth(ann: Annotations, subset: str, quantize: bool = True) -> list[GroundTruth]:
    """All segments of `subset` in annotation order: in snippets rounded as the original does (`quantize`), else
    in seconds as annotated. Ambiguous segments are kept, as in the original; zero-length ones after rounding
    stay too (they can never match but count as positives)."""
    rows = []
    for video, sub, segs, labs in zip(ann.videonames, ann.subsets, ann.segments, ann.labels):
        if sub != subset:
            continue
        for (start, end), lab in zip(segs, labs):
            bounds = (quantize_to_snippet(start), quantize_to_snippet(end)) if quantize else (start, end)
            rows.append(GroundTruth(video, *bounds, ann.class_index(lab)))
    if not rows:
        raise Co2Error(f"the annotations have no ground-truth segments in subset {subset!r}")
    return rows


def filter_ambiguous(predictions: Sequence[Detection],
                     ambiguous: Iterable[tuple[str, float, float]]) -> list[Detection]:
    """Drop predictions whose snippets range(int(s), int(e)) share a snippet with an ambiguous range
    range(round(a * 25/16), round(b * 25/16)) of the same video (the original `filter_segments`)."""
    by_video: dict[str, list[tuple[int, int]]] = {}
    for video, start_s, end_s in ambiguous:
        by_video.setdefault(video, []).append((quantize_to_snippet(start_s), quantize_to_snippet(end_s)))
    kept = []
    for p in predictions:
        lo, hi = int(p.start), int(p.end)
        if not any(max(lo, a) < min(hi, b) for a, b in by_video.get(p.video, ())):
            kept.append(p)
    return kept


def segment_iou(target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Continuous tIoU (no +1) of one [start, end] with each row of candidates (n, 2)."""
    inter = (np.minimum(target[1], candidates[:, 1]) - np.maximum(target[0], candidates[:, 0])).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(float) / union


def interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
    """VOC-2011 all-points interpolated average precision."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision(gts: Sequence[GroundTruth], preds: Sequence[Detection],
                      thresholds: Sequence[float]) -> np.ndarray:
    """AP of one class at each tIoU threshold (the original `compute_average_precision_detection`).

    Predictions are visited by descending score (numpy's default argsort, reversed); each visits its video's
    ground truths by descending tIoU, stops at the first tIoU < thr (tIoU == thr matches) and skips matched ones.
    """
    ap = np.zeros(len(thresholds))
    if not preds:
        return ap
    npos = float(len(gts))
    gt_by_video: dict[str, list[int]] = {}
    for i, g in enumerate(gts):
        gt_by_video.setdefault(g.video, []).append(i)
    gt_bounds = np.array([[g.start, g.end] for g in gts], dtype=np.float64).reshape(-1, 2)
    order = np.array([p.score for p in preds], dtype=np.float64).argsort()[::-1]
    lock = np.full((len(thresholds), len(gts)), -1)
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros((len(thresholds), len(preds)))
    for rank, pi in enumerate(order):
        pred = preds[pi]
        members = gt_by_video.get(pred.video)
        if members is None:
            fp[:, rank] = 1
            continue
        tiou = segment_iou(np.array([pred.start, pred.end], dtype=np.float64), gt_bounds[members])
        by_tiou = tiou.argsort()[::-1]
        for t, thr in enumerate(thresholds):
            for j in by_tiou:
                if tiou[j] < thr:
                    fp[t, rank] = 1
                    break
                if lock[t, members[j]] >= 0:
                    continue
                tp[t, rank] = 1
                lock[t, members[j]] = rank
                break
            if fp[t, rank] == 0 and tp[t, rank] == 0:
                fp[t, rank] = 1
    tp_cum = np.cumsum(tp, axis=1).astype(float)
    fp_cum = np.cumsum(fp, axis=1).astype(float)
    recall = tp_cum / npos
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array([interpolated_prec_rec(precision[t], recall[t]) for t in range(len(thresholds))])


@dataclass
class DetectionResult:
    thresholds: tuple[float, ...]
    map: np.ndarray  # (n_thresholds,) fractions
    ap: np.ndarray  # (n_thresholds, n_classes_with_gt)
    classes: list[int]  # class index of each ap column

    def averages(self) -> dict[str, float]:
        """THUMOS14-style averages over the first 5, 7 and 9 thresholds, or the mean of all for other lists."""
        if tuple(self.thresholds) == THUMOS_TIOU:
            return {name: float(np.mean(self.map[:n])) for name, n in THUMOS_AVERAGES.items()}
        lo, hi = self.thresholds[0], self.thresholds[-1]
        return {f"{lo:g}:{hi:g}": float(np.mean(self.map))}

    def to_json(self) -> dict:
        return {"map": {f"{t:g}": float(m) for t, m in zip(self.thresholds, self.map)}, "average": self.averages()}


def detection_map(predictions: Sequence[Detection], ann: Annotations, subset: str = "test",
                  thresholds: Sequence[float] = THUMOS_TIOU, filter_ambiguous_segments: bool = True,
                  quantize_ground_truth: bool = True) -> DetectionResult:
    """Detection mAP over the classes that have ground truth in `subset` (all 20 for THUMOS14).

    The original protocol: predictions in snippets, ground truth quantised to snippets, and (with
    `filter_ambiguous_segments`) predictions touching `Ambiguous_test.txt` ranges dropped first, as the original's
    proposal stage does before its evaluator sees them. With `quantize_ground_truth=False`, predictions and ground
    truth are both in seconds (ActivityNet's official evaluator).
    """
    for p in predictions:
        if not (math.isfinite(p.start) and math.isfinite(p.end) and math.isfinite(p.score)):
            raise Co2Error(f"prediction for {p.video} has a non-finite value")
        if not 0 <= p.label < len(ann.classlist):
            raise Co2Error(f"prediction label {p.label} is not a class index 0..{len(ann.classlist) - 1}")
    if filter_ambiguous_segments:
        predictions = filter_ambiguous(predictions, ann.ambiguous)
    gts = ground_truth(ann, subset, quantize_ground_truth)
    classes = sorted({g.label for g in gts})
    ap = np.zeros((len(thresholds), len(classes)))
    for column, c in enumerate(classes):
        ap[:, column] = average_precision([g for g in gts if g.label == c],
                                          [p for p in predictions if p.label == c], thresholds)
    return DetectionResult(tuple(thresholds), ap.mean(axis=1), ap, classes)


OFFICIAL_THRESHOLDS = {"thumos14": THUMOS_TIOU, "activitynet12": tuple(float(t) for t in np.linspace(0.5, 0.95, 10))}
"""tIoU thresholds of the `official` protocol: THUMOS14's usual 0.1..0.9, ActivityNet's evaluator default
np.linspace(0.5, 0.95, 10) (whose 0.8999999999999999 is not the original's literal 0.9)."""


def evaluate_protocol(predictions: Sequence[Detection], ann: Annotations, dataset: str, protocol: str = "original",
                      subset: str | None = None, filter_ambiguous_segments: bool | None = None) -> DetectionResult:
    """mAP under a named protocol. `predictions` are in snippets for 'original', in seconds for 'official'.

    original: the CO2-Net evaluator (ground truth rounded to snippets, ambiguous filter per dataset unless
    `filter_ambiguous_segments` says otherwise): the paper-comparable numbers.
    official: ActivityNet's `eval_detection.py` on seconds: no rounding, no ambiguous filter.
    """
    spec = PROTOCOLS[dataset]
    subset = subset or spec.eval_subset
    if protocol == "official":
        return detection_map(predictions, ann, subset, OFFICIAL_THRESHOLDS[dataset], False, False)
    if protocol != "original":
        raise Co2Error(f"unknown protocol {protocol!r}: use original or official")
    use_filter = spec.filter_ambiguous if filter_ambiguous_segments is None else filter_ambiguous_segments
    return detection_map(predictions, ann, subset, spec.thresholds, use_filter, True)


# ---------------------------------------------------------------------------------------------------------------
# Reading predictions


def _parse_label(value: str, classlist: Sequence[str]) -> int:
    """A class index ('3' or '3.0', the original's) or a class name (`co2 localize` output)."""
    try:
        number = float(value)
    except ValueError:
        if value in classlist:
            return list(classlist).index(value)
        raise ValueError(f"unknown class {value!r}") from None
    if number != int(number):
        raise ValueError(f"label {value!r} is not a class index")
    return int(number)


def read_predictions_csv(path: str | Path, classlist: Sequence[str], units: str | None = None,
                         target: str = "snippets") -> tuple[list[Detection], bool]:
    """Read predictions from CSV; returns (predictions in snippets, written by `co2 localize`?).

    Two headers are understood: the original's `video-id,t-start,t-end,label,score` (label = class index,
    times in snippets unless `units="seconds"`) and `co2 localize`'s `video-id,start_s,end_s,label,score`
    (seconds, label = class name). Floats are parsed exactly (Python float = round-trip).
    """
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise Co2Error(f"{path} is empty: expected a header video-id,t-start,t-end,label,score")
        fields = set(reader.fieldnames)
        ours = {"start_s", "end_s"} <= fields
        start_key, end_key = ("start_s", "end_s") if ours else ("t-start", "t-end")
        missing = {"video-id", start_key, end_key, "label", "score"} - fields
        if missing:
            raise Co2Error(f"{path} lacks column(s) {', '.join(sorted(missing))}")
        if ours and units == "snippets":
            raise Co2Error(f"{path} has start_s/end_s columns (seconds), not snippets as asked")
        scale = _unit_scale("seconds" if ours else (units or "snippets"), target)
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                start, end = float(row[start_key]), float(row[end_key])
                check_segment(start, end, f"{path}:{line}")
                label, video = (row["label"], row["video-id"]) if not ours else (
                    csv_text_value(row["label"]), csv_text_value(row["video-id"]))  # our formula guard undone
                rows.append(Detection(_parse_label(label, classlist), float(row["score"]), scale(start), scale(end),
                                      video))
            except (TypeError, ValueError) as exc:
                raise Co2Error(f"{path}:{line}: cannot parse row ({exc})") from None
    return rows, ours


def check_segment(start: float, end: float, where: str) -> None:
    """One line for a segment the original evaluator would score silently: negative, reversed or not finite."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise Co2Error(f"{where}: segment [{start}, {end}] is not finite")
    if start < 0:
        raise Co2Error(f"{where}: segment [{start}, {end}] starts before 0")
    if end < start:
        raise Co2Error(f"{where}: segment [{start}, {end}] ends before it starts")


def beyond_durations(predictions: Sequence[Detection], ann: Annotations, unit: str,
                     slack_snippets: float = 1.0) -> str | None:
    """A one-line note when predictions end beyond their video (duration.npy) by more than one snippet of slack
    (features may round the last snippet up), else None. They are still scored, as the original scores them.
    `unit`: the predictions' time unit, snippets or seconds."""
    if ann.durations is None:
        return None
    durations = dict(zip(ann.videonames, ann.durations))
    slack = slack_snippets if unit == "snippets" else float(snippets_to_seconds(slack_snippets))
    beyond = []
    for p in predictions:
        limit = durations.get(p.video)
        if limit is not None:
            limit_in_unit = seconds_to_snippets(limit) if unit == "snippets" else limit
            if p.end > limit_in_unit + slack:
                beyond.append((p, limit_in_unit))
    if not beyond:
        return None
    p, limit = beyond[0]
    return (f"{len(beyond)} prediction(s) end beyond their video's duration (duration.npy), e.g. {p.video} "
            f"[{p.start:g}, {p.end:g}] {unit} in a {limit:g}-{unit} video; they are scored as the original does")


def _unit_scale(units: str, target: str = "snippets") -> Callable[[float], float]:
    """The conversion from the file's time unit to `target` (snippets or seconds)."""
    if units not in ("snippets", "seconds"):
        raise Co2Error(f"unknown units {units!r}: use snippets or seconds")
    if units == target:
        return float
    return seconds_to_snippets if target == "snippets" else snippets_to_seconds


def read_predictions_json(path: str | Path, classlist: Sequence[str], units: str = "seconds",
                          target: str = "snippets") -> list[Detection]:
    """ActivityNet results JSON ({"results": {video: [{"label": name, "score", "segment": [s, e]}]}})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Co2Error(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise Co2Error(f"{path} is not an ActivityNet results file (no 'results' object)")
    scale = _unit_scale(units, target)
    rows = []
    for video, items in data["results"].items():
        for item in items:
            try:
                label = _parse_label(str(item["label"]), classlist)
                start, end = (float(v) for v in item["segment"])
                check_segment(start, end, f"{path}: video {video}")
                rows.append(Detection(label, float(item["score"]), scale(start), scale(end), video))
            except ValueError as exc:
                raise Co2Error(f"{path}: video {video}: {exc}") from None
            except (KeyError, TypeError):
                raise Co2Error(f"{path}: malformed entry for video {video}: {item!r}") from None
    return rows


def read_predictions(path: str | Path, classlist: Sequence[str], units: str | None = None,
                     target: str = "snippets") -> tuple[list[Detection], bool]:
    """CSV or ActivityNet JSON, chosen by content. Returns (detections in `target` units, written by
    `co2 localize`?); JSON results are taken as `co2 localize` output (seconds unless `units` says otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise Co2Error(f"predictions file not found: {path}")
    data = path.read_bytes()
    head = data[:64].lstrip()
    if not head:
        raise Co2Error(f"predictions file is empty: {path}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Co2Error(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded): expected CSV or JSON") \
            from None
    if head.startswith(b"{"):
        return read_predictions_json(path, classlist, units or "seconds", target), True
    return read_predictions_csv(path, classlist, units, target)


# ---------------------------------------------------------------------------------------------------------------
# Classification mAP


def _class_ap(conf: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-conf)
    hits = labels[order] == 1
    tp = np.cumsum(hits).astype("float32")
    fp = np.cumsum(labels[order] != 1).astype("float32")
    npos = np.sum(labels)
    precision = tp / (fp + tp)
    return np.sum(hits.astype("float32") * precision) / npos


def classification_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """The original `getClassificationMAP`: mean over label columns of AP, as a percentage (x100).

    scores may carry an extra background column; only the label columns are used.
    """
    aps = [_class_ap(scores[:, i], labels[:, i]) for i in range(labels.shape[1])]
    return float(100 * sum(aps) / len(aps))
