"""`co2 extract-features` held to the I3D fixture (../shared/fixtures/i3d): the fixture's frames go through the same
code the CLI uses (decode, 25 fps resampling, resize, crop, uint8 -> [-1, 1], I3D, Mixed_5c average).

The fixture's clip16 is source frames 136..151 of v_GGSY1Qvo990.mp4 after PyAV rgb24 decode, Pillow BILINEAR
resize to 341x256 and the centre crop at (16, 58) (README section 2). We write source frames 120..151 (320x240
RGB) losslessly (FFV1, bgr0) at exactly 25 fps, so the 25 fps resampling is the identity and the video's
2 snippets are frames 120..135 and clip16. Every step of that construction is checked without co2cli: Pillow
reproduces `clip16_uint8` from the decoded frames, and PyAV decodes the lossless file back to the same bytes at
timestamps k / 25 s. Then the CLI's snippet 1 must be `clip16_mixed5c_avg` (atol 1e-4) and W.feature + b (the
I3D head on one 16-frame snippet, README section 5) `clip16_logits` (atol 1e-3), the README's tolerances.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.shared_paths import I3D_FIXTURES, SAMPLE_VIDEOS, need

ATOL_AVG = 1e-4  # README section 12
ATOL_LOGITS = 1e-3
FIRST, LAST = 120, 151  # source frames written; clip16 = 136..151 is the second snippet


def decode_source_frames(path: Path, first: int, last: int) -> np.ndarray:
    """Source frames first..last (presentation order from 0) as (n, 240, 320, 3) uint8 RGB, PyAV rgb24."""
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index > last:
                break
            if index >= first:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def fixture_crop(rgb: np.ndarray) -> np.ndarray:
    """README section 2 steps 2-3 with Pillow directly: BILINEAR to (341, 256), rows 16..239, columns 58..281."""
    return np.asarray(Image.fromarray(rgb).resize((341, 256), Image.Resampling.BILINEAR))[16:240, 58:282]


def write_lossless_25fps(path: Path, frames: np.ndarray) -> Path:
    """FFV1 (lossless) in Matroska, frame k at pts k in time base 1/25."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for k, rgb in enumerate(frames):
            image = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            image.pts, image.time_base = k, Fraction(1, 25)
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(need(I3D_FIXTURES / "rgb_cases.npz")) as data:
        return {k: data[k] for k in ("clip16_uint8", "clip16_frame_indices", "clip16_mixed5c_avg", "clip16_logits")}


@pytest.fixture(scope="module")
def lossless_clip(tmp_path_factory, fixture) -> Path:
    source = decode_source_frames(need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4"), FIRST, LAST)
    assert source.shape == (LAST - FIRST + 1, 240, 320, 3)
    assert fixture["clip16_frame_indices"].tolist() == list(range(136, 152))
    # The fixture's provenance, without co2cli: these decoded frames give clip16 byte for byte.
    crops = np.stack([fixture_crop(f) for f in source[136 - FIRST:]])
    assert np.array_equal(crops, fixture["clip16_uint8"])
    path = write_lossless_25fps(tmp_path_factory.mktemp("lossless") / "lift_clip16.mkv", source)
    with av.open(str(path)) as container:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert len(decoded) == len(source)
    assert all(np.array_equal(rgb, src) for (_, rgb), src in zip(decoded, source))  # lossless round trip
    assert [t for t, _ in decoded] == pytest.approx([k / 25 for k in range(len(source))], abs=1e-9)
    return path


def test_cli_features_and_logits_equal_the_fixture(i3d_rgb_weights: Path, lossless_clip: Path, fixture,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "co2cli.cli", "extract-features", str(lossless_clip), "--streams",
                           "rgb", "-o", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads((out / "lift_clip16.json").read_text())
    # 32 frames at exactly 25 fps: the resampling keeps every frame once, 2 snippets, nothing dropped.
    assert (recipe["frame_count"], recipe["frames_used"], recipe["snippets"]) == (32, 32, 2)
    feats = np.load(out / "lift_clip16.npy")
    assert feats.dtype == np.float32 and feats.shape == (2, 1024)
    diff_avg = float(np.abs(feats[1].astype(np.float64) - fixture["clip16_mixed5c_avg"]).max())
    # The Kinetics head on the feature, with the installed weights read directly (no co2cli code).
    sd = torch.load(i3d_rgb_weights, weights_only=True, map_location="cpu")
    weight = sd["logits.conv3d.weight"].reshape(400, 1024).double().numpy()
    logits = feats.astype(np.float64) @ weight.T + sd["logits.conv3d.bias"].double().numpy()
    diff_logits = float(np.abs(logits[1] - fixture["clip16_logits"]).max())
    print(f"\nclip16 via co2 extract-features: max |d mixed5c_avg| {diff_avg:.2e}, max |d logits| {diff_logits:.2e}")
    assert diff_avg <= ATOL_AVG
    assert diff_logits <= ATOL_LOGITS
    assert int(np.argmax(logits[1])) == 59  # clean and jerk (README section 9), never the only check
    # Snippet 0 is other frames (120..135): a real, different feature, not a copy of clip16.
    assert np.abs(feats[0].astype(np.float64) - fixture["clip16_mixed5c_avg"]).max() > 100 * ATOL_AVG
