"""The feature-file format: `<stem>.npy` float32 (T, 2048) = RGB I3D 0..1023 | flow I3D 1024..2047 (or (T, 1024)
RGB only), one row per 16-frame snippet, with the recipe that produced it in `<stem>.json` beside it.

This module only reads and writes that format (numpy, no torch); `extract.py` makes the features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from co2cli.errors import Co2Error
from co2cli.fsio import atomic_path, write_text_atomic
from co2cli.timebase import FPS, SNIPPET_FRAMES, snippet_seconds_of

STREAM_DIM = 1024
"""Channels of one I3D stream (Mixed_5c)."""

FEATURE_DIM = 2 * STREAM_DIM
"""Channels of a two-stream feature row: RGB | flow."""


@dataclass
class FeatureFile:
    """A feature sequence and the recipe recorded beside it (empty when there is none)."""

    path: Path
    features: np.ndarray
    """(T, D) float32, T in snippets."""
    recipe: dict
    name: str = ""
    """The name results are reported under (default: the file's stem)."""

    def __post_init__(self) -> None:
        self.name = self.name or self.path.stem

    @property
    def start_s(self) -> float:
        """Video time (s) of the first frame of snippet 0, from the recipe (0 for files without one)."""
        return float(self.recipe.get("start_s") or 0.0)

    @property
    def snippet_seconds(self) -> Fraction:
        """Seconds per feature row: stride frames / fps from the recipe, else 16 / 25 = 0.64 s."""
        stride = int(self.recipe.get("stride_frames", self.recipe.get("snippet_frames", SNIPPET_FRAMES)))
        return snippet_seconds_of(self.recipe.get("fps", FPS), stride)

    @property
    def duration_s(self) -> float | None:
        """The video's duration in seconds from the recipe, None when unknown."""
        value = self.recipe.get("duration_s")
        return float(value) if isinstance(value, (int, float)) else None


def recipe_path(npy_path: Path) -> Path:
    return npy_path.with_suffix(".json")


def output_paths(out_dir: Path, stem: str) -> tuple[Path, Path]:
    """(`<stem>.npy`, `<stem>.json`) in `out_dir`."""
    return out_dir / f"{stem}.npy", out_dir / f"{stem}.json"


def read_recipe(npy_path: Path) -> dict:
    """The recipe JSON beside a feature file ({} when there is none)."""
    path = recipe_path(npy_path)
    if not path.is_file():
        return {}
    try:
        recipe = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Co2Error(f"{path} is not a valid feature recipe (JSON)") from None
    return recipe if isinstance(recipe, dict) else {}


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a .npy header; Co2Error for a file that is not one."""
    with path.open("rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = reader(fh)
        except (ValueError, EOFError, OSError):
            raise Co2Error(f"{path} is not a readable .npy file (damaged header)") from None
        return shape, dtype, fh.tell()


def load_features(path: str | Path, dim: int | None = FEATURE_DIM) -> FeatureFile:
    """Load a `.npy` (T, dim) feature sequence with checks that give one clear line each."""
    path = Path(path)
    if not path.is_file():
        raise Co2Error(f"feature file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise Co2Error(f"feature file is empty: {path}")
    with path.open("rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise Co2Error(f"{path} is not a .npy file (no NumPy header)")
    shape, dtype, offset = _npy_header(path)
    if dtype.hasobject:
        raise Co2Error(f"{path} holds Python objects (a pickle): object arrays are refused")
    expected_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected_bytes:
        raise Co2Error(f"{path} is truncated: its header promises shape {tuple(shape)} ({expected_bytes} bytes) "
                       f"but the file has {size} bytes")
    try:
        # Memory-mapped so a long video's features are paged in, not read twice.
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError):
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


def is_complete(out_dir: Path, stem: str, identity: dict) -> bool:
    """Both files present (the JSON is written last) and made by the same recipe: every key of `identity`
    (e.g. streams, recipe_version, flow region and backend) equal in the written recipe."""
    npy, js = output_paths(out_dir, stem)
    if not (npy.is_file() and js.is_file()):
        return False
    try:
        written = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(written, dict) and all(_same(written.get(k), v) for k, v in identity.items())


class AnyOf(tuple):
    """An identity value that a written value matches when it equals any of these (e.g. flow backends whose
    output is bit-identical)."""


def _same(written: object, wanted: object) -> bool:
    if isinstance(wanted, AnyOf):
        return written in wanted
    if isinstance(wanted, dict):
        return isinstance(written, dict) and all(_same(written.get(k), v) for k, v in wanted.items())
    return written == wanted


def recipe_json(recipe: dict) -> str:
    """The recipe as written to `<stem>.json` (non-JSON values as strings)."""
    return json.dumps(recipe, indent=1, default=str) + "\n"


def save(out_dir: Path, stem: str, features: np.ndarray, recipe: dict) -> tuple[Path, Path]:
    """Write `<stem>.npy` then `<stem>.json`, each to a temporary name first, so a kill leaves no partial output."""
    npy, js = output_paths(out_dir, stem)
    js.unlink(missing_ok=True)  # an old recipe must not vouch for the new array while it is written
    with atomic_path(npy, suffix=".npy") as tmp:
        np.save(tmp, features)
    write_text_atomic(js, recipe_json(recipe))
    return npy, js
