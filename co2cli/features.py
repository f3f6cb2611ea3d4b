"""Two-stream I3D features: (T, 2048) float32 = RGB 0..1023 | flow 1024..2047, one row per 16-frame snippet,
saved as `<stem>.npy` with the recipe that produced them in `<stem>.json`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from co2cli.errors import Co2Error
from co2cli.video import FPS, SNIPPET

STREAM_DIM = 1024  # one I3D stream (Mixed_5c channels)
FEATURE_DIM = 2 * STREAM_DIM  # RGB | flow


@dataclass
class FeatureFile:
    """A loaded feature sequence and the recipe recorded beside it (empty when there is none)."""

    path: Path
    features: np.ndarray  # (T, D) float32, T in snippets
    recipe: dict

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def start_s(self) -> float:
        """Video time (s) of the first frame of snippet 0, from the recipe (0 for files without one)."""
        return float(self.recipe.get("start_s") or 0.0)

    @property
    def snippet_seconds(self) -> Fraction:
        """Seconds per feature row: stride frames / fps from the recipe, else 16 / 25 = 0.64 s."""
        fps = Fraction(str(self.recipe.get("fps", FPS)))
        stride = int(self.recipe.get("stride_frames", self.recipe.get("snippet_frames", SNIPPET)))
        return stride / fps


def recipe_path(npy_path: Path) -> Path:
    return npy_path.with_suffix(".json")


def read_recipe(npy_path: Path) -> dict:
    path = recipe_path(npy_path)
    if not path.is_file():
        return {}
    try:
        recipe = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Co2Error(f"{path} is not a valid feature recipe (JSON)") from None
    return recipe if isinstance(recipe, dict) else {}


def load_features(path: str | Path, dim: int | None = FEATURE_DIM) -> FeatureFile:
    """Load a `.npy` (T, dim) feature sequence with checks that give one clear line each."""
    path = Path(path)
    if not path.is_file():
        raise Co2Error(f"feature file not found: {path}")
    if path.stat().st_size == 0:
        raise Co2Error(f"feature file is empty: {path}")
    with path.open("rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise Co2Error(f"{path} is not a .npy file (no NumPy header)")
    try:
        # Memory-mapped so a long video's features are paged in, not read twice.
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError:
        raise Co2Error(f"{path} is not a plain numeric .npy array (object arrays are refused)") from None
    except (OSError, EOFError):
        raise Co2Error(f"{path} is not a readable .npy file (truncated or wrong format)") from None
    if arr.dtype.kind not in "fiu":
        raise Co2Error(f"{path} holds {arr.dtype} values, expected float32 features")
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"(T, {dim})" if dim else "(T, D)"
        raise Co2Error(f"{path} has shape {tuple(arr.shape)}, expected {want} with RGB 0..1023 | flow 1024..2047")
    if arr.shape[0] == 0:
        raise Co2Error(f"{path} has no snippets (T = 0)")
    features = np.array(arr, dtype=np.float32)  # a private, writable copy (torch needs one)
    if not np.isfinite(features).all():
        raise Co2Error(f"{path} contains NaN or infinite values")
    return FeatureFile(path, features, read_recipe(path))


# ---------------------------------------------------------------------------------------------------------------
# Extraction: video -> frames (video.py) -> flow (flow.py) -> I3D per stream (i3d.py) -> (T, D) + recipe

STREAMS = ("rgb", "flow")
WEIGHT_NAMES = {"rgb": "i3d-rgb", "flow": "i3d-flow"}
IN_CHANNELS = {"rgb": 3, "flow": 2}
RECIPE_VERSION = 1  # bump when a change makes older cached features incomparable


def pick_device(device: str = "auto") -> "torch.device":
    """'auto' = CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise Co2Error("--device cuda was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise Co2Error(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def parse_streams(text: str | Sequence[str]) -> tuple[str, ...]:
    """'rgb,flow' -> ('rgb', 'flow'), always in RGB-then-flow order (the 2048-d layout)."""
    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in items if s not in STREAMS]
    if unknown or not items:
        raise Co2Error(f"unknown stream(s) {', '.join(unknown) or '(none)'}: use rgb, flow or rgb,flow")
    return tuple(s for s in STREAMS if s in items)


@dataclass
class Extracted:
    """One video's features: (T, 1024 * len(streams)) float32 = RGB | flow, with its recipe."""

    features: np.ndarray
    recipe: dict


class FeatureExtractor:
    """Two-stream I3D features of whole videos, streamed in chunks so memory stays bounded.

    Weights come from the installed store (`co2 weights ...`); a missing one is a Co2Error naming the command.
    """

    def __init__(self, streams: Sequence[str] = STREAMS, device: str = "auto", batch_size: int = 4,
                 chunk_snippets: int = 8, flow_workers: int = 1) -> None:
        from co2cli import i3d, weights

        self.streams = parse_streams(streams)
        self.device = pick_device(device)
        self.batch_size = max(1, int(batch_size))
        self.chunk_frames = SNIPPET * max(1, int(chunk_snippets))
        self.flow_workers = max(1, int(flow_workers))
        records = {}
        self.models = {}
        for stream in self.streams:
            name = WEIGHT_NAMES[stream]
            path = weights.resolve(name)
            self.models[stream] = i3d.load_i3d(path, IN_CHANNELS[stream], self.device, label=str(path))
            records[name] = weights.installed()[name].get("sha256")
        self.weights_sha256 = records

    def recipe(self) -> dict:
        """What every feature file made by this extractor shares (the per-video facts are added later)."""
        from co2cli import __version__, flow, video

        return {
            "co2cli_version": __version__, "recipe_version": RECIPE_VERSION,
            "streams": list(self.streams), "feature_dim": STREAM_DIM * len(self.streams),
            "layout": " | ".join(f"{s} {i * STREAM_DIM}..{(i + 1) * STREAM_DIM - 1}" for i, s in enumerate(self.streams)),
            "fps": FPS, "snippet_frames": SNIPPET, "stride_frames": SNIPPET,
            "feature": "I3D Mixed_5c averaged over time, height and width (1024 per stream)",
            "resize": video.RECIPE["resize"], "crop": video.RECIPE["crop"], "video": video.RECIPE,
            "flow": flow.RECIPE if "flow" in self.streams else None,
            "weights_sha256": self.weights_sha256,
        }

    def extract(self, path: str | Path, progress: "Callable[[int, int | None], None] | None" = None) -> Extracted:
        """Features of one video. `progress(frames_done, frames_total_estimate)` is called after each chunk."""
        from co2cli import flow, i3d, video

        reader = video.VideoReader(path)
        estimate = reader.info.frames_25fps_estimate
        chunks = reader.chunks(self.chunk_frames)
        pairs = (flow.iter_with_flow(chunks, workers=self.flow_workers) if "flow" in self.streams
                 else ((chunk, None) for chunk in chunks))
        parts: dict[str, list[np.ndarray]] = {s: [] for s in self.streams}
        first_time: float | None = None
        done = 0
        for frames, fields in pairs:
            n = len(frames) // SNIPPET
            if first_time is None and len(frames):
                first_time = float(frames.grid_times_s[0])
            if "rgb" in self.streams:
                snippets = video.rgb_to_float(frames.rgb).reshape(n, SNIPPET, *frames.rgb.shape[1:])
                parts["rgb"].append(i3d.run_snippets(self.models["rgb"], snippets, self.batch_size)[0])
            if "flow" in self.streams:
                snippets = fields[: n * SNIPPET].reshape(n, SNIPPET, *fields.shape[1:])
                parts["flow"].append(i3d.run_snippets(self.models["flow"], snippets, self.batch_size)[0])
            done += len(frames)
            if progress:
                progress(done, estimate)
        features = np.concatenate([np.concatenate(parts[s]) for s in self.streams], axis=1).astype(np.float32)
        info = reader.info
        recipe = self.recipe() | {
            "source": Path(path).name,
            "source_fps": info.source_fps, "source_frames_decoded": reader.frames_decoded,
            "duration_s": info.duration_s, "rotation_deg": info.rotation,
            "frame_count": reader.frames_total, "frames_used": reader.frames_yielded,
            "remainder_frames_dropped": reader.frames_total - reader.frames_yielded,
            "snippets": int(features.shape[0]),
            "start_s": first_time or 0.0,
        }
        return Extracted(features, recipe)


def output_paths(out_dir: Path, stem: str) -> tuple[Path, Path]:
    return out_dir / f"{stem}.npy", out_dir / f"{stem}.json"


def is_complete(out_dir: Path, stem: str, streams: Sequence[str]) -> bool:
    """Both files present (the JSON is written last) and made for the same streams."""
    npy, js = output_paths(out_dir, stem)
    if not (npy.is_file() and js.is_file()):
        return False
    try:
        return json.loads(js.read_text()).get("streams") == list(streams)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def save(out_dir: Path, stem: str, extracted: Extracted) -> tuple[Path, Path]:
    """Write `<stem>.npy` then `<stem>.json`, each to a temporary name first, so a kill leaves no partial output."""
    from co2cli.writers import atomic_path, write_text_atomic

    npy, js = output_paths(out_dir, stem)
    js.unlink(missing_ok=True)  # an old recipe must not vouch for the new array while it is written
    with atomic_path(npy, suffix=".npy") as tmp:
        np.save(tmp, extracted.features)
    write_text_atomic(js, json.dumps(extracted.recipe, indent=1, default=str) + "\n")
    return npy, js


def clean_partials(out_dir: Path) -> None:
    """Remove temporary files a killed run left behind (they never carry a final name)."""
    if out_dir.is_dir():
        for stale in out_dir.glob(".*.part*"):
            stale.unlink(missing_ok=True)
        for stale in out_dir.glob(".*.npy"):
            stale.unlink(missing_ok=True)


VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts",
                  ".mts", ".ogv"}


@dataclass
class BatchItem:
    """The outcome for one input of a batch: status is 'done', 'skipped' or 'failed'."""

    path: Path
    status: str
    snippets: int = 0
    seconds: float = 0.0
    message: str = ""


def run_batch(paths: Sequence[Path], out_dir: Path, extractor: FeatureExtractor, overwrite: bool = False,
              on_start: Callable[[Path, int | None], None] | None = None,
              on_progress: Callable[[int, int | None], None] | None = None,
              on_end: Callable[[BatchItem], None] | None = None) -> list[BatchItem]:
    """Extract every video into `out_dir`; finished outputs are skipped unless `overwrite`, and one bad file is
    recorded as failed without stopping the others. Rerunning after a kill resumes with the unfinished files."""
    import time

    out_dir.mkdir(parents=True, exist_ok=True)
    clean_partials(out_dir)
    items: list[BatchItem] = []
    stems: dict[str, Path] = {}
    for path in paths:
        started = time.perf_counter()
        if path.stem in stems:
            item = BatchItem(path, "failed", message=f"{path}: output name {path.stem}.npy is already used by "
                                                     f"{stems[path.stem]}; rename one of them")
        elif not overwrite and is_complete(out_dir, path.stem, extractor.streams):
            item = BatchItem(path, "skipped", message="already extracted")
        else:
            try:
                if on_start:
                    on_start(path, None)
                extracted = extractor.extract(path, on_progress)
                save(out_dir, path.stem, extracted)
                item = BatchItem(path, "done", int(extracted.features.shape[0]))
            except Co2Error as exc:
                item = BatchItem(path, "failed", message=str(exc))
        stems.setdefault(path.stem, path)
        item.seconds = time.perf_counter() - started
        items.append(item)
        if on_end:
            on_end(item)
    return items
