"""The Python API behind `co2 localize`: `load_model(...)`, then `model.localize(path) -> list[Segment]` or
`model.analyze(path) -> Analysis` (segments plus the curves behind them).

Inputs are videos (turned into features by the localizer's `FeatureSource`: `extract.FeatureExtractor`, the code
of `co2 extract-features`, cached per video and recipe in `<home>/features/`) or feature files (`.npy`,
(T, 2048), or (T, 1024) RGB-only for the Kinetics localizer). `LocalizeJob` runs a batch through
`runner.run_batch`, so its features can be computed on any executor. The library takes paths and returns results;
globbing, plotting and formatting belong to the CLI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from co2cli import classes as class_lists
from co2cli.batch import BatchItem
from co2cli.errors import Co2Error
from co2cli.extract import (FeatureExtractor, Progress, compute_features, feature_identity, installed_sha256,
                            worker_flow_backend)
from co2cli.features import FEATURE_DIM, STREAM_DIM, FeatureFile, is_complete, load_features, save
from co2cli.localize import Segment, co2_localize, kinetics_proposals, to_segments
from co2cli.runner import Compute, Computed, WholeResultWriter

if TYPE_CHECKING:
    import torch

    from co2cli.co2net import CO2Net

FEATURE_SUFFIXES = frozenset({".npy"})
PLOT_CLASSES = 3  # classes whose curves an Analysis keeps for plots
ACTIVITYNET_POOL = (60, 5)  # (max_seqlen, t) of the original ActivityNet1.2 run (run.sh, options.py): kernel 13


@dataclass
class Analysis:
    """One input's localization and the curves behind it (per snippet), for plots and review pages."""

    video: str
    """The name results are reported under (unique in a batch)."""
    segments: list[Segment]
    snippet_seconds: Fraction
    curves: dict[str, np.ndarray]
    """Class name -> (T,) activation of the classes worth showing (at most PLOT_CLASSES)."""
    attention: np.ndarray | None
    attention_label: str
    offset_s: float = 0.0
    """Video time of snippet 0."""
    source: Path | None = None
    """The input file (video or features)."""
    duration_s: float | None = None
    """The video's duration (None for feature files without a recipe)."""
    from_cache: bool = False
    """True when a video's features came from the feature cache."""
    snippets: int = 0
    recipe: dict = field(default_factory=dict)

    @property
    def timeline_s(self) -> float:
        """Seconds covered by the snippets (or the video's duration when known and longer)."""
        covered = float(self.snippets * self.snippet_seconds)
        return max(covered, self.duration_s or 0.0)


class FeatureSource:
    """The features of videos a localizer reads: from the feature cache, or extracted with `co2 extract-features`'
    code (by its own FeatureExtractor, built on first use, or by a batch pool's workers) and then cached."""

    def __init__(self, streams: Sequence[str], device: torch.device, batch_size: int = 4,
                 cache_dir: Path | None = None, use_cache: bool = True, max_side_px: int | None = None,
                 flow_backend: str = "auto", flow_region: str = "frame", flow_workers: int | None = None,
                 state_dicts: Mapping[str, Mapping] | None = None, precision: str = "fp32") -> None:
        self.streams = tuple(streams)
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.max_side_px = max_side_px
        self.flow_backend = flow_backend
        self.flow_region = flow_region
        self.flow_workers = flow_workers
        self.state_dicts = dict(state_dicts or {})
        """I3D weights already in memory (stream -> state dict), reused so no file is read twice."""
        self._extractor: FeatureExtractor | None = None

    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.streams, self.device, self.batch_size,
                                               max_side_px=self.max_side_px, state_dicts=self.state_dicts,
                                               flow_backend=self.flow_backend, flow_region=self.flow_region,
                                               flow_workers=self.flow_workers, precision=self.precision)
        return self._extractor

    def weights_sha256(self) -> dict[str, str | None]:
        """Weight name -> SHA-256 of the I3D weights features are made with (from the local store)."""
        return installed_sha256(self.streams)

    def identity(self, any_backend: bool = False) -> dict:
        """The recipe keys a cached file must match (`any_backend`: features made on Ray workers, which resolve
        `auto` on their own devices, so either backend is accepted then; an explicit backend always counts)."""
        from co2cli.flow import resolve_backend

        backend = (worker_flow_backend(self.flow_backend) if any_backend
                   else resolve_backend(self.flow_backend, self.device.type))
        return feature_identity(self.streams, self.weights_sha256(), self.flow_region, backend, self.precision)

    def cache_folder(self, video: Path) -> Path:
        """`<home>/features/<key>/`, key = hash of the video's absolute path, size and modification time, with a
        `-bf16` suffix at that precision (so both precisions stay cached; the recipe identity keeps them apart too)."""
        from co2cli import weights

        stat = video.stat()
        key = hashlib.sha256(f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
        suffix = "" if self.precision == "fp32" else f"-{self.precision}"
        return (self.cache_dir or weights.home() / "features") / f"{key}{suffix}"

    def cached(self, video: Path, name: str | None = None, any_backend: bool = False) -> FeatureFile | None:
        """The video's features from the cache, or None (not cached, or made by another recipe)."""
        if not video.is_file():
            raise Co2Error(f"input not found: {video}")
        folder = self.cache_folder(video) if self.use_cache else None
        if folder is None or not is_complete(folder, video.stem, self.identity(any_backend)):
            return None
        cached = load_features(folder / f"{video.stem}.npy", dim=None)
        return FeatureFile(video, cached.features, cached.recipe, name or video.stem)

    def store(self, video: Path, features: np.ndarray, recipe: dict, name: str | None = None) -> FeatureFile:
        """Freshly extracted features of `video`, written to the cache (unless disabled)."""
        if self.use_cache:
            save(self.cache_folder(video), video.stem, features, recipe)
        # The recipe as a cached run would read it back (JSON types), so fresh and cached runs agree.
        recipe = json.loads(json.dumps(recipe, default=str))
        return FeatureFile(video, features, recipe, name or video.stem)

    def video_features(self, video: Path, name: str | None = None,
                       progress: Progress | None = None) -> tuple[FeatureFile, bool]:
        """(features of a video, whether they came from the cache); `progress(frames_done, frames_estimate)` is
        called as frames are decoded (not for a cache hit)."""
        cached = self.cached(video, name)
        if cached is not None:
            return cached, True
        extracted = self.extractor().extract(video, progress)
        return self.store(video, extracted.features, extracted.recipe, name), False


def is_feature_file(path: Path) -> bool:
    return path.suffix.lower() in FEATURE_SUFFIXES


class Localizer:
    """Shared input handling: videos become features through a FeatureSource, feature files are loaded and
    checked."""

    description = "localizer"
    streams: tuple[str, ...] = ("rgb", "flow")
    feature_dims: tuple[int, ...] = (FEATURE_DIM,)

    def __init__(self, features: FeatureSource) -> None:
        self.features = features

    # -- inputs -----------------------------------------------------------------------------------------------

    def cache_folder(self, video: Path) -> Path:
        return self.features.cache_folder(video)

    def feature_file(self, path: Path, name: str | None = None) -> FeatureFile:
        """A (T, D) feature file checked against what this localizer reads."""
        feats = load_features(path, dim=None)
        if feats.features.shape[1] not in self.feature_dims:
            want = " or ".join(f"(T, {d})" for d in self.feature_dims)
            raise Co2Error(f"{path} has shape {feats.features.shape}, expected {want} for {self.description}")
        feats.name = name or feats.name
        return feats

    def features_for(self, path: Path, name: str | None = None,
                     progress: Progress | None = None) -> tuple[FeatureFile, bool]:
        if is_feature_file(path):
            return self.feature_file(path, name), False
        return self.features.video_features(path, name, progress)

    # -- outputs ----------------------------------------------------------------------------------------------

    def analyze_features(self, feats: FeatureFile, min_score: float | None = None) -> Analysis:
        raise NotImplementedError

    def analysis_of(self, feats: FeatureFile, source: Path, from_cache: bool,
                    min_score: float | None = None) -> Analysis:
        """The Analysis of `source`'s features, with the facts about its input filled in."""
        analysis = self.analyze_features(feats, min_score)
        analysis.source, analysis.from_cache = source, from_cache
        analysis.duration_s, analysis.snippets, analysis.recipe = (feats.duration_s, int(feats.features.shape[0]),
                                                                  feats.recipe)
        return analysis

    def analyze(self, path: str | Path, min_score: float | None = None, name: str | None = None,
                progress: Progress | None = None) -> Analysis:
        """Segments and curves of one video or feature file, reported under `name` (default: the file's stem);
        `progress(frames_done, frames_estimate)` follows a video's decoding."""
        feats, cached = self.features_for(Path(path), name, progress)
        return self.analysis_of(feats, Path(path), cached, min_score)

    def localize(self, path: str | Path, min_score: float | None = None) -> list[Segment]:
        """Segments (seconds on the video's timeline) of one video or feature file."""
        return self.analyze(path, min_score).segments


class Co2Localizer(Localizer):
    """CO2-Net on two-stream features: CAS + attention -> multiple-threshold proposals -> segments."""

    def __init__(self, model: CO2Net, class_names: list[str], description: str, features: FeatureSource) -> None:
        super().__init__(features)
        self.model = model
        self.class_names = class_names
        self.description = description

    def analyze_features(self, feats: FeatureFile, min_score: float | None = None) -> Analysis:
        from co2cli.co2net import run_co2net

        outputs = run_co2net(self.model, feats.features)
        found = co2_localize(outputs["cas"], outputs["attn"])
        segments = to_segments(feats.name, found.detections, self.class_names, feats.snippet_seconds, min_score,
                               feats.start_s)
        shown = found.classes[np.argsort(-found.video_scores[found.classes], kind="stable")][:PLOT_CLASSES]
        curves = {self.class_names[c]: found.weighted_cas[:, c] for c in shown}
        return Analysis(feats.name, segments, feats.snippet_seconds, curves, found.attention, "attention",
                        feats.start_s)


class KineticsLocalizer(Localizer):
    """Zero-shot: per-snippet Kinetics-400 probabilities of the RGB I3D. Needs RGB features only.

    For a 16-frame snippet the I3D head is exactly logits = W * mean(Mixed_5c) + b, so cached or extracted
    1024-d RGB features give the same logits as running the network's head.
    """

    streams = ("rgb",)
    feature_dims = (STREAM_DIM, FEATURE_DIM)
    description = "Kinetics-400 I3D (zero-shot, RGB)"

    def __init__(self, rgb_state: Mapping[str, torch.Tensor], features: FeatureSource) -> None:
        """`rgb_state`: the RGB I3D state dict (its head gives the logits; `features` should reuse it)."""
        super().__init__(features)
        self.weight = rgb_state["logits.conv3d.weight"].reshape(400, STREAM_DIM).double().numpy()
        self.bias = rgb_state["logits.conv3d.bias"].double().numpy()
        self.class_names = class_lists.kinetics400()

    def logits(self, rgb_features: np.ndarray) -> np.ndarray:
        """(T, 400) Kinetics logits from (T, 1024) RGB features (the I3D head on a 16-frame snippet)."""
        return rgb_features.astype(np.float64) @ self.weight.T + self.bias

    def analyze_features(self, feats: FeatureFile, min_score: float | None = None) -> Analysis:
        proposals, curves, scores = kinetics_proposals(self.logits(feats.features[:, :STREAM_DIM]))
        segments = to_segments(feats.name, proposals, self.class_names, feats.snippet_seconds, min_score,
                               feats.start_s)
        shown = np.argsort(-scores)[:PLOT_CLASSES]
        return Analysis(feats.name, segments, feats.snippet_seconds,
                        {self.class_names[c]: curves[:, c] for c in shown}, curves.max(axis=1),
                        "max class probability", feats.start_s)


# ---------------------------------------------------------------------------------------------------------------
# Building a localizer


def resolve_checkpoint(checkpoint: str | None, name: str) -> Path:
    """A checkpoint path as given, or the installed weight `name` (see `co2 weights list`)."""
    from co2cli import weights

    if checkpoint is not None:
        path = Path(checkpoint)
        if path.exists() or "/" in checkpoint or path.suffix:
            if not path.is_file():
                raise Co2Error(f"checkpoint not found: {path}")
            return path
        name = checkpoint
    return weights.resolve(name)


def _activitynet_names(checkpoint: str | None, path: Path) -> list[str]:
    from co2cli import weights

    if checkpoint is None or not Path(checkpoint).exists():
        names_file = weights.class_names_path("co2-activitynet")
        if names_file.is_file():
            return names_file.read_text().splitlines()
    return class_lists.classes_beside(path)


def _activitynet_kernel(path: Path) -> int:
    """The pooling kernel a checkpoint was trained with: `co2 train` records it in `<stem>.train.json` beside
    it; otherwise the original run's (max_seqlen 60, t 5) -> 13."""
    from co2cli.checkpoints import beside_checkpoint
    from co2cli.co2net import activitynet_pool_kernel

    recipe = beside_checkpoint(path, ".train.json")
    if recipe.is_file():
        try:
            kernel = json.loads(recipe.read_text()).get("temporal_pool_kernel")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise Co2Error(f"{recipe} is not a co2 train summary (JSON); remove it or fix it") from None
        if isinstance(kernel, int) and kernel >= 1 and kernel % 2 == 1:
            return kernel
    return activitynet_pool_kernel(*ACTIVITYNET_POOL)


def co2_installed() -> bool:
    """True when a THUMOS14 CO2-Net checkpoint is installed (then `thumos` is the default model)."""
    from co2cli import weights

    return "co2-thumos" in weights.installed()


def default_classes(checkpoint: str | None = None) -> str:
    """'thumos' when a CO2-Net checkpoint is given or installed, else 'kinetics'."""
    return "thumos" if (checkpoint is not None or co2_installed()) else "kinetics"


def load_model(classes: str | None = None, checkpoint: str | None = None, device: str = "auto",
               batch_size: int = 4, cache_dir: str | Path | None = None, use_cache: bool = True,
               max_side_px: int | None = None, flow_backend: str = "auto", flow_region: str = "frame",
               flow_workers: int | None = None, precision: str = "fp32") -> Localizer:
    """A localizer for `classes`: 'thumos' / 'activitynet' (CO2-Net with the given or installed checkpoint) or
    'kinetics' (zero-shot RGB I3D). None picks 'thumos' when CO2-Net weights are installed, else 'kinetics'."""
    from co2cli import checkpoints, weights
    from co2cli.devices import pick_device

    dev = pick_device(device)
    classes = classes or default_classes(checkpoint)
    source = {"batch_size": batch_size, "cache_dir": Path(cache_dir) if cache_dir else None,
              "use_cache": use_cache, "max_side_px": max_side_px, "flow_backend": flow_backend,
              "flow_region": flow_region, "flow_workers": flow_workers, "precision": precision}
    if classes == "kinetics":
        if checkpoint is not None:
            raise Co2Error("a CO2-Net checkpoint was given, but the Kinetics localizer uses none: choose the thumos "
                           "or activitynet classes for a CO2-Net checkpoint")
        path = weights.resolve("i3d-rgb")
        rgb_state = checkpoints.read_state_dict(path)
        checkpoints.check_i3d_state_dict(rgb_state, 3, label=str(path))
        features = FeatureSource(KineticsLocalizer.streams, dev, state_dicts={"rgb": rgb_state}, **source)
        return KineticsLocalizer(rgb_state, features)
    features = FeatureSource(Co2Localizer.streams, dev, **source)
    if classes == "thumos":
        path = resolve_checkpoint(checkpoint, "co2-thumos")
        model = checkpoints.load_co2net(path, dev)
        names = class_lists.thumos14()
        if model.n_class != len(names):
            raise Co2Error(f"{path} has {model.n_class} classes, THUMOS14 has {len(names)}; "
                           "an ActivityNet checkpoint needs the activitynet classes")
        return Co2Localizer(model, names, f"CO2-Net THUMOS14 ({path.name})", features)
    if classes == "activitynet":
        path = resolve_checkpoint(checkpoint, "co2-activitynet")
        names = _activitynet_names(checkpoint, path)
        model = checkpoints.load_co2net(path, dev, temporal_pool_kernel=_activitynet_kernel(path))
        if model.n_class != len(names):
            raise Co2Error(f"{path} has {model.n_class} classes but its class list has {len(names)} names")
        return Co2Localizer(model, names, f"CO2-Net ActivityNet1.2 ({path.name})", features)
    raise Co2Error(f"unknown classes {classes!r}: use thumos, activitynet or kinetics")


# ---------------------------------------------------------------------------------------------------------------
# `co2 localize` as a batch job (runner.run_batch): features computed anywhere, analysed on the driver


@dataclass
class _AnalysisWriter(WholeResultWriter):
    job: LocalizeJob
    path: Path
    name: str

    def finish(self, result: Computed) -> BatchItem:
        assert result.features is not None
        features = np.array(result.features)  # a private, writable copy (a Ray result is read-only)
        feats = self.job.localizer.features.store(self.path, features, result.recipe, self.name)
        return self.job.item(self.path, self.name, lambda: (feats, False))


@dataclass
class LocalizeJob:
    """`co2 localize`: an Analysis per input (in `BatchItem.output`). Feature files and cached videos are
    answered on the driver; other videos' features are computed on the pool, cached and analysed on the driver.
    Nothing is written per input, so nothing is claimed or skipped."""

    localizer: Localizer
    min_score: float | None = None
    any_backend: bool = False
    """Accept cached features of either flow backend (Ray workers pick theirs on their own devices)."""
    out_dir: Path | None = None
    compute: Compute = compute_features

    def is_done(self, name: str) -> bool:
        return False

    def outputs(self, name: str) -> Sequence[Path]:
        return ()

    def item(self, path: Path, name: str, features: Callable[[], tuple[FeatureFile, bool]]) -> BatchItem:
        """The item of one input whose features `features()` gives (a Co2Error fails this input only)."""
        try:
            feats, cached = features()
            analysis = self.localizer.analysis_of(feats, path, cached, self.min_score)
        except Co2Error as exc:
            return BatchItem(path, name, "failed", message=str(exc))
        return BatchItem(path, name, "done", analysis.snippets, duration_s=analysis.duration_s or 0.0,
                         frames=0 if cached else int(analysis.recipe.get("frame_count") or 0), output=analysis)

    def answer(self, path: Path, name: str) -> BatchItem | None:
        if is_feature_file(path):
            return self.item(path, name, lambda: (self.localizer.feature_file(path, name), False))
        try:
            cached = self.localizer.features.cached(path, name, self.any_backend)
        except Co2Error as exc:
            return BatchItem(path, name, "failed", message=str(exc))
        return None if cached is None else self.item(path, name, lambda: (cached, True))

    def writer(self, path: Path, name: str) -> _AnalysisWriter:
        return _AnalysisWriter(self, path, name)
