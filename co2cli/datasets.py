"""Training data for CO2-Net: feature videos with W-TALC annotations, and the original's batch sampler.

Two on-disk layouts are read, both paired with a W-TALC annotation folder (see `evaluate.load_annotations`):

* **W-TALC**: `<Name>-I3D-JOINTFeatures.npy`, an object array (pickled, the standard distribution format) of
  (T_i, 2048) float arrays in `videoname.npy` order; its annotation folder `<Name>-Annotations/` sits beside it.
* **Feature folder**: one `<video>.npy` (T, 2048) per video name in `videoname.npy`, as `co2 extract-features`
  writes them, with the recipe `<video>.json` beside each.

T counts snippets (16 frames at 25 fps = 0.64 s); ground truth stays in seconds in the annotations.
The sampler reproduces the original `load_data(n_similar=3)` + `random_perturb` draw for draw, on an explicit
`np.random.RandomState` (the legacy generator the original seeds with `np.random.seed`), whose state is saved
and restored for resumable training. No global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2cli.errors import Co2Error
from co2cli.evaluate import Annotations, load_annotations
from co2cli.features import FEATURE_DIM, load_features
from co2cli.safe_pickle import Refused, load_npy
from co2cli.timebase import FPS, SNIPPET_FRAMES, SNIPPET_SECONDS

JOINT_SUFFIX = "-I3D-JOINTFeatures.npy"


@dataclass
class FeatureDataset:
    """Videos in annotation order. `features[i]` is None for videos outside the loaded subsets."""

    annotations: Annotations
    features: list[np.ndarray | None]  # (T_i, 2048) float32, T_i in snippets
    labels: np.ndarray  # (N, C) float32 multi-hot of labels_all.npy
    source: str

    @property
    def classlist(self) -> list[str]:
        return self.annotations.classlist

    @property
    def videonames(self) -> list[str]:
        return self.annotations.videonames

    def indices(self, subset: str) -> list[int]:
        """Annotation rows of `subset`, in file order (the original's trainidx / testidx)."""
        return [i for i, s in enumerate(self.annotations.subsets) if s == subset]


# ---------------------------------------------------------------------------------------------------------------
# Loading


def default_annotations(features: Path) -> Path:
    """`<Name>-Annotations/` beside a `<Name>-I3D-JOINTFeatures.npy` file (the W-TALC download's layout)."""
    if not features.name.endswith(JOINT_SUFFIX):
        raise Co2Error(f"--annotations is needed: {features.name} is not named <Name>{JOINT_SUFFIX}")
    return features.with_name(features.name[: -len(JOINT_SUFFIX)] + "-Annotations")


def multi_hot(ann: Annotations) -> np.ndarray:
    """(N, C) float32 video labels from labels_all.npy; an unknown class name is one clear error."""
    labels = np.zeros((len(ann.videonames), len(ann.classlist)), np.float32)
    index = {name: i for i, name in enumerate(ann.classlist)}
    for row, (video, names) in enumerate(zip(ann.videonames, ann.labels_all)):
        for name in names:
            if name not in index:
                raise Co2Error(f"labels_all.npy: video {video} has unknown class {name!r} (not in classlist.npy)")
            labels[row, index[name]] = 1
    return labels


def _check_array(arr: object, video: str, where: str, dim: int) -> np.ndarray:
    """One video's features as float32 (T, dim) or a one-line error naming the video."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise Co2Error(f"{where}: features of video {video} are not a numeric array ({type(arr).__name__})")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise Co2Error(f"{where}: features of video {video} have shape {tuple(arr.shape)}, expected (T, {dim}) "
                       f"with RGB in channels 0..{dim // 2 - 1} and flow in {dim // 2}..{dim - 1}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise Co2Error(f"{where}: features of video {video} contain NaN or infinite values")
    return out


def load_joint_features(path: Path) -> list[object]:
    """The W-TALC `*-I3D-JOINTFeatures.npy` object array as a list (one entry per annotated video).

    The standard format is a pickle; it is read with the numpy-only unpickler, so a tampered file cannot run
    code. encoding='bytes' reads the original Python 2 pickles, as the original loader does.
    """
    if not path.is_file():
        raise Co2Error(f"features file not found: {path}")
    try:
        arr = load_npy(path, encoding="bytes")
    except Refused as exc:
        raise Co2Error(f"{path} was refused by the safe unpickler: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise Co2Error(f"{path} is not a readable .npy features file ({type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim == 0:
        raise Co2Error(f"{path} is not an array of per-video features")
    if arr.dtype != object and arr.ndim != 3:
        raise Co2Error(f"{path} has shape {arr.shape}: expected an object array of (T, {FEATURE_DIM}) arrays")
    return list(arr)


def load_dataset(features: str | Path, annotations: str | Path | None = None,
                 subsets: Sequence[str] | None = None, dim: int = FEATURE_DIM) -> FeatureDataset:
    """Features + annotations, validated. `features` is a W-TALC JOINTFeatures file or a per-video folder.

    Only videos of `subsets` (all when None) are loaded and checked; others get None.
    """
    features = Path(features)
    if not features.exists():
        raise Co2Error(f"features not found: {features}")
    ann_path = Path(annotations) if annotations is not None else (
        default_annotations(features) if features.is_file() else None)
    if ann_path is None:
        raise Co2Error("--annotations is needed with a folder of per-video features")
    ann = load_annotations(ann_path)
    labels = multi_hot(ann)
    wanted = [subsets is None or s in subsets for s in ann.subsets]
    if features.is_file():
        raw = load_joint_features(features)
        if len(raw) != len(ann.videonames):
            raise Co2Error(f"{features.name} holds {len(raw)} videos but {ann_path} annotates "
                           f"{len(ann.videonames)} (videoname.npy): they must be the same list, in the same order")
        feats = [_check_array(raw[i], video, features.name, dim) if wanted[i] else None
                 for i, video in enumerate(ann.videonames)]
    else:
        feats = [_load_video_file(features, video, dim) if wanted[i] else None
                 for i, video in enumerate(ann.videonames)]
    return FeatureDataset(ann, feats, labels, str(features))


def _load_video_file(folder: Path, video: str, dim: int) -> np.ndarray:
    """`<folder>/<video>.npy` written by `co2 extract-features`; its recipe must say 0.64 s per snippet."""
    path = folder / f"{video}.npy"
    if not path.is_file():
        raise Co2Error(f"no features for video {video}: {path} is missing (videoname.npy names it)")
    loaded = load_features(path, dim)
    if loaded.snippet_seconds != SNIPPET_SECONDS:
        raise Co2Error(f"{path.name} was extracted at {float(loaded.snippet_seconds):g} s per snippet; training "
                       f"and evaluation assume {SNIPPET_FRAMES}/{FPS} = 0.64 s (the annotations' 25/16 conversion)")
    return loaded.features


# ---------------------------------------------------------------------------------------------------------------
# The original's sampler


def random_perturb(length: int, max_seqlen: int, rng: np.random.RandomState) -> np.ndarray:
    """The original `random_perturb`: `max_seqlen` snippet indices spread over [0, length), one random pick in
    each stretch [int(i L / N), int((i + 1) L / N)] (so short videos repeat snippets, long ones skip).

    The original draws `np.random.choice(range(lo, hi + 1))`; for a RandomState that is exactly
    `lo + randint(0, hi + 1 - lo)` (same value, same state advance), which is 3x faster. Stretches of one
    snippet draw nothing. Returns int64 indices, (max_seqlen,).
    """
    if max_seqlen == length:
        return np.arange(max_seqlen)
    lo = (np.arange(max_seqlen) * length / max_seqlen).astype(np.int64)  # int() of non-negative floats
    out = lo.copy()
    randint = rng.randint
    for i in range(max_seqlen - 1):
        if lo[i] != lo[i + 1]:
            out[i] = lo[i] + randint(0, lo[i + 1] - lo[i] + 1)
    if lo[-1] < length - 1:
        out[-1] = lo[-1] + randint(0, length - lo[-1])
    return out


def trim_batch(features: np.ndarray) -> np.ndarray:
    """The original's `features[:, :max(seq_len)]`, seq_len = number of snippets with any non-zero channel.

    Quirk kept: it counts non-zero snippets instead of finding the last one, so a video with all-zero snippets
    inside can lose trailing snippets when it is the longest of the batch.
    """
    seq_len = np.sum(np.max(np.abs(features), axis=2) > 0, axis=1)
    return features[:, : int(np.max(seq_len))]


class PairSampler:
    """The original `load_data(n_similar=3, similar_size=2)`: 3 classes drawn with replacement, 2 distinct videos
    of each (batch rows 0-5, the pairs the co-activity loss compares), then batch_size - 6 videos drawn from all
    training videos with replacement; every video resampled to `max_seqlen` snippets by `random_perturb`.

    `train_videos` are dataset rows in file order; `class_members[c]` lists the dataset rows (in file order) whose
    labels contain class c. With the same rows and RNG state the draws equal the original's.
    """

    def __init__(self, features: Sequence[np.ndarray], labels: np.ndarray, train_videos: Sequence[int],
                 class_members: Sequence[Sequence[int]], batch_size: int, max_seqlen: int,
                 rng: np.random.RandomState, num_similar: int = 3, similar_size: int = 2,
                 class_names: Sequence[str] | None = None) -> None:
        if max_seqlen < 1:
            raise Co2Error(f"--max-seqlen must be at least 1, got {max_seqlen}")
        if not train_videos:
            raise Co2Error("there are no training videos")
        self.features = features
        self.labels = labels
        self.train_videos = list(train_videos)
        self.class_members = [list(m) for m in class_members]
        # The original grows a too-small batch to hold the similar pairs.
        self.batch_size = max(batch_size, num_similar * similar_size)
        self.max_seqlen = max_seqlen
        self.rng = rng
        self.num_similar = num_similar
        self.similar_size = similar_size
        short = [c for c, m in enumerate(self.class_members) if len(m) < similar_size]
        if short:
            name = class_names[short[0]] if class_names is not None else f"#{short[0]}"
            raise Co2Error(f"class {name} has {len(self.class_members[short[0]])} training video(s); the pair "
                           f"sampler needs at least {similar_size} per class")

    def draw_rows(self) -> list[int]:
        """Dataset rows of one batch (RNG draws in the original's order)."""
        rows: list[int] = []
        for class_id in self.rng.choice(len(self.class_members), size=self.num_similar):
            members = self.class_members[class_id]
            for k in self.rng.choice(len(members), size=self.similar_size, replace=False):
                rows.append(members[k])
        rest = self.rng.choice(len(self.train_videos), size=self.batch_size - self.similar_size * self.num_similar)
        rows.extend(self.train_videos[r] for r in rest)
        return rows

    def sample(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """One batch: features (B, T, 2048) float32 with T <= max_seqlen snippets (after `trim_batch`),
        labels (B, C) float32 multi-hot, and the dataset rows used."""
        rows = self.draw_rows()
        feats = []
        for row in rows:
            video = self.features[row]
            feats.append(video[random_perturb(video.shape[0], self.max_seqlen, self.rng)])
        batch = trim_batch(np.asarray(feats, dtype=np.float32))
        return batch, self.labels[rows].astype(np.float32), rows

    # RandomState.get_state() as plain values (no pickled numpy objects), for a weights_only checkpoint.
    def rng_state(self) -> dict:
        name, keys, pos, has_gauss, cached = self.rng.get_state(legacy=True)
        return {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos),
                "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}

    def set_rng_state(self, state: dict) -> None:
        self.rng.set_state((state["name"], np.array(state["keys"], dtype=np.uint32), state["pos"],
                            state["has_gauss"], state["cached_gaussian"]))


def class_members(labels: np.ndarray, rows: Sequence[int]) -> list[list[int]]:
    """For each class, the dataset rows among `rows` (kept in order) whose video labels contain it."""
    members: list[list[int]] = [[] for _ in range(labels.shape[1])]
    for row in rows:
        for c in np.flatnonzero(labels[row]):
            members[int(c)].append(int(row))
    return members
