"""The Python API that mirrors `co2 localize`: `load_model(...)`, then `model.localize(path) -> list[Segment]`.

Inputs are videos (decoded and turned into features by the same code as `co2 extract-features`, cached per video
and recipe) or feature files (`.npy`, (T, 2048), or (T, 1024) RGB-only for the Kinetics localizer).
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from co2cli import classes as class_lists
from co2cli.co2net import CO2Net, activitynet_pool_kernel, beside_checkpoint, load_co2net, run_co2net
from co2cli.errors import Co2Error
from co2cli.features import (RECIPE_VERSION, STREAM_DIM, VIDEO_SUFFIXES, FeatureExtractor, FeatureFile,
                             is_complete, load_features, pick_device, save)
from co2cli.localize import Segment, kinetics_proposals, multiple_threshold_proposals, select_classes, to_segments

FEATURE_SUFFIXES = {".npy"}
PLOT_CLASSES = 3  # classes drawn per plot


def expand_inputs(inputs: Iterable[str], suffixes: set[str] | None = None) -> list[Path]:
    """Files as given, folders searched recursively (for `suffixes`), globs expanded; order kept, no repeats."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and
                                (suffixes is None or p.suffix.lower() in suffixes)))
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise Co2Error(f"no file matches {item}")
            found.extend(p for p in matches if p.is_file())
        else:
            found.append(path)
    seen: set[Path] = set()
    return [p for p in found if not (p in seen or seen.add(p))]


@dataclass
class Analysis:
    """One video's localization and the curves behind it (per snippet) for plotting."""

    video: str
    segments: list[Segment]
    snippet_seconds: float
    curves: dict[str, np.ndarray]
    attention: np.ndarray | None
    attention_label: str
    offset_s: float = 0.0


class Localizer:
    """Shared input handling: videos become features (cached), feature files are loaded and checked."""

    description = "localizer"
    streams: tuple[str, ...] = ("rgb", "flow")
    feature_dims: tuple[int, ...] = (2 * STREAM_DIM,)

    def __init__(self, device: torch.device, batch_size: int = 4, cache_dir: Path | None = None) -> None:
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._extractor: FeatureExtractor | None = None

    # -- inputs -----------------------------------------------------------------------------------------------

    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.streams, str(self.device), self.batch_size)
        return self._extractor

    def _cache_folder(self, video: Path) -> Path:
        from co2cli import weights

        stat = video.stat()
        key = hashlib.sha256(f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
        return (self.cache_dir or weights.home() / "features") / key

    def video_features(self, video: Path) -> FeatureFile:
        """Features of a video through `co2 extract-features`' code, reused from the cache when the recipe matches."""
        if not video.is_file():
            raise Co2Error(f"input not found: {video}")
        folder = self._cache_folder(video)
        extractor = self.extractor()
        if is_complete(folder, video.stem, extractor.streams):
            cached = load_features(folder / f"{video.stem}.npy", dim=None)
            same = (cached.recipe.get("recipe_version") == RECIPE_VERSION
                    and cached.recipe.get("weights_sha256") == extractor.weights_sha256)
            if same:
                return cached
        save(folder, video.stem, extractor.extract(video))
        # Read back what was saved so a fresh and a cached run see the same recipe (JSON round trip) and values.
        return load_features(folder / f"{video.stem}.npy", dim=None)

    def features_for(self, path: Path) -> FeatureFile:
        if path.suffix.lower() in FEATURE_SUFFIXES:
            feats = load_features(path, dim=None)
            if feats.features.shape[1] not in self.feature_dims:
                want = " or ".join(f"(T, {d})" for d in self.feature_dims)
                raise Co2Error(f"{path} has shape {feats.features.shape}, expected {want} for {self.description}")
            return feats
        return self.video_features(path)

    # -- outputs ----------------------------------------------------------------------------------------------

    def analyze(self, feats: FeatureFile, min_score: float | None = None) -> Analysis:
        raise NotImplementedError

    def localize(self, path: str | Path, min_score: float | None = None) -> list[Segment]:
        """Segments (seconds on the video's timeline) of one video or feature file."""
        return self.analyze(self.features_for(Path(path)), min_score).segments

    def localize_many(self, inputs: Sequence[str], min_score: float | None = None,
                      plot_dir: Path | None = None) -> tuple[dict[str, list[Segment]], list[tuple[str, str]]]:
        """Localize every input; one bad input is reported in `failures` and never stops the others."""
        from co2cli.writers import plot_timeline

        results: dict[str, list[Segment]] = {}
        failures: list[tuple[str, str]] = []
        for path in expand_inputs(inputs, VIDEO_SUFFIXES | FEATURE_SUFFIXES):
            try:
                analysis = self.analyze(self.features_for(path), min_score)
            except Co2Error as exc:
                failures.append((str(path), str(exc)))
                continue
            results[analysis.video] = analysis.segments
            if plot_dir is not None:
                plot_timeline(plot_dir / f"{analysis.video}.png", f"{analysis.video} - {self.description}",
                              analysis.snippet_seconds, analysis.curves, analysis.segments, analysis.attention,
                              analysis.attention_label, analysis.offset_s)
        return results, failures


class Co2Localizer(Localizer):
    """CO2-Net on two-stream features: CAS + attention -> multiple-threshold proposals -> segments."""

    def __init__(self, model: CO2Net, class_names: list[str], description: str, device: torch.device,
                 batch_size: int = 4, cache_dir: Path | None = None) -> None:
        super().__init__(device, batch_size, cache_dir)
        self.model = model
        self.class_names = class_names
        self.description = description

    def analyze(self, feats: FeatureFile, min_score: float | None = None) -> Analysis:
        outputs = run_co2net(self.model, feats.features)
        proposals = multiple_threshold_proposals(outputs["cas"], outputs["attn"])
        segments = to_segments(feats.name, proposals, self.class_names, feats.snippet_seconds, min_score,
                               feats.start_s)
        attention = outputs["attn"][0, :, 0].numpy()
        weighted = (outputs["cas"][0, :, :-1] * outputs["attn"][0]).numpy()
        from co2cli.co2net import video_scores

        shown = select_classes(video_scores(outputs["cas"], outputs["attn"]))[:PLOT_CLASSES]
        curves = {self.class_names[c]: weighted[:, c] for c in shown}
        return Analysis(feats.name, segments, float(feats.snippet_seconds), curves, attention, "attention",
                        feats.start_s)


class KineticsLocalizer(Localizer):
    """Zero-shot: per-snippet Kinetics-400 probabilities of the RGB I3D. Needs RGB features only.

    For a 16-frame snippet the I3D head is exactly logits = W * mean(Mixed_5c) + b, so cached or extracted
    1024-d RGB features give the same logits as running the network's head.
    """

    streams = ("rgb",)
    feature_dims = (STREAM_DIM, 2 * STREAM_DIM)
    description = "Kinetics-400 I3D (zero-shot, RGB)"

    def __init__(self, device: torch.device, batch_size: int = 4, cache_dir: Path | None = None) -> None:
        super().__init__(device, batch_size, cache_dir)
        from co2cli import i3d, weights

        path = weights.resolve("i3d-rgb")
        state = i3d.read_torch_state_dict(path)
        i3d.check_state_dict(state, 3, label=str(path))
        self.weight = state["logits.conv3d.weight"].reshape(400, STREAM_DIM).double().numpy()
        self.bias = state["logits.conv3d.bias"].double().numpy()
        self.class_names = class_lists.kinetics400()

    def logits(self, rgb_features: np.ndarray) -> np.ndarray:
        """(T, 400) Kinetics logits from (T, 1024) RGB features (the I3D head on a 16-frame snippet)."""
        return rgb_features.astype(np.float64) @ self.weight.T + self.bias

    def analyze(self, feats: FeatureFile, min_score: float | None = None) -> Analysis:
        proposals, curves, scores = kinetics_proposals(self.logits(feats.features[:, :STREAM_DIM]))
        segments = to_segments(feats.name, proposals, self.class_names, feats.snippet_seconds, min_score,
                               feats.start_s)
        shown = np.argsort(-scores)[:PLOT_CLASSES]
        return Analysis(feats.name, segments, float(feats.snippet_seconds),
                        {self.class_names[c]: curves[:, c] for c in shown}, curves.max(axis=1),
                        "max class probability", feats.start_s)


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
    recipe = beside_checkpoint(path, ".train.json")
    if recipe.is_file():
        try:
            kernel = json.loads(recipe.read_text()).get("temporal_pool_kernel")
        except (json.JSONDecodeError, AttributeError):
            raise Co2Error(f"{recipe} is not a co2 train summary (JSON); remove it or fix it") from None
        if isinstance(kernel, int) and kernel >= 1 and kernel % 2 == 1:
            return kernel
    return activitynet_pool_kernel(*ACTIVITYNET_POOL)


def co2_installed() -> bool:
    """True when a THUMOS14 CO2-Net checkpoint is installed (then `thumos` is the default model)."""
    from co2cli import weights

    return "co2-thumos" in weights.installed()


def load_model(classes: str | None = None, checkpoint: str | None = None, device: str = "auto",
               batch_size: int = 4, cache_dir: str | Path | None = None) -> Localizer:
    """A localizer for `classes`: 'thumos' / 'activitynet' (CO2-Net with the given or installed checkpoint) or
    'kinetics' (zero-shot RGB I3D). None picks 'thumos' when CO2-Net weights are installed, else 'kinetics'."""
    dev = pick_device(device)
    cache = Path(cache_dir) if cache_dir else None
    if classes is None:
        classes = "thumos" if (checkpoint is not None or co2_installed()) else "kinetics"
    if classes == "kinetics":
        if checkpoint is not None:
            raise Co2Error("--checkpoint is for CO2-Net (--classes thumos or activitynet), not --classes kinetics")
        return KineticsLocalizer(dev, batch_size, cache)
    if classes == "thumos":
        path = resolve_checkpoint(checkpoint, "co2-thumos")
        model = load_co2net(path, dev)
        names = class_lists.thumos14()
        if model.n_class != len(names):
            raise Co2Error(f"{path} has {model.n_class} classes, THUMOS14 has {len(names)}; "
                           "use --classes activitynet for an ActivityNet checkpoint")
        return Co2Localizer(model, names, f"CO2-Net THUMOS14 ({path.name})", dev, batch_size, cache)
    if classes == "activitynet":
        path = resolve_checkpoint(checkpoint, "co2-activitynet")
        names = _activitynet_names(checkpoint, path)
        model = load_co2net(path, dev, temporal_pool_kernel=_activitynet_kernel(path))
        if model.n_class != len(names):
            raise Co2Error(f"{path} has {model.n_class} classes but its class list has {len(names)} names")
        return Co2Localizer(model, names, f"CO2-Net ActivityNet1.2 ({path.name})", dev, batch_size, cache)
    raise Co2Error(f"unknown --classes {classes!r}: use thumos, activitynet or kinetics")


ACTIVITYNET_POOL = (60, 5)  # (max_seqlen, t) of the original ActivityNet1.2 run (run.sh, options.py): kernel 13
