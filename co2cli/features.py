"""Two-stream I3D features: (T, 2048) float32 = RGB 0..1023 | flow 1024..2047, one row per 16-frame snippet,
saved as `<stem>.npy` with the recipe that produced them in `<stem>.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from co2cli.errors import Co2Error
from co2cli.video import FPS, SNIPPET

FEATURE_DIM = 2048
STREAM_DIM = 1024


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
