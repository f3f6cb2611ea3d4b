"""`co2 extract-flow`: TV-L1 flow alone, written as I3D receives it (npy) or in the denseflow / mmaction layout (jpg).

* npy: `<name>.flow.npy`, float32 (N, 224, 224, 2) in [-1, 1] (pixels clipped to +-20, divided by 20; channels
  dx, dy), N frames at 25 fps -> N fields (the last repeats the previous one), streamed to disk chunk by chunk
  (memory stays bounded; the header is rewritten with the final N), plus `<name>.flow.json` (the recipe).
* jpg: `<name>/flow_x_00001.jpg`, `<name>/flow_y_00001.jpg`, ... (1-based), 8-bit with bound 20:
  value = round((px + 20) * 255 / 40), as denseflow and mmaction2 write them, plus `<name>/flow.json`. The folder
  is built under a temporary name and renamed when complete.

The work is split where a cluster splits it: `FlowCompute` computes a video's fields and *encodes* them chunk by
chunk (float32 bytes for npy, JPEG files for jpg: the costly part), and a `FlowWriter` only writes encoded chunks.
`runner.run_batch` runs the compute on its pool (this process, or a Ray worker) and the writer on the driver, so
every executor writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, Union

import numpy as np

from co2cli.batch import BatchItem
from co2cli.errors import Co2Error
from co2cli.fsio import atomic_path, os_error_message, write_text_atomic
from co2cli.runner import Chunk, Compute, Computed, Message

if TYPE_CHECKING:
    from co2cli.extract import FeatureExtractor, Progress
    from co2cli.video import VideoReader

FORMATS = ("npy", "jpg")
JPEG_QUALITY = 95  # OpenCV's default, what denseflow writes
_HEADER_BYTES = 128  # fixed .npy header length, so the final frame count can be written in place

EncodedChunk = Union[np.ndarray, list[tuple[bytes, bytes]]]
"""A chunk of fields as written: npy, float32 (n, 224, 224, 2) little-endian; jpg, n (flow_x, flow_y) JPEG files."""


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


def encode(fields: np.ndarray, fmt: str) -> EncodedChunk:
    """Fields (n, 224, 224, 2) in [-1, 1] as `fmt` stores them (see EncodedChunk)."""
    if fmt == "npy":
        return np.ascontiguousarray(fields, dtype="<f4")
    import cv2

    files = []
    for plane in to_jpeg_levels(fields):
        pair = []
        for channel in (0, 1):
            ok, data = cv2.imencode(".jpg", np.ascontiguousarray(plane[..., channel]),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:  # pragma: no cover - OpenCV built without JPEG support
                raise Co2Error("this OpenCV cannot encode JPEG files: use --format npy")
            pair.append(data.tobytes())
        files.append((pair[0], pair[1]))
    return files


def outputs(out_dir: Path, name: str, fmt: str) -> list[Path]:
    """What one video's flow is made of in `out_dir` (the first path is the one the CLI prints)."""
    return [out_dir / f"{name}.flow.npy", out_dir / f"{name}.flow.json"] if fmt == "npy" else [out_dir / name]


def is_done(out_dir: Path, name: str, fmt: str, region: str, backend: str | None) -> bool:
    """Whether `name`'s flow is complete in `out_dir` with this region and backend (None: any backend, as
    `--executor ray` with `--backend auto` accepts what each worker picked on its own device). Output of a
    backend that is bit-identical to `backend` here (`flow.equivalent_backends`) counts as done."""
    from co2cli.flow import equivalent_backends

    marker = (out_dir / f"{name}.flow.json") if fmt == "npy" else (out_dir / name / "flow.json")
    if not marker.is_file() or (fmt == "npy" and not (out_dir / f"{name}.flow.npy").is_file()):
        return False
    try:
        written = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    flow = written.get("flow") if isinstance(written, dict) else None
    return (isinstance(flow, dict) and flow.get("region") == region
            and (backend is None or flow.get("backend") in equivalent_backends(backend)))


# ---------------------------------------------------------------------------------------------------------------
# Writers: encoded chunks in, complete outputs (or nothing) out


class FlowWriter(Protocol):
    """Writes one video's encoded chunks; `finish` makes the output appear, `abort` leaves no trace of it."""

    fields: int

    def add(self, chunk: EncodedChunk) -> None: ...

    def finish(self, recipe: dict) -> None: ...

    def abort(self) -> None: ...


class _Guarded:
    """An OS failure in a writer's step is one Co2Error naming the output, after the partial output is removed."""

    output: Path

    def abort(self) -> None:
        raise NotImplementedError

    def _guard(self, step) -> None:  # noqa: ANN001 - a no-argument callable
        try:
            step()
        except OSError as exc:
            self.abort()
            raise Co2Error(os_error_message(exc, self.output)) from None


class NpyWriter(_Guarded):
    """`<name>.flow.npy` streamed under a temporary name, then `<name>.flow.json` (written last: it vouches for a
    complete array)."""

    def __init__(self, out_dir: Path, name: str) -> None:
        self.target = self.output = out_dir / f"{name}.flow.npy"
        self.meta = out_dir / f"{name}.flow.json"
        self.fields = 0
        self._stack = ExitStack()
        self._fh: BinaryIO | None = None
        self.meta.unlink(missing_ok=True)
        tmp = self._stack.enter_context(atomic_path(self.target, suffix=".npy"))
        self._guard(lambda: self._open(tmp))

    def _open(self, tmp: Path) -> None:
        self._fh = self._stack.enter_context(tmp.open("wb"))
        self._fh.write(_npy_header((0, 224, 224, 2)))

    def add(self, chunk: EncodedChunk) -> None:
        assert isinstance(chunk, np.ndarray) and self._fh is not None
        self._guard(lambda: self._fh.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes()))
        self.fields += len(chunk)

    def finish(self, recipe: dict) -> None:
        def close() -> None:
            assert self._fh is not None
            self._fh.seek(0)
            self._fh.write(_npy_header((self.fields, 224, 224, 2)))
            self._fh.flush()
            os.fsync(self._fh.fileno())

        self._guard(close)
        self._stack.close()  # closes the file, renames it over the target
        write_text_atomic(self.meta, json.dumps(recipe | {"fields": self.fields}, indent=1) + "\n")

    def abort(self) -> None:
        # Exiting atomic_path with an exception removes the temporary file instead of renaming it.
        self._stack.__exit__(Co2Error, Co2Error("aborted"), None)


class JpgWriter(_Guarded):
    """`<name>/flow_{x,y}_%05d.jpg` + `flow.json` built in `.<name>.part-jpg/`, renamed to `<name>/` when done."""

    def __init__(self, out_dir: Path, name: str) -> None:
        self.final = self.output = out_dir / name
        self.tmp = self.final.with_name(f".{self.final.name}.part-jpg")
        self.fields = 0
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._guard(lambda: self.tmp.mkdir(parents=True))

    def add(self, chunk: EncodedChunk) -> None:
        def write() -> None:
            for x_jpeg, y_jpeg in chunk:
                self.fields += 1
                (self.tmp / f"flow_x_{self.fields:05d}.jpg").write_bytes(x_jpeg)
                (self.tmp / f"flow_y_{self.fields:05d}.jpg").write_bytes(y_jpeg)

        self._guard(write)

    def finish(self, recipe: dict) -> None:
        def close() -> None:
            (self.tmp / "flow.json").write_text(json.dumps(recipe | {"fields": self.fields}, indent=1) + "\n")
            if self.final.exists():
                shutil.rmtree(self.final)
            os.replace(self.tmp, self.final)

        self._guard(close)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_writer(out_dir: Path, name: str, fmt: str) -> FlowWriter:
    """A writer for `name`'s flow in `fmt` (npy or jpg)."""
    return NpyWriter(out_dir, name) if fmt == "npy" else JpgWriter(out_dir, name)


# ---------------------------------------------------------------------------------------------------------------
# The job


@dataclass
class FlowSource:
    """One video's flow, computed and encoded as it is iterated."""

    reader: VideoReader
    chunks: Iterator[EncodedChunk]
    base_recipe: dict

    @property
    def frames_estimate(self) -> int | None:
        return self.reader.info.frames_25fps_estimate

    def recipe(self) -> dict:
        """The recipe to write (the field count is added by the writer); call after the chunks are consumed."""
        return self.base_recipe | {"source": self.reader.path.name, "duration_s": self.reader.info.duration_s}


def flow_recipe(extractor: FeatureExtractor, fmt: str) -> dict:
    """What every flow output of `extractor`'s settings in `fmt` shares (the per-video facts are added later)."""
    from co2cli import flow, video
    from co2cli.version import __version__

    e = extractor
    return {"co2cli_version": __version__, "format": fmt, "fps": video.FPS, "video": video.RECIPE,
            "flow": flow.recipe(e.flow_backend, e.flow_region),
            "layout": ("float32 (N, 224, 224, 2) in [-1, 1], channels (dx, dy)" if fmt == "npy" else
                       "flow_x_%05d.jpg / flow_y_%05d.jpg, 8-bit, bound 20 px: round((px + 20) * 255 / 40)")}


def flow_source(extractor: FeatureExtractor, path: str | Path, fmt: str) -> FlowSource:
    """Open `path` (a Co2Error if it is not a readable video) and compute its encoded fields lazily."""
    from co2cli import video

    e = extractor
    reader = video.VideoReader(path, max_side_px=e.max_side_px)
    # Every frame, the < 16 remainder included: flow users want N fields for N frames, not whole snippets.
    chunks = reader.chunks(e.chunk_frames, drop_remainder=False, whole_frame_gray=e.flow_region == "frame")
    encoded = (encode(fields, fmt) for _, fields in e.flow_fields(chunks))
    return FlowSource(reader, encoded, flow_recipe(e, fmt))


@dataclass(frozen=True)
class FlowCompute:
    """The compute of a flow job (runs anywhere): a video's encoded chunks, then its recipe."""

    fmt: str

    def __call__(self, extractor: FeatureExtractor, path: str, progress: Progress | None) -> Iterator[Message]:
        source = flow_source(extractor, path, self.fmt)
        if progress:
            progress(0, source.frames_estimate)  # the size is known before the first chunk (as extract does)
        done = 0
        for chunk in source.chunks:
            yield Chunk(chunk)
            done += len(chunk)
            if progress:
                progress(done, source.frames_estimate)
        yield Computed(source.recipe(), source.reader.frames_total, float(source.reader.info.duration_s or 0.0))


class _FlowOutput:
    """The driver's half: a FlowWriter opened on the first chunk (a video that fails to open leaves nothing)."""

    def __init__(self, out_dir: Path, path: Path, name: str, fmt: str) -> None:
        self.out_dir, self.path, self.name, self.fmt = out_dir, path, name, fmt
        self._writer: FlowWriter | None = None

    def _open(self) -> FlowWriter:
        if self._writer is None:
            self._writer = open_writer(self.out_dir, self.name, self.fmt)
        return self._writer

    def add(self, chunk: EncodedChunk) -> None:
        self._open().add(chunk)

    def finish(self, result: Computed) -> BatchItem:
        writer = self._open()  # a video of no fields still gets its (empty) output
        writer.finish(result.recipe)
        return BatchItem(self.path, self.name, "done", writer.fields, frames=result.frames,
                         duration_s=result.duration_s)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


@dataclass
class FlowJob:
    """`co2 extract-flow`: one video's flow into `out_dir` in `fmt` (npy or jpg). An output made with `region`
    and `backend` is finished (backend None: either, as Ray workers resolve `auto` on their own devices)."""

    out_dir: Path
    fmt: str
    region: str
    backend: str | None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise Co2Error(f"unknown flow format {self.fmt!r}: use npy or jpg")
        self.compute: Compute = FlowCompute(self.fmt)

    def outputs(self, name: str) -> Sequence[Path]:
        return outputs(self.out_dir, name, self.fmt)

    def is_done(self, name: str) -> bool:
        return is_done(self.out_dir, name, self.fmt, self.region, self.backend)

    def answer(self, path: Path, name: str) -> BatchItem | None:
        return None

    def writer(self, path: Path, name: str) -> _FlowOutput:
        return _FlowOutput(self.out_dir, path, name, self.fmt)
