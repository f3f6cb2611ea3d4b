"""From raw videos to features and segments, run as a user runs it (`co2 ...` in a subprocess).

Weights: the real Kinetics-400 RGB I3D (installed once per session), the fixture CO2-Net checkpoint, and a flow I3D
in piergiaj's layout that this test builds from the architecture (the real flow weights cannot be downloaded here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from co2cli import i3d
from tests.shared_paths import CO2_FIXTURES, SAMPLE_VIDEOS, need

WEIGHTLIFTING = "v_GGSY1Qvo990.mp4"
DOG = "v_ZNVhz7ctTq0.mp4"
CKPT = CO2_FIXTURES / "reference_ckpt.pkl.gz"

# Clip-level top-5 (centre 64-frame clip and mean over 16-frame snippets) from shared/fixtures/i3d/README.md §9.
FIXTURE_TOP5 = {
    WEIGHTLIFTING: {"clean and jerk", "squat", "snatch weight lifting", "lunge", "playing trumpet", "deadlifting",
                    "bench pressing"},
    DOG: {"walking the dog", "hopscotch", "flying kite", "riding scooter", "egg hunting", "faceplanting",
          "pushing cart", "feeding birds"},
}


def co2(*args, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def make_env(home: Path) -> dict:
    return {**os.environ, "CO2CLI_HOME": str(home), "COLUMNS": "160"}


@pytest.fixture(scope="module")
def rgb_home(tmp_path_factory, i3d_rgb_weights: Path) -> Path:
    """A co2cli home with only the real RGB I3D installed."""
    home = tmp_path_factory.mktemp("home_rgb")
    proc = co2("weights", "import", i3d_rgb_weights, "--as", "i3d-rgb", env=make_env(home))
    assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture(scope="module")
def full_home(tmp_path_factory, rgb_home: Path) -> Path:
    """RGB I3D + a seeded random flow I3D (piergiaj layout) + the fixture CO2-Net as co2-thumos."""
    home = tmp_path_factory.mktemp("home_full")
    shutil.copytree(rgb_home / "weights", home / "weights")
    torch.manual_seed(0)
    flow_path = home / "flow_imagenet.pt"
    torch.save(i3d.InceptionI3d(400, in_channels=2).state_dict(), flow_path)
    env = make_env(home)
    for path, name in ((flow_path, "i3d-flow"), (need(CKPT), "co2-thumos")):
        proc = co2("weights", "import", path, "--as", name, env=env)
        assert proc.returncode == 0, proc.stderr
    return home


def cut_clip(source: Path, target: Path, seconds: float) -> Path:
    """Re-encode the first `seconds` of a real clip (keeps TV-L1 cheap: ~25 frames/s of video)."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream_in = src.streams.video[0]
        out = dst.add_stream("libx264", rate=stream_in.average_rate)
        out.width, out.height, out.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        for frame in src.decode(stream_in):
            if frame.time > seconds:
                break
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in out.encode(image):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
    return target


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """2 s of the weightlifting clip: 50 frames at 25 fps -> 3 snippets."""
    return cut_clip(need(SAMPLE_VIDEOS / WEIGHTLIFTING), tmp_path_factory.mktemp("clips") / "lift2s.mp4", 2.0)


# ---- co2 extract-features ---------------------------------------------------------------------------------


def test_two_stream_features_and_recipe(full_home: Path, short_clip: Path, tmp_path: Path) -> None:
    proc = co2("extract-features", short_clip, "--output", tmp_path, env=make_env(full_home))
    assert proc.returncode == 0, proc.stderr
    npy = tmp_path / "lift2s.npy"
    assert proc.stdout.strip() == str(npy)  # stdout carries results only
    feats = np.load(npy)
    assert feats.dtype == np.float32 and feats.shape == (3, 2048) and np.isfinite(feats).all()
    recipe = json.loads((tmp_path / "lift2s.json").read_text())
    assert recipe["streams"] == ["rgb", "flow"] and recipe["snippets"] == 3
    assert (recipe["fps"], recipe["snippet_frames"], recipe["stride_frames"]) == (25, 16, 16)
    assert recipe["flow"]["method"] == "TV-L1" and recipe["flow"]["bound_px"] == 20
    assert set(recipe["weights_sha256"]) == {"i3d-rgb", "i3d-flow"}
    assert recipe["frame_count"] >= 48 and recipe["frames_used"] == 48
    assert recipe["source_fps"] == pytest.approx(19.62) and recipe["co2cli_version"]
    assert "crop" in recipe and "resize" in recipe and recipe["duration_s"] > 1.9
    # RGB half equals the RGB-only extraction: both streams always cover the same 16 T frames
    rgb_only = tmp_path / "rgb"
    assert co2("extract-features", short_clip, "-o", rgb_only, "--streams", "rgb",
               env=make_env(full_home)).returncode == 0
    np.testing.assert_allclose(np.load(rgb_only / "lift2s.npy"), feats[:, :1024], atol=1e-5)


def test_video_localize_equals_feature_localize(full_home: Path, short_clip: Path, tmp_path: Path) -> None:
    env = make_env(full_home)
    from_video = co2("localize", short_clip, "--classes", "thumos", "--format", "json", env=env)
    assert from_video.returncode == 0, from_video.stderr
    assert co2("extract-features", short_clip, "-o", tmp_path, env=env).returncode == 0
    from_features = co2("localize", tmp_path / "lift2s.npy", "--classes", "thumos", "-c", need(CKPT),
                        "--format", "json", env=env)
    assert from_features.returncode == 0, from_features.stderr
    video_json, features_json = json.loads(from_video.stdout), json.loads(from_features.stdout)
    # Same segments; the "co2cli" provenance differs on purpose (checkpoint name, I3D weights only for videos).
    assert {k: v for k, v in video_json.items() if k != "co2cli"} == \
        {k: v for k, v in features_json.items() if k != "co2cli"}
    assert list(json.loads(from_video.stdout)["results"]) == ["lift2s"]
    # the second run reuses the cached features (same recipe) and gives the same answer
    again = co2("localize", short_clip, "--classes", "thumos", "--format", "json", env=env)
    assert again.stdout == from_video.stdout


def test_missing_weights_name_the_install_command(rgb_home: Path, short_clip: Path, tmp_path: Path) -> None:
    env = make_env(rgb_home)
    proc = co2("extract-features", short_clip, "-o", tmp_path / "out", env=env)
    [line] = error_lines(proc)
    assert proc.returncode == 1 and "co2 weights install i3d-flow" in line and "--streams rgb" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    proc = co2("localize", short_clip, "--classes", "thumos", env=env)
    [line] = error_lines(proc)
    assert proc.returncode == 1 and "co2-thumos" in line and "co2 weights import" in line
    proc = co2("localize", short_clip, "--classes", "thumos", "-c", need(CKPT), env=env)
    [line] = error_lines(proc)
    assert proc.returncode == 1 and "i3d-flow" in line and "co2 weights install i3d-flow" in line


def _bad_inputs(folder: Path, good: Path) -> dict[str, str]:
    """name -> fragment of the expected error line."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.txt.mp4").write_text("not a video\n" * 40)
    with av.open(str(folder / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for name, size, count in (("one_frame.mp4", (64, 48), 1), ("uhd.mp4", (3840, 2160), 2)):
        with av.open(str(folder / name), "w") as container:
            stream = container.add_stream("mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for _ in range(count):
                image = np.full((size[1], size[0], 3), 128, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return {"truncated.mp4": "truncated", "empty.mp4": "empty", "notes.txt.mp4": "not",
            "audio_only.mp4": "no video stream", "one_frame.mp4": "too short", "uhd.mp4": "2560 px limit"}


def test_batch_with_bad_inputs_and_resume(rgb_home: Path, short_clip: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    bad = _bad_inputs(inputs, short_clip)
    for name in ("a", "b", "c"):
        shutil.copy(short_clip, inputs / f"{name}.mp4")
    out = tmp_path / "out"
    env = make_env(rgb_home)
    # A finished video is kept by a later batch (killing a batch mid-way: tests/test_resume_sigkill.py).
    first = co2("extract-features", inputs / "a.mp4", "-o", out, "--streams", "rgb", env=env)
    assert first.returncode == 0, first.stderr
    finished_at = (out / "a.npy").stat().st_mtime_ns
    rerun = co2("extract-features", inputs, "-o", out, "--streams", "rgb", env=env)
    assert rerun.returncode == 1  # the bad inputs fail; the good ones are done
    lines = error_lines(rerun)
    assert len(lines) == len(bad)
    for name, fragment in bad.items():
        assert any(name in line and fragment in line for line in lines), (name, lines)
    assert (out / "a.npy").stat().st_mtime_ns == finished_at
    assert "skipped" in rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npy", "b.json", "b.npy", "c.json", "c.npy"]
    assert sorted(rerun.stdout.split()) == sorted(str(out / f"{n}.npy") for n in "abc")
    clean = co2("extract-features", inputs / "a.mp4", inputs / "b.mp4", "-o", out, "--streams", "rgb", env=env)
    assert clean.returncode == 0 and clean.stderr.count("skipped") >= 2


# ---- zero-shot Kinetics localization on real clips ------------------------------------------------------------


@pytest.fixture(scope="module")
def kinetics_run(rgb_home: Path, tmp_path_factory) -> tuple[dict, Path]:
    plots = tmp_path_factory.mktemp("plots")
    videos = [need(SAMPLE_VIDEOS / WEIGHTLIFTING), need(SAMPLE_VIDEOS / DOG)]
    proc = co2("localize", *videos, "--format", "json", "--plot", plots, env=make_env(rgb_home))
    assert proc.returncode == 0, proc.stderr
    assert "model: Kinetics-400 I3D" in proc.stderr  # no CO2-Net installed: the zero-shot model, and it says so
    return json.loads(proc.stdout)["results"], plots


def test_kinetics_labels_agree_with_clip_level_top5(kinetics_run) -> None:
    results, _ = kinetics_run
    tops = {"v_GGSY1Qvo990": "clean and jerk", "v_ZNVhz7ctTq0": "walking the dog"}
    for video, top in tops.items():
        segments = results[video]
        assert segments, video
        best = max(segments, key=lambda s: s["score"])
        assert best["label"] == top
        assert {s["label"] for s in segments} <= FIXTURE_TOP5[video + ".mp4"]
        for s in segments:
            assert 0 <= s["segment"][0] < s["segment"][1] <= 18.2


def test_plots_written(kinetics_run) -> None:
    _, plots = kinetics_run
    for name in ("v_GGSY1Qvo990.png", "v_ZNVhz7ctTq0.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert sorted(p.name for p in plots.iterdir()) == ["v_GGSY1Qvo990.png", "v_ZNVhz7ctTq0.png"]


def test_python_api_mirrors_cli(rgb_home: Path, kinetics_run, monkeypatch) -> None:
    import co2cli

    monkeypatch.setenv("CO2CLI_HOME", str(rgb_home))
    model = co2cli.load_model(classes="kinetics")
    segments = model.localize(need(SAMPLE_VIDEOS / WEIGHTLIFTING))  # cached features from the CLI run
    results, _ = kinetics_run
    want = results["v_GGSY1Qvo990"]
    assert [(s.label_name, s.start_s, s.end_s) for s in segments] == [(w["label"], *w["segment"]) for w in want]
    assert [s.score for s in segments] == pytest.approx([w["score"] for w in want], abs=1e-9)


def test_folder_with_good_corrupt_and_text(rgb_home: Path, short_clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(short_clip, folder / "good.mp4")
    data = short_clip.read_bytes()
    (folder / "corrupt.mp4").write_bytes(data[:2000] + bytes(len(data) - 2000))
    (folder / "readme.txt").write_text("hello")
    out = tmp_path / "segments.json"
    proc = co2("localize", folder, folder / "readme.txt", "--format", "json", "--output", out,
               env=make_env(rgb_home))
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 2 and any("corrupt.mp4" in line for line in lines) and any("readme.txt" in line
                                                                                        for line in lines)
    assert list(json.loads(out.read_text())["results"]) == ["good"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_vfr_odd_length_streams_agree(full_home: Path, tmp_path: Path) -> None:
    """A variable-frame-rate clip whose 25 fps length is not a multiple of 16: both streams give T = floor(N/16)."""
    from tests.test_video import write_clip

    rng = np.random.RandomState(3)
    base = (rng.rand(96, 128, 3) * 255).astype(np.uint8)
    gaps_ms = [30, 50, 20, 70, 40, 33, 25, 60]  # irregular presentation times
    pts, images = [0], []
    for k in range(40):
        images.append(np.roll(base, 2 * k, axis=1))  # texture moving right: real, non-zero flow
        pts.append(pts[-1] + gaps_ms[k % len(gaps_ms)])
    clip = write_clip(tmp_path / "vfr.mkv", images, pts[:-1], time_base=Fraction(1, 1000))
    out = tmp_path / "out"
    proc = co2("extract-features", clip, "-o", out, env=make_env(full_home))
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads((out / "vfr.json").read_text())
    feats = np.load(out / "vfr.npy")
    n = recipe["frame_count"]
    assert n % 16 != 0 and recipe["snippets"] == n // 16 == feats.shape[0] >= 2
    assert recipe["frames_used"] == 16 * feats.shape[0] and recipe["remainder_frames_dropped"] == n % 16
    assert feats.shape[1] == 2048 and np.abs(feats[:, 1024:]).sum() > 0 and np.abs(feats[:, :1024]).sum() > 0
