"""co2cli.tvl1 (PyTorch TV-L1) against OpenCV called directly: building blocks, real footage, batching.

On the build these tests were written against (cv2 5.1 x86-64 wheel, IPP on, a CPU with FMA3) every result is
bit-identical to OpenCV's, and `EXACT_BUILD` makes the tests demand that; elsewhere they fall back to the
tolerances (remap/resize 1e-4, flow end-point error mean <= 0.05 px, p99 <= 0.5 px).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from co2cli import tvl1
from co2cli.video import read_video, resized_size
from tests.shared_paths import SAMPLE_VIDEOS, need

_CV_CPU_FMA3 = 12
"""cv::CPU_FMA3 (cv2 exposes checkHardwareSupport but not the enum)."""
EXACT_BUILD = (platform.machine().lower() in {"x86_64", "amd64"} and cv2.__version__.split(".")[0] == "5"
               and cv2.ipp.useIPP() and cv2.checkHardwareSupport(_CV_CPU_FMA3))
"""cv2 build and CPU on which the implementation was verified to be bit-exact."""

CLIPS = ("v_GGSY1Qvo990", "v_ZNVhz7ctTq0")
CROP_PAIRS = {"v_GGSY1Qvo990": (5, 6), "v_ZNVhz7ctTq0": (1, 2)}
"""First frame index of two consecutive pairs (25 fps crops) per clip, chosen where the clip moves."""
FRAME_PAIRS = {"v_GGSY1Qvo990": (3, 4), "v_ZNVhz7ctTq0": (1, 2)}
"""The same for decoded source frames (the 256-short-side region)."""


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for this module: the tensors are small, and on a loaded 2-core machine two spinning
    OpenMP threads made these tests 10x slower. Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def ipp(enabled: bool) -> Iterator[None]:
    """OpenCV's process-wide IPP switch, restored afterwards."""
    old = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(enabled)
    try:
        yield
    finally:
        cv2.ipp.setUseIPP(old)


def opencv_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """The reference: OpenCV's CPU TV-L1 with default parameters, flow in pixels."""
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, nxt, None)


def default_backend() -> tvl1.ResizeBackend:
    return "ipp" if cv2.ipp.useIPP() else "generic"


def check_close(ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    diff = np.abs(ours.astype(np.float64) - ref)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    assert worst <= atol, f"max |ours - OpenCV| = {worst}"
    if EXACT_BUILD:
        assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} values differ from OpenCV (max {worst})"


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


def test_pyramid_sizes_are_opencvs() -> None:
    for h, w in [(224, 224), (256, 341), (40, 300)]:
        img = np.zeros((h, w), np.float32)
        sizes = [(h, w)]
        while len(sizes) < 5:
            img = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
            if min(img.shape) < 16:
                break
            sizes.append(img.shape)
        assert tvl1.pyramid_sizes(h, w) == sizes
    assert tvl1.pyramid_sizes(224, 224) == [(224, 224), (179, 179), (143, 143), (114, 114), (91, 91)]


def random_maps(rng: np.random.Generator, h: int, w: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Source positions over the image and up to `margin` px beyond it, plus special positions in row 0."""
    mx = (rng.random((h, w)) * (w + 2 * margin) - margin).astype(np.float32)
    my = (rng.random((h, w)) * (h + 2 * margin) - margin).astype(np.float32)
    special = [0.0, w - 1.0, -0.5, -1.0, -2.999, w + 0.5, w + 2.0, 1e6, -1e6, np.nan, 3.25, 7.0]
    mx[0, :len(special)] = special
    my[0, :len(special)] = [3.0, 5.0, -1.5, h - 1.0, h + 1.5, -2.0, 2.5, 3.0, 3.0, 3.0, 1e7, np.nan]
    return mx, my


def test_cubic_remap_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    for h, w, margin in [(40, 57, 6.0), (224, 224, 3.0)]:
        imgs = (rng.random((2, h, w)) * 255).astype(np.float32)
        imgs[1] = rng.standard_normal((h, w)).astype(np.float32) * 20  # signed values, like gradients
        mx, my = random_maps(rng, h, w, margin)
        ours = tvl1.cubic_remap(torch.from_numpy(imgs)[None], torch.from_numpy(mx)[None],
                                torch.from_numpy(my)[None])[0].numpy()
        for c in range(2):
            check_close(ours[c], cv2.remap(imgs[c], mx, my, cv2.INTER_CUBIC), atol=1e-4)


RESIZE_SIZES = [(224, 224), (256, 341), (91, 91), (57, 203)]


@pytest.mark.parametrize("backend", ["ipp", "generic"])
def test_linear_resize_matches_opencv(backend: tvl1.ResizeBackend) -> None:
    """Pyramid step (`fx=fy=0.8`, scale exactly 0.8) and explicit sizes (scale = dsize / ssize), both of
    OpenCV's float resizes: IPP's (the default where IPP is on) and OpenCV's own C++ code."""
    if backend == "ipp" and not cv2.ipp.useIPP():
        pytest.skip("this cv2 has no IPP")
    rng = np.random.default_rng(1)
    with ipp(backend == "ipp"):
        for h, w in RESIZE_SIZES:
            imgs = (rng.random((2, h, w)) * 255).astype(np.float32)
            imgs[1] = rng.standard_normal((h, w)).astype(np.float32) * 3  # a flow field
            t = torch.from_numpy(imgs)
            down = tvl1.resize_linear(t, fx=0.8, fy=0.8, backend=backend).numpy()
            for k in range(2):
                check_close(down[k], cv2.resize(imgs[k], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR),
                            atol=1e-4)
            for dh, dw in [(round(h / 0.8), round(w / 0.8)), (h + 7, max(w - 9, 1)), (2 * h, 3 * w)]:
                up = tvl1.resize_linear(t, (dh, dw), backend=backend).numpy()
                for k in range(2):
                    check_close(up[k], cv2.resize(imgs[k], (dw, dh), interpolation=cv2.INTER_LINEAR), atol=1e-4)


def test_median_blur_matches_opencv_exactly() -> None:
    rng = np.random.default_rng(2)
    u = rng.standard_normal((3, 31, 45)).astype(np.float32)
    u[1] = np.round(u[1] * 2) / 2  # many ties
    u[2, :, :20] = 0.25  # flat region
    for k in (3, 5):
        ours = tvl1.median_blur(torch.from_numpy(u), k).numpy()
        for i in range(3):
            np.testing.assert_array_equal(ours[i], cv2.medianBlur(u[i], k))


def test_divergence_is_minus_the_adjoint_of_forward_gradient() -> None:
    """<grad u, p> = -<u, div p> for p as TV-L1 keeps it (0 on the last column / row, where grad u is 0): catches
    an off-by-one in either difference operator or on their borders."""
    rng = np.random.default_rng(3)
    u, p1, p2 = (torch.from_numpy(rng.standard_normal((2, 13, 17))) for _ in range(3))
    p1[..., -1] = 0
    p2[..., -1, :] = 0
    ux, uy = tvl1.forward_gradient(u)
    lhs = (ux * p1 + uy * p2).sum()
    rhs = -(u * tvl1.divergence(p1, p2)).sum()
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Real footage


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    """224x224 grey centre crops at 25 fps (co2cli's own decode), the first 10 frames of each clip."""
    return {name: read_video(need(SAMPLE_VIDEOS / f"{name}.mp4")).gray[:10] for name in CLIPS}


def decoded_frames(name: str, count: int) -> np.ndarray:
    """The first `count` source frames, whole, resized to short side 256 (Pillow bilinear) and made grey."""
    out = []
    with av.open(str(need(SAMPLE_VIDEOS / f"{name}.mp4"))) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            size = resized_size(rgb.shape[1], rgb.shape[0])
            resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
            out.append(cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY))
            if len(out) == count:
                break
    return np.stack(out)


def check_parity(prev: np.ndarray, nxt: np.ndarray, labels: list[str]) -> None:
    """Flow of each pair (batched) vs OpenCV: mean EPE <= 0.05 px, p99 <= 0.5 px (bit-exact on EXACT_BUILD)."""
    ours, stats = tvl1.tvl1_flow(torch.from_numpy(prev), torch.from_numpy(nxt), return_stats=True)
    for i, label in enumerate(labels):
        ref = opencv_flow(prev[i], nxt[i])
        mine = ours[i].numpy()
        epe = np.sqrt(((mine.astype(np.float64) - ref) ** 2).sum(-1))
        mean, p99 = float(epe.mean()), float(np.percentile(epe, 99))
        print(f"{label}: EPE mean {mean:.3g} px, p99 {p99:.3g} px, max {epe.max():.3g} px, "
              f"bit-identical {np.mean(mine == ref):.4f}, |flow| max {np.abs(ref).max():.2f} px, "
              f"iterations {int(stats.iterations[i].sum())}")
        assert mean <= 0.05 and p99 <= 0.5, label
        if EXACT_BUILD:
            np.testing.assert_array_equal(mine, ref, err_msg=label)
    print(f"stopping checks settled by a serial float32 sum in this batch: {stats.serial_sums}")


def test_equals_opencv_on_crops(crops: dict[str, np.ndarray]) -> None:
    prev, nxt, labels = [], [], []
    for name, starts in CROP_PAIRS.items():
        for s in starts:
            prev.append(crops[name][s])
            nxt.append(crops[name][s + 1])
            labels.append(f"{name} crop {s}->{s + 1}")
    check_parity(np.stack(prev), np.stack(nxt), labels)


def test_equals_opencv_on_whole_frames() -> None:
    prev, nxt, labels = [], [], []
    for name, starts in FRAME_PAIRS.items():
        frames = decoded_frames(name, max(starts) + 2)
        assert frames.shape[1:] == (256, 341)
        for s in starts:
            prev.append(frames[s])
            nxt.append(frames[s + 1])
            labels.append(f"{name} frame {s}->{s + 1}")
    check_parity(np.stack(prev), np.stack(nxt), labels)


def test_batch_gives_each_pair_what_it_gets_alone(crops: dict[str, np.ndarray]) -> None:
    """A still pair (identical frames), a nearly still one and a moving one: batched = alone, pair by pair, and
    the still pair stops after one iteration per warp while the moving one goes on (per-pair stopping)."""
    g = crops["v_GGSY1Qvo990"]
    assert np.array_equal(g[0], g[1]) and 0 < np.abs(g[3].astype(int) - g[4]).mean() < 0.1
    prev = np.stack([g[0], g[3], g[6]])
    nxt = np.stack([g[1], g[4], g[7]])
    batched, stats = tvl1.tvl1_flow(torch.from_numpy(prev), torch.from_numpy(nxt), return_stats=True)
    for i in range(3):
        alone, alone_stats = tvl1.tvl1_flow(torch.from_numpy(prev[i]), torch.from_numpy(nxt[i]), return_stats=True)
        assert torch.equal(stats.iterations[i], alone_stats.iterations[0])
        assert float((batched[i] - alone).abs().max()) <= 1e-5
    counts = stats.iterations.sum(dim=(1, 2)).tolist()
    print(f"iterations per pair (still, nearly still, moving): {counts}")
    assert (stats.iterations[0] == 1).all()  # error 0 after the first iteration of every warp
    assert counts[0] < counts[1] < counts[2]
    assert (stats.iterations[2] > stats.iterations[0]).any(dim=1).all()  # within a warp, not just in total
    assert torch.equal(batched[0], torch.zeros_like(batched[0]))


def test_numpy_wrapper_and_input_types() -> None:
    rng = np.random.default_rng(4)
    base = cv2.GaussianBlur(rng.integers(0, 256, (60, 60)).astype(np.float32), (0, 0), 2.0)
    a = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    b = np.roll(a, (1, 2), axis=(0, 1))
    single = tvl1.tvl1_flow_numpy(a[:40, :48], b[:40, :48])
    assert single.shape == (40, 48, 2) and single.dtype == np.float32
    # float32 0..255 input = uint8 input; batches of 1 through the wrapper = one call
    as_float = np.stack([a[:40, :48]] * 2).astype(np.float32), np.stack([b[:40, :48]] * 2).astype(np.float32)
    batched = tvl1.tvl1_flow_numpy(*as_float, batch_size=1)
    assert batched.shape == (2, 40, 48, 2) and all(np.array_equal(batched[i], single) for i in range(2))
    check_close(single, opencv_flow(a[:40, :48], b[:40, :48]), atol=0.05)
    with pytest.raises(TypeError):
        tvl1.tvl1_flow(torch.zeros(20, 20, dtype=torch.int32), torch.zeros(20, 20, dtype=torch.int32))
    with pytest.raises(ValueError):
        tvl1.tvl1_flow(torch.zeros(20, 20), torch.zeros(20, 21))


def test_fma_emulation_rounds_once() -> None:
    """float32 fma via float64: the round-to-odd fallback fixes the double-rounding case, and the fast path
    flags it. a*b = 1 + 2^-36 and c = 2^24: the exact sum is just above the float32 midpoint 2^24 + 1, which
    float64 rounds onto, after which float32 ties-to-even would give 2^24 instead of 2^24 + 2."""
    a = torch.tensor([1 + 2.0**-12], dtype=torch.float32)
    b = torch.tensor([1 - 2.0**-12 + 2.0**-24], dtype=torch.float32)
    c = torch.tensor([2.0**24], dtype=torch.float32)
    assert float((a.double() * b.double() + c.double()).float()) == 2.0**24  # the trap
    assert float(tvl1._fma_exact(a, b, c)) == 2.0**24 + 2
    _, bad = tvl1._fma(a.double(), b.double(), c, torch.zeros((), dtype=torch.bool))
    assert bool(bad)

    rng = np.random.default_rng(5)
    x, y, z = (torch.from_numpy((rng.standard_normal(300) * 10.0 ** rng.integers(-3, 4, 300)).astype(np.float32))
               for _ in range(3))
    exact = tvl1._fma_exact(x, y, z)
    fast, _ = tvl1._fma(x.double(), y.double(), z, torch.zeros((), dtype=torch.bool))
    for i in range(300):
        true = Fraction(float(x[i])) * Fraction(float(y[i])) + Fraction(float(z[i]))
        got = np.float32(float(exact[i]))
        # `got` is the float32 nearest to `true`: neither float32 neighbour is closer
        for nb in (np.nextafter(got, np.float32(-np.inf)), np.nextafter(got, np.float32(np.inf))):
            assert abs(Fraction(float(nb)) - true) >= abs(Fraction(float(got)) - true)
    assert torch.equal(fast, exact)


def test_cubic_remap_exact_path_equals_fast_path() -> None:
    """The round-to-odd remap (used when the fast path meets a midpoint) computes the same formula."""
    rng = np.random.default_rng(6)
    taps = torch.from_numpy((rng.random((2, 5, 7, 4, 4)) * 255).astype(np.float32)).double()
    frac = [torch.from_numpy(rng.random((2, 5, 7)).astype(np.float32)) for _ in range(2)]
    no = torch.zeros((), dtype=torch.bool)
    results = []
    for exact in (False, True):
        cx, _ = tvl1._cubic_coeffs(frac[0], exact, no)
        cy, _ = tvl1._cubic_coeffs(frac[1], exact, no)
        results.append(tvl1._cubic_sum(taps, cx, cy, exact, no)[0])
    assert torch.equal(results[0], results[1])


def test_stopping_uses_opencvs_serial_float32_sum() -> None:
    """OpenCV stops on a serial float32 sum, which drifts from the true sum: 224*224 terms of 1e-4 sum to
    5.01714 in float32 but 5.01760 exactly. With the threshold in between, OpenCV stops and so must we; with
    terms 0.7e-4 the drift goes the other way (3.51388 vs 3.51232)."""
    n = 224 * 224
    for value, serial_stops in [(1e-4, True), (0.7e-4, False)]:
        terms = torch.full((2, 224, 224), value, dtype=torch.float32)
        serial = float(np.cumsum(terms[0].numpy().ravel(), dtype=np.float32)[-1])
        exact = float(terms[0].double().sum())
        threshold = float(np.float32((serial + exact) / 2))
        assert (serial <= threshold) == serial_stops and (exact <= threshold) != serial_stops
        decisions, n_serial = tvl1._stopped(terms, threshold)
        assert decisions == [serial_stops, serial_stops] and n_serial == 2
    # far from the threshold no serial sum is needed
    decisions, n_serial = tvl1._stopped(torch.full((1, 224, 224), 1e-4), 0.01 * 0.01 * n * 2)
    assert decisions == [True] and n_serial == 0
