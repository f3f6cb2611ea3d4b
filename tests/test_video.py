"""Video front end: real decoding of the sample clips and of small clips encoded here with PyAV."""

from __future__ import annotations

import math
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from co2cli import video
from co2cli.timebase import n_snippets
from co2cli.errors import Co2Error
from tests.shared_paths import I3D_FIXTURES, SAMPLE_VIDEOS, need

LIFT = "v_GGSY1Qvo990.mp4"  # 320x240, 981/50 = 19.62 fps, 355 frames
DOG = "v_ZNVhz7ctTq0.mp4"  # 480x360, 30 fps, 420 frames


def write_clip(path: Path, images: list[np.ndarray], pts: list[int] | None = None,
               time_base: Fraction = Fraction(1, 25), codec: str = "libx264", rotation: int | None = None,
               rate: int = 25) -> Path:
    """Encode RGB uint8 images with PyAV at the given presentation timestamps (in `time_base` units)."""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "10"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = (pts[k] if pts is not None else k), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def flat(level: int, width: int = 64, height: int = 48) -> np.ndarray:
    return np.full((height, width, 3), level, np.uint8)


def decoded_timeline(path: Path) -> tuple[list[Fraction], Fraction]:
    """Presentation times of the decoded frames and the end of the last one, read straight from PyAV (seconds)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    times = [Fraction(f.pts) * f.time_base for f in frames]
    return times, times[-1] + Fraction(frames[-1].duration) * frames[-1].time_base


def oracle_indices(times: list[Fraction], end: Fraction) -> list[int]:
    """The documented rule, written independently: grid i shows the latest frame with time <= start + i/25."""
    n = math.ceil((end - times[0]) * 25)
    return [max(k for k, t in enumerate(times) if t <= times[0] + Fraction(i, 25)) for i in range(n)]


@pytest.fixture(scope="module")
def lift() -> video.Frames:
    return video.read_video(need(SAMPLE_VIDEOS / LIFT), drop_remainder=False)


# --- the sample clips ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fps, decoded, duration_s", [
    (LIFT, Fraction(981, 50), 355, Fraction(355 * 50, 981)),  # last frame starts 17700/981 s and lasts 50/981 s
    (DOG, Fraction(30), 420, Fraction(14)),
])
def test_sample_clips_frame_counts(name: str, fps: Fraction, decoded: int, duration_s: Fraction) -> None:
    path = need(SAMPLE_VIDEOS / name)
    info = video.probe(path)
    assert info.has_video and info.frame_count == decoded and info.rotation == 0
    assert info.source_fps == pytest.approx(float(fps))
    reader = video.VideoReader(path)
    frames = video.concat(reader.chunks(drop_remainder=False))
    n = math.ceil(duration_s * 25)  # 453 and 350 output frames
    assert reader.frames_decoded == decoded
    assert reader.frames_total == len(frames) == n
    assert frames.rgb.shape == (n, 224, 224, 3) and frames.rgb.dtype == np.uint8
    assert frames.gray.shape == (n, 224, 224) and frames.gray.dtype == np.uint8
    # Constant rate: grid frame i shows source frame floor(i * fps / 25), exactly (rational time, no rounding).
    i = np.arange(n)
    np.testing.assert_array_equal(frames.source_indices, (i * fps.numerator) // (25 * fps.denominator))
    np.testing.assert_allclose(frames.grid_times_s, i / 25)
    np.testing.assert_allclose(frames.source_times_s, frames.source_indices * float(1 / fps))
    assert np.all(frames.source_times_s <= frames.grid_times_s + 1e-12)
    assert np.all(frames.grid_times_s - frames.source_times_s < float(1 / fps))
    # Default: the trailing N mod 16 frames are dropped so RGB and flow have 16 T frames.
    kept = video.read_video(path)
    assert len(kept) == 16 * n_snippets(n) == 16 * (n // 16)
    np.testing.assert_array_equal(kept.rgb, frames.rgb[:len(kept)])


def test_crops_equal_the_i3d_fixture_preprocessing(lift: video.Frames) -> None:
    """Source frames 112..175, decoded + resized + cropped by us, equal the uint8 clip of the I3D fixtures."""
    fixtures = np.load(need(I3D_FIXTURES / "rgb_cases.npz"))
    clip, indices = fixtures["clip64_uint8"], fixtures["clip64_frame_indices"]
    for source_index, expected in zip(indices, clip):
        shown = np.flatnonzero(lift.source_indices == source_index)
        for row in shown:  # some source frames are shown twice at 25 fps, some never (19.62 fps source)
            np.testing.assert_array_equal(lift.rgb[row], expected)
    assert sum(np.count_nonzero(lift.source_indices == k) for k in indices) > 64


def test_gray_and_float_scaling(lift: video.Frames) -> None:
    rgb = lift.rgb[:4].astype(np.float64)
    expected_gray = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(lift.gray[:4] - expected_gray).max() <= 1.0
    x = video.rgb_to_float(lift.rgb[:2])
    assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(video.rgb_to_float(np.array([0, 255], np.uint8)), [-1.0, 1.0])
    np.testing.assert_array_equal(x, lift.rgb[:2].astype(np.float32) / np.float32(127.5) - np.float32(1))


def test_chunks_equal_whole_video(lift: video.Frames) -> None:
    chunks = list(video.iter_chunks(SAMPLE_VIDEOS / LIFT, chunk_frames=32, drop_remainder=False))
    assert [len(c) for c in chunks] == [32] * 14 + [453 - 14 * 32]
    assert [c.start_index for c in chunks] == list(range(0, 453, 32))
    joined = video.concat(chunks)
    for name in ("rgb", "gray", "grid_times_s", "source_times_s", "source_indices"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(lift, name))
    with pytest.raises(ValueError):
        next(video.iter_chunks(SAMPLE_VIDEOS / LIFT, chunk_frames=20))


def test_truncated_mp4_is_refused(tmp_path: Path) -> None:
    data = need(SAMPLE_VIDEOS / LIFT).read_bytes()
    for fraction in (0.5, 0.02, 0.005):  # mid-stream, before the first frame, inside the header
        cut = tmp_path / f"cut{fraction}.mp4"
        cut.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(Co2Error, match="corrupt or truncated|not a video file FFmpeg can read"):
            video.read_video(cut)
    with pytest.raises(Co2Error, match=r"corrupt or truncated video: decoding failed after \d+ frames"):
        video.read_video(tmp_path / "cut0.5.mp4")


# --- synthetic clips --------------------------------------------------------------------------------------------

def test_cfr_odd_frame_count(tmp_path: Path) -> None:
    """21 frames at 25 fps: identity mapping; 21 output frames, 16 kept (one snippet)."""
    path = write_clip(tmp_path / "cfr.mp4", [flat(10 + 10 * k) for k in range(21)])
    frames = video.read_video(path, drop_remainder=False)
    np.testing.assert_array_equal(frames.source_indices, np.arange(21))
    np.testing.assert_allclose(frames.grid_times_s, np.arange(21) / 25)
    np.testing.assert_allclose(frames.rgb.reshape(21, -1).mean(axis=1), 10 + 10 * np.arange(21), atol=3)
    assert len(video.read_video(path)) == 16


@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_vfr_nearest_previous(tmp_path: Path, suffix: str) -> None:
    pts_ms = [0, 40, 50, 130, 300, 310, 320, 500, 700, 720, 1000]
    path = write_clip(tmp_path / f"vfr.{suffix}", [flat(20 + 12 * k) for k in range(len(pts_ms))], pts_ms,
                      Fraction(1, 1000))
    times, end = decoded_timeline(path)
    assert times == [Fraction(p, 1000) for p in pts_ms]
    expected = oracle_indices(times, end)
    frames = video.read_video(path, drop_remainder=False)
    np.testing.assert_array_equal(frames.source_indices, expected)
    # Worked by hand: 0.12 s shows the 50 ms frame, 0.32 s the 320 ms one, 0.72 s the 720 ms one (700 is skipped).
    assert expected[:26] == [0, 1, 2, 2, 3, 3, 3, 3, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 9, 9, 9, 9, 9, 9, 9, 10]
    np.testing.assert_allclose(frames.source_times_s, [float(times[k]) for k in expected])
    # The pixels really come from those frames (levels 20 + 12 k), not only the bookkeeping.
    np.testing.assert_allclose(frames.rgb.reshape(len(frames), -1).mean(axis=1), 20 + 12 * np.array(expected), atol=4)


def test_resample_rule_pure() -> None:
    times = [Fraction(0), Fraction(1, 10), Fraction(1, 10), Fraction(1, 20), Fraction(3, 10)]  # two non-increasing
    uses = list(video.resample(((k, t) for k, t in enumerate(times)), lambda item: Fraction(1, 10)))
    assert [(u.item, u.first, u.copies) for u in uses] == [(0, 0, 3), (1, 3, 5), (4, 8, 2)]
    # A start offset moves the grid with it: grid time = start + i/25.
    late = list(video.resample([("a", Fraction(5)), ("b", Fraction(5) + Fraction(1, 25))], lambda _: Fraction(1, 25)))
    assert [(u.item, u.first, u.copies) for u in late] == [("a", 0, 1), ("b", 1, 1)]


def quadrant_image(width: int = 96, height: int = 48) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:height // 2, :width // 2] = 255  # white top-left quarter
    return image


@pytest.mark.parametrize("rotation, bright", [(None, (0, 0)), (90, (1, 0)), (180, (1, 1)), (-90, (0, 1))])
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int | None, bright: tuple[int, int]) -> None:
    """Display matrix = counter-clockwise degrees: the white top-left quarter ends up in a known crop quadrant."""
    path = write_clip(tmp_path / "rot.mp4", [quadrant_image()] * 17, rotation=rotation)
    info = video.probe(path)
    assert info.rotation == (rotation or 0) % 360
    assert info.display_size == ((96, 48) if rotation in (None, 180) else (48, 96))
    crop = video.read_video(path).rgb[0].mean(axis=2)
    for row in (0, 1):
        for col in (0, 1):
            mean = crop[row * 112 + 8:row * 112 + 104, col * 112 + 8:col * 112 + 104].mean()
            assert (mean > 200) if (row, col) == bright else (mean < 40), (row, col, mean)


def test_4k_clip_is_refused_by_default_and_resized_when_allowed(tmp_path: Path, monkeypatch) -> None:
    """3840x2160 is refused with one line by default; with max_side_px=4096 (--max-side) it decodes:
    two frames at 1 fps -> 2 s -> 50 frames at 25 fps, each source frame converted once."""
    y, x = np.mgrid[0:2160, 0:3840]
    images = [np.stack([x % 256, y % 256, (x // 16 + 40 * k) % 256], axis=2).astype(np.uint8) for k in range(2)]
    path = write_clip(tmp_path / "uhd.mp4", images, pts=[0, 1], time_base=Fraction(1, 1), rate=1)
    info = video.probe(path)
    assert (info.width, info.height) == (3840, 2160)
    with pytest.raises(Co2Error, match="3840x2160 is above the 2560 px limit") as caught:
        video.VideoReader(path)
    assert "\n" not in str(caught.value)
    reader = video.VideoReader(path, max_side_px=4096)
    frames = video.concat(reader.chunks(drop_remainder=False))
    assert reader.frames_decoded == 2 and len(frames) == 50
    np.testing.assert_array_equal(frames.source_indices, [0] * 25 + [1] * 25)
    with av.open(str(path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(frames.rgb[0], video.resize_crop(first))
    assert video.resized_size(3840, 2160) == (455, 256)


def test_one_frame_clip_is_too_short(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "one.mp4", [flat(100)])
    assert video.probe(path).frame_count == 1
    with pytest.raises(Co2Error, match="too short: 1 frames at 25 fps"):
        video.read_video(path)
    fifteen = write_clip(tmp_path / "fifteen.mp4", [flat(100)] * 15)
    with pytest.raises(Co2Error, match="one snippet needs 16 frames"):
        list(video.iter_chunks(fifteen, chunk_frames=16))


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    info = video.probe(path)
    assert not info.has_video and info.duration_s == pytest.approx(1.0)
    with pytest.raises(Co2Error, match="no video stream"):
        video.read_video(path)


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.mp4": "no such file",
        tmp_path: "is a folder",
        tmp_path / "empty.mp4": r"empty file \(0 bytes\)",
        tmp_path / "notes.txt": "not a video file",  # FFmpeg would render a .txt as ANSI-art video
        tmp_path / "notes.mp4": "not a video file FFmpeg can read",
    }
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "notes.txt").write_text("hello world\n" * 50)
    (tmp_path / "notes.mp4").write_text("hello world\n" * 50)
    for path, message in cases.items():
        for call in (video.probe, video.read_video):
            with pytest.raises(Co2Error, match=message) as caught:
                call(path)
            assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_huge_resolution_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = write_clip(tmp_path / "wide.mkv", [np.zeros((16, 16400, 3), np.uint8)] * 2, codec="ffv1")
    assert video.probe(path).width == 16400
    with pytest.raises(Co2Error, match="16400x16 is above the 16384 px limit"):  # capped at 16384
        video.concat(video.iter_chunks(path, max_side_px=100000))
    strip = write_clip(tmp_path / "strip.mkv", [np.zeros((16, 1024, 3), np.uint8)] * 2, codec="ffv1")
    with pytest.raises(Co2Error, match=r"1024x16 is too elongated \(limit 8:1\)"):
        video.read_video(strip)


def test_copy_of_real_mp4_with_other_name_works(tmp_path: Path) -> None:
    """The container is recognised from its bytes, not its name."""
    copy = tmp_path / "clip.bin"
    shutil.copyfile(need(SAMPLE_VIDEOS / DOG), copy)
    assert video.probe(copy).frame_count == 420
