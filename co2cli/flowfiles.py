"""`co2 extract-flow`: TV-L1 flow alone, written as I3D receives it (npy) or in the denseflow / mmaction layout (jpg).

* npy: `<name>.flow.npy`, float32 (N, 224, 224, 2) in [-1, 1] (pixels clipped to +-20, divided by 20; channels
  dx, dy), N frames at 25 fps -> N fields (the last repeats the previous one), streamed to disk chunk by chunk
  (memory stays bounded; the header is rewritten with the final N), plus `<name>.flow.json` (the recipe).
* jpg: `<name>/flow_x_00001.jpg`, `<name>/flow_y_00001.jpg`, ... (1-based), 8-bit with bound 20:
  value = round((px + 20) * 255 / 40), as denseflow and mmaction2 write them, plus `<name>/flow.json`. The folder
  is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from co2cli.errors import Co2Error
from co2cli.extract import FeatureExtractor, Progress
from co2cli.fsio import atomic_path, os_error_message, write_text_atomic

FORMATS = ("npy", "jpg")
JPEG_QUALITY = 95  # OpenCV's default, what denseflow writes
_HEADER_BYTES = 128  # fixed .npy header length, so the final frame count can be written in place


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for little-endian float32 `shape`, padded to exactly _HEADER_BYTES."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    if len(body) + 10 != _HEADER_BYTES:
        raise ValueError(f"shape {shape} does not fit a {_HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def to_jpeg_levels(fields: np.ndarray) -> np.ndarray:
    """[-1, 1] fields (pixels / 20) -> uint8 0..255 with bound 20 px: round((px + 20) * 255 / 40)."""
    return np.clip(np.rint((fields.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class FlowJob:
    """One video's flow into `out_dir` in `fmt` (npy or jpg), computed by `extractor`'s flow settings."""

    def __init__(self, extractor: FeatureExtractor, fmt: str = "npy") -> None:
        if fmt not in FORMATS:
            raise Co2Error(f"unknown flow format {fmt!r}: use npy or jpg")
        self.extractor = extractor
        self.fmt = fmt

    def recipe(self) -> dict:
        from co2cli import __version__, flow, video

        e = self.extractor
        return {"co2cli_version": __version__, "format": self.fmt, "fps": video.FPS, "video": video.RECIPE,
                "flow": flow.recipe(e.flow_backend, e.flow_region),
                "layout": ("float32 (N, 224, 224, 2) in [-1, 1], channels (dx, dy)" if self.fmt == "npy" else
                           "flow_x_%05d.jpg / flow_y_%05d.jpg, 8-bit, bound 20 px: round((px + 20) * 255 / 40)")}

    def outputs(self, out_dir: Path, name: str) -> Sequence[Path]:
        if self.fmt == "npy":
            return [out_dir / f"{name}.flow.npy", out_dir / f"{name}.flow.json"]
        return [out_dir / name]

    def is_done(self, out_dir: Path, name: str) -> bool:
        marker = (out_dir / f"{name}.flow.json") if self.fmt == "npy" else (out_dir / name / "flow.json")
        if not marker.is_file() or (self.fmt == "npy" and not (out_dir / f"{name}.flow.npy").is_file()):
            return False
        try:
            written = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        want = self.recipe()["flow"]
        return isinstance(written, dict) and all(written.get("flow", {}).get(k) == want[k]
                                                 for k in ("backend", "region"))

    def run(self, path: Path, out_dir: Path, name: str, progress: Progress | None) -> tuple[int, int, float]:
        from co2cli import video

        e = self.extractor
        reader = video.VideoReader(path, max_side_px=e.max_side_px)
        # Every frame, the < 16 remainder included: flow users want N fields for N frames, not whole snippets.
        chunks = reader.chunks(e.chunk_frames, drop_remainder=False, whole_frame_gray=e.flow_region == "frame")
        recipe = self.recipe() | {"source": path.name, "duration_s": reader.info.duration_s}
        writer = self._write_npy if self.fmt == "npy" else self._write_jpg
        fields = writer(e.flow_fields(chunks), out_dir, name, recipe, progress, reader)
        return fields, reader.frames_total, float(reader.info.duration_s or 0.0)

    def _write_npy(self, pairs, out_dir: Path, name: str, recipe: dict, progress, reader) -> int:  # noqa: ANN001
        target = out_dir / f"{name}.flow.npy"
        meta = out_dir / f"{name}.flow.json"
        meta.unlink(missing_ok=True)  # the recipe is written last and vouches for a complete array
        count = 0
        with atomic_path(target, suffix=".npy") as tmp:
            with tmp.open("wb") as fh:
                fh.write(_npy_header((0, 224, 224, 2)))
                for _, fields in pairs:
                    fh.write(np.ascontiguousarray(fields, dtype="<f4").tobytes())
                    count += len(fields)
                    if progress:
                        progress(count, reader.info.frames_25fps_estimate)
                fh.seek(0)
                fh.write(_npy_header((count, 224, 224, 2)))
                fh.flush()
                os.fsync(fh.fileno())
        write_text_atomic(meta, json.dumps(recipe | {"fields": count}, indent=1) + "\n")
        return count

    def _write_jpg(self, pairs, out_dir: Path, name: str, recipe: dict, progress, reader) -> int:  # noqa: ANN001
        import cv2

        final = out_dir / name
        tmp = final.with_name(f".{final.name}.part-jpg")
        shutil.rmtree(tmp, ignore_errors=True)
        count = 0
        try:
            tmp.mkdir(parents=True)
            for _, fields in pairs:
                levels = to_jpeg_levels(fields)
                for plane in levels:
                    count += 1
                    for channel, axis in ((0, "x"), (1, "y")):
                        if not cv2.imwrite(str(tmp / f"flow_{axis}_{count:05d}.jpg"), plane[..., channel],
                                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                            raise Co2Error(f"{tmp}: cannot write JPEG files there (disk full or not writable)")
                if progress:
                    progress(count, reader.info.frames_25fps_estimate)
            (tmp / "flow.json").write_text(json.dumps(recipe | {"fields": count}, indent=1) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as exc:
            raise Co2Error(os_error_message(exc, final)) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return count
