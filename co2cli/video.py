"""Decode, resample to 25 fps, resize and crop video frames (stage 1 of the pipeline).

What comes out, and the rules that decide it:

* **Decode.** PyAV (FFmpeg) reads the file directly (no temporary re-encode); the first video stream is used.
  Frames are converted to RGB24 with `to_ndarray(format="rgb24", threads=1)`: PyAV's default swscale thread pool
  was several times slower on our 2-core machines (docs/pipeline.md), and decoder frame threading
  (`thread_type="AUTO"`) is not set because decode is < 1 % of the pipeline's cost and did not help here.
* **Resample to 25 fps by presentation timestamps** (VFR-safe). Time is exact (rational, in the stream's time
  base). With `start` = presentation time of the first decoded frame, output frame i has grid time
  `t_i = start + i / 25` s and shows the *latest decoded frame whose presentation time <= t_i*
  (nearest-previous, never a frame from the future). Each source frame k thus covers `[t_k, t_{k+1})`; the last
  one covers `[t_last, t_last + its duration)` (frame duration from the stream; else 1 / average fps).
  **N = the number of grid times before the end of the last frame** = ceil((end - start) * 25). For a
  constant-rate clip this is duration * 25 with the duration measured as frames / fps (e.g. 420 frames at
  30 fps -> 14.0 s -> 350 frames). Frames whose timestamp does not increase are skipped (broken streams);
  frames without a timestamp are placed one average frame interval after the previous one.
* **Rotation** metadata (display matrix, `frame.rotation`, counter-clockwise degrees; legacy `rotate` tag as a
  fallback) is applied before resizing, in quarter turns, so the network sees the picture upright.
  Mirror flags and sample aspect ratio are ignored.
* **Resize and crop.** Pillow BILINEAR resize of the short side to 256 (long side = round(long * 256 / short)),
  then a centre crop 224 x 224 at top = (H - 224) // 2, left = (W - 224) // 2. This is the provenance of the
  I3D fixtures (shared/fixtures/i3d/README.md, section 2).
* **Units.** RGB is uint8 0..255 in RGB order, (n, 224, 224, 3); `rgb_to_float` gives the I3D input, float32
  in [-1, 1] (x / 127.5 - 1). Grayscale (for TV-L1) is uint8 0..255, (n, 224, 224), computed from the 224 crop
  with OpenCV's RGB2GRAY (0.299 R + 0.587 G + 0.114 B). Flow is computed on the crop, not on the
  256-short-side frame: the crop is what I3D sees and TV-L1 on the larger frame costs 1.5-2.8x more.
  Times are float64 seconds in the stream's own clock; indices are 25 fps output frame numbers from 0.
* **Snippets.** One I3D snippet = 16 frames = 0.64 s; T = floor(N / 16). The trailing N - 16 T frames
  (< 0.64 s) are dropped: `iter_chunks(..., drop_remainder=True)` (the default) never yields them, so the RGB
  and flow streams both have exactly 16 T frames (flow's last field is then a repeat, see flow.py).
  A video with N < 16 is an error.
* **Bad input** raises `Co2Error` with one line: missing, empty, a folder, not a video (or text that FFmpeg's
  tty demuxer would render), audio only, too large (> 16384 px a side or > 67 Mpx) or elongated (> 8:1),
  corrupt or truncated (any FFmpeg error while decoding: frames before the error are not kept, the whole file
  is refused), or shorter than one snippet. No PyAV exception escapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import cv2
import numpy as np
from PIL import Image

from co2cli.errors import Co2Error
from co2cli.timebase import FPS, SNIPPET_FRAMES, SNIPPET_SECONDS

SHORT_SIDE = 256
"""Pixels of the short side after the resize."""

CROP = 224
"""Pixels of the square centre crop fed to flow and I3D."""

DEFAULT_CHUNK_FRAMES = 8 * SNIPPET_FRAMES
"""Output frames per chunk: 128 frames = 5.12 s = 19 MB of RGB uint8."""

MAX_SIDE_PX = 2560
"""Default limit on the long side in pixels (1440p passes, 4K is refused): decoding and resizing 4K costs far more
than the 224 crop I3D keeps, so we ask for a downscaled copy. `max_side_px` (CLI `--max-side`) raises it."""

HARD_MAX_SIDE_PX = 16384
"""Above this nothing is accepted, whatever `max_side_px` says."""

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".3gp", ".ts", ".mts", ".ogv"})
"""File endings taken as videos when a folder is searched."""

MAX_PIXELS = 8192 * 8192
"""Frames with more pixels (67 Mpx) are refused: one RGB frame would exceed 200 MB."""

MAX_ASPECT = 8.0
"""Long side / short side above this is refused: the 256-short-side frame would be huge and the crop meaningless."""

# FFmpeg renders text files as "video" through these demuxers/decoders; they are not videos for us.
_TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

_ROTATE_CCW = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}

RECIPE = {
    "decoder": f"PyAV {av.__version__}, first video stream, rgb24",
    "fps": FPS,
    "resample": "nearest previous frame by presentation time; N = grid times before the last frame's end",
    "rotation": "display matrix applied in quarter turns before resizing",
    "resize": f"Pillow BILINEAR, short side {SHORT_SIDE}, long side round(long*{SHORT_SIDE}/short)",
    "crop": f"centre {CROP}x{CROP}, top=(H-{CROP})//2, left=(W-{CROP})//2",
    "rgb": "uint8 -> float32 x/127.5-1",
    "gray": "cv2 COLOR_RGB2GRAY of the crop",
    "snippet": f"{SNIPPET_FRAMES} frames, trailing remainder dropped",
}
"""How frames were made, for the feature file's recipe."""


@dataclass(frozen=True)
class VideoInfo:
    """Container and first-video-stream metadata; sizes in pixels as stored (before rotation)."""

    path: Path
    container: str
    has_video: bool
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    """Counter-clockwise degrees to apply for display, 0, 90, 180 or 270 (display matrix of the first frame)."""
    source_fps: float | None = None
    """The stream's average frame rate (frames per second), None when unknown."""
    duration_s: float | None = None
    """Video stream duration in seconds (the container's when the stream has none)."""
    frame_count: int | None = None
    """Source frames: the stream header's count, else an estimate duration_s * source_fps."""
    start_s: float | None = None

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) in pixels after rotation."""
        if self.width is None or self.height is None:
            return None
        turned = (self.rotation // 90) % 2 == 1
        return (self.height, self.width) if turned else (self.width, self.height)

    @property
    def frames_25fps_estimate(self) -> int | None:
        """About how many 25 fps output frames decoding will give (exact count needs the last frame's end)."""
        return None if self.duration_s is None else math.ceil(self.duration_s * FPS)


@dataclass(frozen=True)
class Frames:
    """Consecutive 25 fps output frames `start_index .. start_index + n - 1` (a chunk, or a whole video)."""

    start_index: int
    rgb: np.ndarray
    """(n, 224, 224, 3) uint8 0..255, RGB order."""
    gray: np.ndarray
    """(n, 224, 224) uint8 0..255, grayscale of `rgb` (TV-L1 input)."""
    grid_times_s: np.ndarray
    """(n,) float64 seconds: the 25 fps grid time start + i / 25 of each output frame."""
    source_times_s: np.ndarray
    """(n,) float64 seconds: presentation time of the source frame shown (<= grid time)."""
    source_indices: np.ndarray
    """(n,) int64: which decoded frame (0-based, presentation order) each output frame shows."""
    gray_frame: np.ndarray | None = None
    """(n, H, W) uint8 grayscale of the whole resized frame (short side 256), when asked for (flow region
    'frame', the Kinetics recipe); `crop_box` locates the 224 crop inside it."""
    crop_box: tuple[int, int] = (0, 0)
    """(top, left) pixels of the 224 x 224 crop inside the resized frame."""

    def __len__(self) -> int:
        return int(self.rgb.shape[0])


def rgb_to_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 in [-1, 1] as x / 127.5 - 1, computed in float32 (the I3D input scaling)."""
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got {rgb.dtype}")
    return rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def resized_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) in pixels after scaling the short side to 256 (long side rounded)."""
    if width <= height:
        return SHORT_SIDE, round(height * SHORT_SIDE / width)
    return round(width * SHORT_SIDE / height), SHORT_SIDE


def resize_short_side(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB picture (any size) -> (H, W, 3) uint8 with the short side 256 (Pillow BILINEAR)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    width, height = resized_size(*image.size)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def crop_box(height: int, width: int) -> tuple[int, int]:
    """(top, left) of the centre 224 crop in a (height, width) frame: ((H - 224) // 2, (W - 224) // 2)."""
    return (height - CROP) // 2, (width - CROP) // 2


def resize_crop(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB picture (any size) -> (224, 224, 3) uint8: Pillow BILINEAR short side 256, centre crop 224."""
    frame = resize_short_side(image)
    top, left = crop_box(*frame.shape[:2])
    return frame[top:top + CROP, left:left + CROP]


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., H, W) uint8 grayscale with OpenCV's RGB2GRAY weights."""
    flat = np.ascontiguousarray(rgb).reshape(-1, rgb.shape[-2], 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(rgb.shape[:-1])


# ---------------------------------------------------------------------------------------------------------------
# 25 fps resampling (pure: times in, assignments out)

T = TypeVar("T")


@dataclass(frozen=True)
class GridUse:
    """Source frame `item` fills output frames `first .. first + copies - 1`."""

    item: Any
    time: Fraction
    """Presentation time of the source frame, seconds."""
    first: int
    copies: int


def grid_frames_before(time: Fraction, start: Fraction, fps: int = FPS) -> int:
    """How many grid times start + i / fps (i >= 0) lie strictly before `time` (all in seconds)."""
    return max(0, math.ceil((time - start) * fps))


def resample(timed: Iterable[tuple[T, Fraction]], last_duration: Callable[[T], Fraction],
             fps: int = FPS) -> Iterator[GridUse]:
    """Nearest-previous resampling of (item, presentation time s) in presentation order onto a `fps` grid.

    Yields only items that are shown (copies >= 1), in order, as soon as the next item's time is known, so it
    streams. The grid starts at the first item's time; items whose time does not increase are skipped; the
    last item lasts `last_duration(item)` seconds.
    """
    pending: tuple[T, Fraction] | None = None
    start = Fraction(0)
    done = 0  # grid frames already assigned
    for item, time in timed:
        if pending is None:
            pending, start = (item, time), time
            continue
        if time <= pending[1]:
            continue
        end = grid_frames_before(time, start, fps)
        if end > done:
            yield GridUse(pending[0], pending[1], done, end - done)
            done = end
        pending = (item, time)
    if pending is not None:
        end = grid_frames_before(pending[1] + last_duration(pending[0]), start, fps)
        if end > done:
            yield GridUse(pending[0], pending[1], done, end - done)


# ---------------------------------------------------------------------------------------------------------------
# Opening and probing


def _av_reason(exc: BaseException) -> str:
    """The useful part of an FFmpeg error ('Invalid data found when processing input'), one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def _open(path: Path) -> av.container.InputContainer:
    """Open `path` with FFmpeg, turning every way it can fail into one Co2Error line."""
    if not path.exists():
        raise Co2Error(f"{path}: no such file")
    if path.is_dir():
        raise Co2Error(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise Co2Error(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise Co2Error(f"{path}: not a video file FFmpeg can read: corrupt, truncated or another kind of file "
                       f"({_av_reason(exc)})") from exc
    if container.format.name in _TEXT_DEMUXERS:
        container.close()
        raise Co2Error(f"{path}: not a video file (FFmpeg reads it as text, format {container.format.name!r})")
    return container


def _legacy_rotation(stream: av.video.stream.VideoStream) -> int:
    """Counter-clockwise degrees from the old `rotate` tag (which is clockwise), 0 when absent or unreadable."""
    try:
        return -int(float(stream.metadata.get("rotate", 0)))
    except ValueError:
        return 0


def _stream_duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _describe(path: Path, container: av.container.InputContainer, rotation: int = 0) -> VideoInfo:
    if not container.streams.video:
        return VideoInfo(path=path, container=container.format.name, has_video=False,
                         duration_s=(container.duration / av.time_base) if container.duration else None)
    stream = container.streams.video[0]
    ctx = stream.codec_context
    fps = float(stream.average_rate) if stream.average_rate else None
    duration = _stream_duration_s(container, stream)
    count = stream.frames if stream.frames and stream.frames > 0 else None
    if count is None and duration is not None and fps is not None:
        count = round(duration * fps)
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else None
    return VideoInfo(path=path, container=container.format.name, has_video=True, codec=ctx.name,
                     width=ctx.width or None, height=ctx.height or None, rotation=rotation,
                     source_fps=fps, duration_s=duration, frame_count=count, start_s=start)


def effective_max_side(max_side_px: int | None = None) -> int:
    """The long-side limit in pixels: `max_side_px` if given (capped at HARD_MAX_SIDE_PX), else MAX_SIDE_PX."""
    return MAX_SIDE_PX if max_side_px is None else min(int(max_side_px), HARD_MAX_SIDE_PX)


def _check_size(path: Path, width: int | None, height: int | None, limit: int = MAX_SIDE_PX) -> None:
    if not width or not height:
        return  # unknown until a frame is decoded; checked again per frame
    if max(width, height) > limit or width * height > MAX_PIXELS:
        raise Co2Error(f"{path}: resolution {width}x{height} is above the {limit} px limit: downscale it first "
                       f"(e.g. ffmpeg -i IN -vf scale=-2:720 OUT) or raise the limit (--max-side "
                       f"{HARD_MAX_SIDE_PX})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise Co2Error(f"{path}: frame shape {width}x{height} is too elongated (limit {MAX_ASPECT:g}:1)")


def _frames(path: Path, container: av.container.InputContainer,
            stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; any FFmpeg error mid-stream becomes a Co2Error (whole file refused)."""
    decoded = container.decode(stream)
    count = 0
    while True:
        try:
            frame = next(decoded)
        except StopIteration:
            return
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise Co2Error(f"{path}: corrupt or truncated video: decoding failed after {count} frames "
                           f"({_av_reason(exc)})") from exc
        count += 1
        yield frame


def video_info(path: str | Path) -> VideoInfo:
    """Container and stream metadata of a file that must be a video (no frame is decoded, so a whole batch is
    checked in moments); a one-line Co2Error for a missing, unreadable, audio-only or text file."""
    path = Path(path)
    container = _open(path)
    try:
        info = _describe(path, container)
    finally:
        container.close()
    if not info.has_video:
        raise Co2Error(f"{path}: no video stream (audio only?)")
    if info.codec in _TEXT_CODECS:
        raise Co2Error(f"{path}: not a video file (FFmpeg reads it as text)")
    return info


def probe(path: str | Path) -> VideoInfo:
    """Metadata of `path` (decodes only the first frame, for its rotation). Audio-only files give has_video=False.

    Raises Co2Error when the file is missing, empty, not readable by FFmpeg or its first frame does not decode.
    """
    path = Path(path)
    container = _open(path)
    try:
        info = _describe(path, container)
        if info.codec in _TEXT_CODECS:
            raise Co2Error(f"{path}: not a video file (FFmpeg reads it as text)")
        if not info.has_video:
            return info
        stream = container.streams.video[0]
        rotation = _legacy_rotation(stream)
        for frame in _frames(path, container, stream):
            rotation = getattr(frame, "rotation", 0) or rotation
            break
        return _describe(path, container, 90 * _quarter_turns(rotation))
    finally:
        container.close()


# ---------------------------------------------------------------------------------------------------------------
# Decoding into 25 fps chunks


def _quarter_turns(degrees: int) -> int:
    """Counter-clockwise degrees -> 0..3 quarter turns (non-right angles are rounded)."""
    return round(degrees / 90) % 4


def _frame_turns(frame: av.VideoFrame, fallback_rotation: int) -> int:
    """Counter-clockwise quarter turns that make this frame upright (its display matrix, else the stream tag)."""
    return _quarter_turns(getattr(frame, "rotation", 0) or fallback_rotation)


def _frame_rgb(path: Path, frame: av.VideoFrame, turns: int, limit: int) -> np.ndarray:
    """One decoded frame -> upright (H, W, 3) uint8 RGB, short side 256."""
    _check_size(path, frame.width, frame.height, limit)
    try:
        rgb = frame.to_ndarray(format="rgb24", threads=1)
    except (av.FFmpegError, ValueError) as exc:
        raise Co2Error(f"{path}: cannot convert frames to RGB ({_av_reason(exc)})") from exc
    image = Image.fromarray(rgb)
    if turns:
        image = image.transpose(_ROTATE_CCW[turns])
    return resize_short_side(image)


class VideoReader:
    """A video opened for 25 fps decoding; `chunks()` streams it, counters are filled as it goes.

    Opening validates the file (missing / empty / not a video / audio only / too large) before any decoding.
    """

    def __init__(self, path: str | Path, max_side_px: int | None = None):
        self.path = Path(path)
        self.max_side_px = effective_max_side(max_side_px)
        self.info = video_info(self.path)
        _check_size(self.path, self.info.width, self.info.height, self.max_side_px)
        self.rotation_applied_deg = 0
        """Counter-clockwise degrees applied to make the first shown frame upright (known once decoding starts)."""
        self.frames_decoded = 0
        """Source frames decoded so far."""
        self.frames_total = 0
        """25 fps output frames N (known once `chunks()` is exhausted), remainder included."""
        self.frames_yielded = 0
        """25 fps output frames yielded (16 T with drop_remainder)."""

    def _timed(self, container: av.container.InputContainer,
               stream: av.video.stream.VideoStream) -> Iterator[tuple[tuple[int, av.VideoFrame], Fraction]]:
        """((decoded index, frame), presentation time in seconds) for every decoded frame."""
        time_base = stream.time_base or Fraction(1, 1_000_000)
        step = 1 / Fraction(stream.average_rate) if stream.average_rate else Fraction(1, FPS)
        previous: Fraction | None = None
        for index, frame in enumerate(_frames(self.path, container, stream)):
            self.frames_decoded = index + 1
            if frame.pts is not None:
                time = Fraction(frame.pts) * Fraction(frame.time_base or time_base)
            else:
                time = Fraction(0) if previous is None else previous + step
            previous = time
            yield (index, frame), time

    @staticmethod
    def _last_duration(stream: av.video.stream.VideoStream) -> Callable[[tuple[int, av.VideoFrame]], Fraction]:
        """Seconds the last frame is shown: its own duration, else one average frame interval, else 1/25 s."""
        def duration(item: tuple[int, av.VideoFrame]) -> Fraction:
            frame = item[1]
            time_base = frame.time_base or stream.time_base
            ticks = getattr(frame, "duration", None)  # PyAV >= 13
            if ticks and ticks > 0 and time_base:
                return Fraction(ticks) * Fraction(time_base)
            if stream.average_rate:
                return 1 / Fraction(stream.average_rate)
            return Fraction(1, FPS)
        return duration

    def chunks(self, chunk_frames: int = DEFAULT_CHUNK_FRAMES, drop_remainder: bool = True,
               whole_frame_gray: bool = False) -> Iterator[Frames]:
        """Yield `Frames` of `chunk_frames` output frames (the last chunk may be shorter).

        `chunk_frames` must be a positive multiple of 16 so chunks hold whole snippets. With `drop_remainder` the
        trailing N - 16 T frames are not yielded. Raises Co2Error (before yielding anything) when N < 16.
        `whole_frame_gray` also fills `Frames.gray_frame` (the whole resized frame, for flow region 'frame').
        Each source frame is converted and resized at most once, and only if the 25 fps grid shows it.
        """
        if chunk_frames <= 0 or chunk_frames % SNIPPET_FRAMES:
            raise ValueError(f"chunk_frames must be a positive multiple of {SNIPPET_FRAMES}, got {chunk_frames}")
        self.frames_decoded = self.frames_total = self.frames_yielded = 0
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            fallback_rotation = _legacy_rotation(stream)
            buffer = _ChunkBuffer(chunk_frames, whole_frame_gray)
            for use in resample(self._timed(container, stream), self._last_duration(stream)):
                index, frame = use.item
                turns = _frame_turns(frame, fallback_rotation)
                if self.frames_total == 0:
                    self.rotation_applied_deg = 90 * turns
                resized = _frame_rgb(self.path, frame, turns, self.max_side_px)
                left = use.copies
                while left:
                    taken = buffer.add(resized, float(use.time), index, left, self.path)
                    left -= taken
                    if buffer.full:
                        self.frames_yielded += len(buffer)
                        yield buffer.take()
                self.frames_total = use.first + use.copies
            if self.frames_total < SNIPPET_FRAMES:
                raise Co2Error(f"{self.path}: too short: {self.frames_total} frames at {FPS} fps "
                               f"({self.frames_total / FPS:.2f} s); one snippet needs {SNIPPET_FRAMES} frames "
                               f"({float(SNIPPET_SECONDS):.2f} s)")
            keep = len(buffer) - (len(buffer) % SNIPPET_FRAMES if drop_remainder else 0)
            if keep:
                self.frames_yielded += keep
                yield buffer.take(keep)
        finally:
            container.close()


class _ChunkBuffer:
    """Preallocated output chunk; the grid time of frame i is start + i / 25 relative to the first frame."""

    def __init__(self, size: int, whole_frame_gray: bool = False):
        self.size = size
        self.whole_frame_gray = whole_frame_gray
        self._start_time: float | None = None
        self._frame_shape: tuple[int, int] | None = None
        self._reset(0)

    def _reset(self, start_index: int) -> None:
        self.start_index = start_index
        self.n = 0
        self.rgb = np.empty((self.size, CROP, CROP, 3), np.uint8)
        self.gray_frame = (np.empty((self.size, *self._frame_shape), np.uint8)
                           if self.whole_frame_gray and self._frame_shape else None)
        self.source_times = np.empty(self.size, np.float64)
        self.source_indices = np.empty(self.size, np.int64)

    def __len__(self) -> int:
        return self.n

    @property
    def full(self) -> bool:
        return self.n == self.size

    def add(self, resized: np.ndarray, time_s: float, source_index: int, copies: int, path: Path) -> int:
        """Append up to `copies` copies of a resized frame shown at source time `time_s`; return how many fit."""
        if self._start_time is None:
            self._start_time = time_s  # the first shown frame opens the grid
        shape = resized.shape[:2]
        if self._frame_shape is None:
            self._frame_shape = shape
            if self.whole_frame_gray:
                self.gray_frame = np.empty((self.size, *shape), np.uint8)
        elif shape != self._frame_shape:
            raise Co2Error(f"{path}: the frame size changes mid-stream ({self._frame_shape[1]}x{self._frame_shape[0]}"
                           f" -> {shape[1]}x{shape[0]} after resizing); re-encode it at one size")
        top, left = crop_box(*shape)
        taken = min(copies, self.size - self.n)
        rows = slice(self.n, self.n + taken)
        self.rgb[rows] = resized[top:top + CROP, left:left + CROP]
        if self.gray_frame is not None:
            self.gray_frame[rows] = to_gray(resized)
        self.source_times[rows] = time_s
        self.source_indices[rows] = source_index
        self.n += taken
        return taken

    def take(self, count: int | None = None) -> Frames:
        count = self.n if count is None else count
        rgb = self.rgb[:count]
        indices = np.arange(self.start_index, self.start_index + count)
        # Grid time exactly as defined: start + i / 25 (computed from the index, no accumulated rounding).
        grid = (self._start_time or 0.0) + indices / FPS
        box = crop_box(*self._frame_shape) if self._frame_shape else (0, 0)
        whole = self.gray_frame[:count] if self.gray_frame is not None else None
        frames = Frames(self.start_index, rgb, to_gray(rgb), grid, self.source_times[:count].copy(),
                        self.source_indices[:count].copy(), whole, box)
        self._reset(self.start_index + self.n)
        return frames


def iter_chunks(path: str | Path, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                drop_remainder: bool = True, max_side_px: int | None = None) -> Iterator[Frames]:
    """Stream `path` as 25 fps `Frames` chunks (see `VideoReader.chunks`); memory stays O(chunk_frames)."""
    return VideoReader(path, max_side_px).chunks(chunk_frames, drop_remainder)


def concat(chunks: Iterable[Frames]) -> Frames:
    """Join consecutive chunks into one `Frames` (for short clips and tests)."""
    parts = list(chunks)
    if not parts:
        empty = np.empty(0)
        return Frames(0, np.empty((0, CROP, CROP, 3), np.uint8), np.empty((0, CROP, CROP), np.uint8),
                      empty, empty.copy(), np.empty(0, np.int64))
    whole = (np.concatenate([p.gray_frame for p in parts]) if all(p.gray_frame is not None for p in parts)
             else None)
    return Frames(parts[0].start_index, np.concatenate([p.rgb for p in parts]),
                  np.concatenate([p.gray for p in parts]), np.concatenate([p.grid_times_s for p in parts]),
                  np.concatenate([p.source_times_s for p in parts]), np.concatenate([p.source_indices for p in parts]),
                  whole, parts[0].crop_box)


def read_video(path: str | Path, drop_remainder: bool = True) -> Frames:
    """The whole video at 25 fps in memory (short clips only: 150 KB of RGB per frame, 3.7 MB per second)."""
    return concat(iter_chunks(path, DEFAULT_CHUNK_FRAMES, drop_remainder))
