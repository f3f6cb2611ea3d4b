"""Seeded synthetic weakly labelled feature videos in the W-TALC layout (for tests, learning checks, benchmarks).

What is written (`write_synthetic`), exactly like the real THUMOS14 / ActivityNet1.2 W-TALC downloads:

* `<name>-I3D-JOINTFeatures.npy`: an object array of (T_i, 2048) float32 arrays, one per video, T_i snippets
  (one snippet = 16 frames at 25 fps = 0.64 s); RGB in channels 0..1023, flow in 1024..2047.
* `<name>-Annotations/`: classlist.npy, videoname.npy, subset.npy (bytes arrays), segments.npy (seconds),
  labels.npy, labels_all.npy (object arrays of lists), duration.npy (seconds, (N, 1)) and, for the THUMOS layout,
  Ambiguous_test.txt ('video  start end' in seconds).

How a video is made (so that localization has to be learnt, not read off one channel):

* Every class has a sparse non-negative RGB prototype and a flow prototype. Classes come in pairs (2g, 2g+1)
  whose RGB prototypes share most active channels, so RGB alone barely tells the pair apart; flow does.
* Background snippets have their own sparse prototype plus the RGB *context* of the video's classes (the scene:
  a pool for diving), so the video label is visible everywhere but the action is not. Their flow is weaker
  (less motion) and every action shares a common flow "motion" component: class-agnostic actionness, as in
  real I3D flow features.
* Every snippet gets temporally correlated Gaussian noise (AR(1)), every video a small channel offset; values are
  clipped at 0 like post-ReLU I3D features. Boundary snippets of an action are half action, half background.
* Ground truth: 1 class per video mostly (2 or 3 sometimes), several non-overlapping instances per class, their
  bounds in seconds = snippet index x 0.64 with a jitter below a quarter snippet (so round(s x 25 / 16) gives the
  planted snippet back). Ambiguous test entries are weak unannotated instances, listed in Ambiguous_test.txt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from co2cli import classes as class_lists
from co2cli.features import FEATURE_DIM
from co2cli.timebase import SNIPPET_SECONDS

ACTIVE_CHANNELS = 48  # non-zero channels of each prototype (per modality)
PAIR_SHARED = 0.75  # fraction of RGB channels a class shares with its pair partner
MOTION = 0.5  # amplitude of the flow component all actions share
BACKGROUND_FLOW = 0.4  # background flow prototype amplitude relative to actions'.


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Lengths in snippets; `noise` is the per-channel noise std (signal amplitude is ~1)."""

    layout: str = "thumos14"  # or "activitynet12"
    n_classes: int = 20
    n_train: int = 80  # THUMOS 'validation' / ActivityNet 'training' videos
    n_test: int = 40  # THUMOS 'test' / ActivityNet 'validation' videos
    min_snippets: int = 50
    max_snippets: int = 700
    noise: float = 0.6
    context: float = 0.5  # amplitude of the class scene context in background snippets
    max_instance_snippets: int = 80
    ambiguous_per_video: float = 0.3  # expected weak unannotated instances per test video (THUMOS layout)
    seed: int = 0
    feature_dim: int = FEATURE_DIM  # RGB in the first half; other than 2048 only for cheap learning checks

    @property
    def name(self) -> str:
        return "SynthThumos14reduced" if self.layout == "thumos14" else "SynthActivityNet1.2"

    @property
    def subsets(self) -> tuple[str, str]:
        """(train subset, test subset) names as the original's datasets use them."""
        return ("validation", "test") if self.layout == "thumos14" else ("training", "validation")


@dataclass
class SyntheticVideo:
    name: str
    subset: str
    features: np.ndarray  # (T, 2048) float32
    segments: list[tuple[float, float]]  # seconds
    labels: list[str]  # class name per segment
    ambiguous: list[tuple[float, float]] = field(default_factory=list)  # seconds


@dataclass(frozen=True)
class SyntheticPaths:
    features: Path  # the JOINTFeatures .npy
    annotations: Path  # the annotation folder


def class_names(spec: SyntheticSpec) -> list[str]:
    """THUMOS14's real names for a 20-class THUMOS layout (so `--classes thumos` fits), else generic names."""
    if spec.layout == "thumos14" and spec.n_classes == 20:
        return class_lists.thumos14()
    prefix = "action" if spec.layout == "thumos14" else "activity"
    return [f"{prefix}_{i:03d}" for i in range(spec.n_classes)]


@dataclass
class _Prototypes:
    rgb: np.ndarray  # (C, 1024) action RGB
    flow: np.ndarray  # (C, 1024)
    context: np.ndarray  # (C, 1024) RGB scene context
    bg_rgb: np.ndarray  # (1024,)
    bg_flow: np.ndarray  # (1024,)
    motion: np.ndarray  # (1024,) flow shared by all actions


def _sparse(rng: np.random.Generator, dim: int, channels: np.ndarray) -> np.ndarray:
    vec = np.zeros(dim, np.float32)
    vec[channels] = rng.uniform(0.6, 1.4, len(channels))
    return vec


def _prototypes(rng: np.random.Generator, n_classes: int, dim: int) -> _Prototypes:
    """Sparse prototypes of `dim` channels (one modality), ACTIVE_CHANNELS non-zero (fewer for small dims)."""
    active = min(ACTIVE_CHANNELS, dim // 4)

    def draw() -> np.ndarray:
        return _sparse(rng, dim, rng.choice(dim, active, replace=False))

    rgb = np.zeros((n_classes, dim), np.float32)
    shared = int(active * PAIR_SHARED)
    for pair in range(0, n_classes, 2):
        common = rng.choice(dim, shared, replace=False)
        for c in range(pair, min(pair + 2, n_classes)):
            own = rng.choice(np.setdiff1d(np.arange(dim), common), active - shared, replace=False)
            rgb[c] = _sparse(rng, dim, np.concatenate([common, own]))
    flow = np.stack([draw() for _ in range(n_classes)])
    context = np.stack([draw() for _ in range(n_classes)])
    bg_rgb = draw()
    bg_flow = BACKGROUND_FLOW * draw()
    motion = MOTION * draw()
    return _Prototypes(rgb, flow, context, bg_rgb, bg_flow, motion)


def _n_labels(rng: np.random.Generator, layout: str, n_classes: int) -> int:
    weights = (0.7, 0.25, 0.05) if layout == "thumos14" else (0.9, 0.1, 0.0)
    return min(n_classes, int(rng.choice(3, p=weights)) + 1)


def _place(rng: np.random.Generator, length: int, wanted: int, max_len: int,
           taken: np.ndarray) -> list[tuple[int, int]]:
    """Up to `wanted` non-overlapping [start, end) snippet intervals in free space (one free snippet between)."""
    found = []
    for _ in range(wanted * 20):
        if len(found) == wanted:
            break
        size = int(rng.integers(4, max(5, min(max_len, length // 3)) + 1))
        if size >= length:
            continue
        start = int(rng.integers(0, length - size + 1))
        lo, hi = max(0, start - 1), min(length, start + size + 1)
        if taken[lo:hi].any():
            continue
        taken[start:start + size] = True
        found.append((start, start + size))
    return sorted(found)


def _noise(rng: np.random.Generator, length: int, dim: int, std: float, rho: float = 0.5) -> np.ndarray:
    """AR(1) Gaussian noise along time with stationary std `std`, (T, dim) float32."""
    white = rng.standard_normal((length, dim), dtype=np.float32)
    out = np.empty_like(white)
    out[0] = white[0]
    scale = np.float32(np.sqrt(1 - rho * rho))
    for t in range(1, length):
        out[t] = rho * out[t - 1] + scale * white[t]
    return out * np.float32(std)


def _video(rng: np.random.Generator, spec: SyntheticSpec, protos: _Prototypes, names: list[str], name: str,
           subset: str, is_test: bool, first_class: int | None) -> SyntheticVideo:
    length = int(round(np.exp(rng.uniform(np.log(spec.min_snippets), np.log(spec.max_snippets)))))
    classes = rng.choice(spec.n_classes, _n_labels(rng, spec.layout, spec.n_classes), replace=False).tolist()
    if first_class is not None and first_class not in classes:
        classes[0] = first_class
    # The forced class is placed first, so it always gets an instance (later ones may find no room).
    classes = sorted(classes, key=lambda c: (c != first_class, c))
    # Foreground weight per snippet and class: 1 inside an instance, 0.5 on its first and last snippet.
    weight = np.zeros((length, spec.n_classes), np.float32)
    taken = np.zeros(length, bool)
    segments: list[tuple[float, float]] = []
    seg_labels: list[str] = []
    for c in classes:
        wanted = 1 + int(rng.poisson(length / 250)) if spec.layout == "thumos14" else 1 + int(rng.integers(0, 2))
        for start, end in _place(rng, length, wanted, spec.max_instance_snippets, taken):
            weight[start:end, c] = 1
            weight[start, c] = weight[end - 1, c] = 0.5
            jitter = rng.uniform(-0.2, 0.2, 2)
            segments.append((max(0.0, (start + jitter[0]) * float(SNIPPET_SECONDS)),
                             max(0.0, (end + jitter[1]) * float(SNIPPET_SECONDS))))
            seg_labels.append(names[c])
    ambiguous: list[tuple[float, float]] = []
    if is_test and spec.layout == "thumos14":
        for start, end in _place(rng, length, int(rng.poisson(spec.ambiguous_per_video)), 20, taken):
            weight[start:end, rng.choice(classes)] = 0.4  # weak, unannotated: neither right nor wrong
            ambiguous.append((round(start * float(SNIPPET_SECONDS), 1), round(end * float(SNIPPET_SECONDS), 1)))
    order = np.argsort([s for s, _ in segments], kind="stable")
    segments = [segments[i] for i in order]
    seg_labels = [seg_labels[i] for i in order]

    action = weight.sum(1, keepdims=True).clip(0, 1)  # how much of each snippet is action
    rgb = weight @ protos.rgb + (1 - action) * (protos.bg_rgb + spec.context * protos.context[classes].mean(0))
    flow = weight @ protos.flow + action * protos.motion + (1 - action) * protos.bg_flow
    offset = rng.normal(0, 0.1, spec.feature_dim).astype(np.float32)  # per-video appearance shift
    feats = np.concatenate([rgb, flow], 1) + 0.2 + offset + _noise(rng, length, spec.feature_dim, spec.noise)
    return SyntheticVideo(name, subset, np.maximum(feats, 0).astype(np.float32), segments, seg_labels, ambiguous)


def generate(spec: SyntheticSpec) -> tuple[list[str], list[SyntheticVideo]]:
    """(class names, videos) for `spec`; identical for identical specs (numpy Generator seeded with spec.seed)."""
    if spec.layout not in ("thumos14", "activitynet12"):
        raise ValueError(f"unknown layout {spec.layout!r}")
    if not 1 <= spec.n_classes or not 6 <= spec.min_snippets <= spec.max_snippets:
        raise ValueError("need n_classes >= 1 and 6 <= min_snippets <= max_snippets (instances last >= 4 snippets)")
    rng = np.random.default_rng(spec.seed)
    names = class_names(spec)
    if spec.feature_dim < 16 or spec.feature_dim % 2:
        raise ValueError("feature_dim must be even and at least 16")
    protos = _prototypes(rng, spec.n_classes, spec.feature_dim // 2)
    train_subset, test_subset = spec.subsets
    videos = []
    for i in range(spec.n_train + spec.n_test):
        is_test = i >= spec.n_train
        subset = test_subset if is_test else train_subset
        if spec.layout == "thumos14":
            name = f"video_{subset}_{(i - spec.n_train if is_test else i) + 1:07d}"
        else:
            name = f"v_synth{i:06d}"
        # The first 2 C training videos cover every class twice: the pair sampler needs two videos per class.
        first_class = i % spec.n_classes if i < min(spec.n_train, 2 * spec.n_classes) else None
        videos.append(_video(rng, spec, protos, names, name, subset, is_test, first_class))
    return names, videos


def _object_array(items: list) -> np.ndarray:
    """A 1-D object array whose elements are the given objects (np.array would stack equal-length lists)."""
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr


def write_wtalc(folder: str | Path, name: str, class_list: list[str], videos: list[SyntheticVideo],
                ambiguous_file: bool = True) -> SyntheticPaths:
    """Write videos in the W-TALC layout into `folder` (see the module docstring)."""
    folder = Path(folder)
    ann = folder / f"{name}-Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    features = folder / f"{name}-I3D-JOINTFeatures.npy"
    np.save(features, _object_array([v.features for v in videos]), allow_pickle=True)
    np.save(ann / "classlist.npy", np.array([c.encode() for c in class_list]))
    np.save(ann / "videoname.npy", np.array([v.name.encode() for v in videos]))
    np.save(ann / "subset.npy", np.array([v.subset.encode() for v in videos]))
    np.save(ann / "segments.npy", _object_array([[list(s) for s in v.segments] for v in videos]), allow_pickle=True)
    np.save(ann / "labels.npy", _object_array([list(v.labels) for v in videos]), allow_pickle=True)
    np.save(ann / "labels_all.npy", _object_array([sorted(set(v.labels)) for v in videos]), allow_pickle=True)
    np.save(ann / "duration.npy", np.array([[len(v.features) * float(SNIPPET_SECONDS)] for v in videos]))
    if ambiguous_file:
        (ann / "Ambiguous_test.txt").write_text("".join(f"{v.name}  {s} {e}\n" for v in videos for s, e in v.ambiguous))
    return SyntheticPaths(features, ann)


def write_synthetic(folder: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> SyntheticPaths:
    """Generate `spec` and write it into `folder` in the W-TALC layout; returns the two paths `co2 train` takes."""
    names, videos = generate(spec)
    return write_wtalc(folder, spec.name, names, videos, ambiguous_file=spec.layout == "thumos14")


def write_shuffled_labels(annotations: str | Path, target: str | Path, subset: str, seed: int = 0) -> Path:
    """Copy an annotation folder with the video-level labels (labels_all.npy) of `subset` permuted across its
    videos: the control of a learning check (segments and other subsets are unchanged)."""
    import shutil

    annotations, target = Path(annotations), Path(target)
    shutil.copytree(annotations, target, dirs_exist_ok=True)
    labels_all = np.load(annotations / "labels_all.npy", allow_pickle=True)
    subsets = np.array([s.decode() for s in np.load(annotations / "subset.npy")])
    rows = np.flatnonzero(subsets == subset)
    shuffled = labels_all.copy()
    shuffled[rows] = labels_all[np.random.default_rng(seed).permutation(rows)]
    np.save(target / "labels_all.npy", shuffled, allow_pickle=True)
    return target
