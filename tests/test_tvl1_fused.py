"""co2cli.tvl1_cpu (the 'fused' numba TV-L1 backend) against OpenCV called directly: building blocks, real
footage at both flow regions (pairs that stop at once, early and late, and one settled by the serial float32
sum), and the flow backend wiring. Bit-identical on EXACT_BUILD (see tests/test_tvl1.py), else the tolerances.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from co2cli import features, flow, flowfiles, tvl1_cpu, tvl1_params
from co2cli.extract import FeatureExtractor
from co2cli.video import read_video
from tests.shared_paths import SAMPLE_VIDEOS, need
from tests.test_tvl1 import (CLIPS, CROP_PAIRS, EXACT_BUILD, FRAME_PAIRS, check_close, decoded_frames,
                             default_backend, ipp, opencv_flow, random_maps)


def kernels():  # noqa: ANN201
    from co2cli import tvl1_kernels

    return tvl1_kernels


def test_exact_build_flag_agrees_with_flow() -> None:
    assert flow.exact_with_opencv() == EXACT_BUILD


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


def test_median_blur_matches_opencv_exactly() -> None:
    rng = np.random.default_rng(2)
    u = rng.standard_normal((3, 31, 45)).astype(np.float32)
    u[1] = np.round(u[1] * 2) / 2  # many ties
    u[2, :, :20] = 0.25  # flat region
    for k in (3, 5):
        for i in range(3):
            np.testing.assert_array_equal(tvl1_cpu.median_blur(u[i], k), cv2.medianBlur(u[i], k))


def test_generated_median_code_is_current() -> None:
    """tvl1_kernels holds a pasted copy of `median_source` (numba caches only functions defined in files)."""
    text = Path(kernels().__file__).read_text()
    assert tvl1_cpu.median_source(3) in text
    for name in ("median5_pairs", "median5_quads"):
        assert tvl1_cpu.median5_source(name) in text


def run_program(prog: np.ndarray, inputs: list[float], outputs: tuple[int, ...]) -> list[float]:
    """Interpret a min/max program (rows is_max, out, a, b) the way the generated kernels do."""
    v = dict(enumerate(inputs))
    for is_max, o, a, b in prog.tolist():
        lo, hi = (v[a], v[b]) if v[a] < v[b] else (v[b], v[a])
        v[o] = hi if is_max else lo
    return [v[i] for i in outputs]


def test_sweep_planes_are_zeroed_apart_and_staggered() -> None:
    """The sweep's ten planes: zeroed, C-contiguous (h, wp), disjoint, 64-byte aligned, and each at its own
    offset within a 4 KB page (so their row streams do not collide in the caches)."""
    uu, p, warped, terms = tvl1_cpu._sweep_planes(37, 49)
    planes = [*uu, *p, *warped, terms]
    assert len(planes) == 10
    starts = [a.ctypes.data for a in planes]
    for a in planes:
        assert a.shape == (37, 49) and a.dtype == np.float32 and a.flags.c_contiguous and not a.any()
    assert all(s % 64 == 0 for s in starts)
    assert len({s % 4096 for s in starts}) == 10
    assert all(b - a >= a_.nbytes for a, b, a_ in zip(starts, starts[1:], planes))


@pytest.mark.parametrize(("lengths", "ranks"), [((5, 5), tuple(range(10))), ((10, 10), tuple(range(7, 13)))])
def test_median_merge_programs_give_the_ranks(lengths: tuple[int, int], ranks: tuple[int, ...]) -> None:
    """The pruned merge programs behind median5_pairs / median5_quads return exactly the asked ranks of the
    union of two sorted chains, against sorting, with ties (small integers) and without."""
    prog, out = tvl1_cpu.merge_program(lengths, ranks)
    rng = np.random.default_rng(5)
    for trial in range(3000):
        top = 4 if trial % 2 else 1000
        chains = [sorted(rng.integers(0, top, n).tolist()) for n in lengths]
        got = run_program(prog, chains[0] + chains[1], out)
        assert got == [sorted(chains[0] + chains[1])[r] for r in ranks], (chains, got)


def test_median5_selects_rank_12_from_quads_and_a_column() -> None:
    """Window median = min(q12, max(q11, c0), ..., max(q7, c4)) for q the ranks of its first four columns and
    c the sorted fifth: against np.median of the 25 values (odd count: the middle one)."""
    rng = np.random.default_rng(6)
    w = 37
    cols = np.sort(rng.integers(0, 6, (5, w + 4)).astype(np.float32), axis=0)
    pairs, quads = np.empty((10, w + 3), np.float32), np.empty((6, w), np.float32)
    out = np.empty((1, w), np.float32)
    k = kernels()
    k.median5_pairs(cols, pairs)
    k.median5_quads(pairs, quads)
    k.median5_select(quads, cols, out, 0)
    expected = [np.median(cols[:, x:x + 5]) for x in range(w)]
    np.testing.assert_array_equal(out[0], np.float32(expected))


@pytest.mark.parametrize("backend", ["ipp", "generic"])
def test_linear_resize_matches_opencv(backend: tvl1_params.ResizeBackend) -> None:
    if backend == "ipp" and not cv2.ipp.useIPP():
        pytest.skip("this cv2 has no IPP")
    rng = np.random.default_rng(1)
    with ipp(backend == "ipp"):
        for h, w in [(224, 224), (256, 341), (57, 203)]:
            img = (rng.standard_normal((h, w)) * 3).astype(np.float32)
            down = tvl1_cpu.resize(img, scale=0.8, backend=backend)
            check_close(down, cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR), atol=1e-4)
            for dh, dw in [(round(h / 0.8), round(w / 0.8)), (h + 7, w - 9)]:
                up = tvl1_cpu.resize(img, (dh, dw), backend=backend)
                check_close(up, cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR), atol=1e-4)


def test_cubic_remap_and_rho_match_opencv() -> None:
    """warp_data remaps channels 1 and 2 of its source (I1x, I1y in TV-L1) with OpenCV's INTER_CUBIC at
    (x + u1, y + u2), positions beyond the border, NaN and far away included; rho_c follows (grad is recomputed
    from I1wx, I1wy where the u update uses it)."""
    rng = np.random.default_rng(0)
    fr = kernels().REMAP_FRAME
    for h, w, margin in [(40, 57, 6.0), (224, 224, 3.0)]:
        planes = (rng.random((3, h, w)) * 255).astype(np.float32)
        planes[2] = rng.standard_normal((h, w)).astype(np.float32) * 20  # signed values, like gradients
        mx, my = random_maps(rng, h, w, margin)
        u1 = (mx - np.arange(w, dtype=np.float32)).astype(np.float32)
        u2 = (my - np.arange(h, dtype=np.float32)[:, None]).astype(np.float32)
        src = np.zeros((h + 2 * fr, w + 2 * fr, 4), np.float32)
        src[fr:-fr, fr:-fr, :3] = planes.transpose(1, 2, 0)
        i0 = planes[0].copy()
        out = [np.empty((h, w), np.float32) for _ in range(3)]
        kernels().warp_data(i0, src, u1, u2, *out)
        maps = (np.float32(np.arange(w)) + u1, np.float32(np.arange(h))[:, None] + u2)  # = mx, my as float32
        ref = [cv2.remap(planes[c], *maps, cv2.INTER_CUBIC) for c in range(3)]
        check_close(out[0], ref[1], atol=1e-4)
        check_close(out[1], ref[2], atol=1e-4)
        rho = ((ref[0] - ref[1] * u1) - ref[2] * u2) - i0
        ok = np.isfinite(rho)
        check_close(out[2][ok], rho[ok], atol=1e-2)


def test_stopping_uses_opencvs_serial_float32_sum() -> None:
    """224*224 terms of 1e-4 sum to 5.01714 serially in float32 but 5.01760 exactly: with the threshold in
    between OpenCV stops, and so must we (0.7e-4 drifts the other way). Far from it no serial sum is taken."""
    stopped = kernels().stopped
    for value, serial_stops in [(1e-4, True), (0.7e-4, False)]:
        terms = np.full((224, 224), value, np.float32)
        serial = float(np.cumsum(terms.ravel(), dtype=np.float32)[-1])
        exact = float(terms.astype(np.float64).sum())
        threshold = float(np.float32((serial + exact) / 2))
        assert (serial <= threshold) == serial_stops and (exact <= threshold) != serial_stops
        assert stopped(exact, terms, threshold) == (serial_stops, True)
    terms = np.full((224, 224), 1e-4, np.float32)
    assert stopped(float(terms.astype(np.float64).sum()), terms, 0.01 * 0.01 * terms.size * 2) == (True, False)


def test_stopping_band_covers_the_column_sum_estimate() -> None:
    """sweep's estimate is a float64 sum of float32 column sums (H terms each): it can be g(H) S from the exact
    sum S, the serial sum g(n) S (g(k) = k 2^-24 / (1 - k 2^-24)). A threshold inside that combined band, but
    outside g(n) alone, must still be settled by the serial sum; one just outside the band must not."""
    stopped = kernels().stopped
    h, w = 256, 64
    terms = np.full((h, w), 1e-3, np.float32)
    estimate = float(sum(np.float64(np.cumsum(terms[:, x], dtype=np.float32)[-1]) for x in range(w)))
    g = lambda k: k * 2.0**-24 / (1 - k * 2.0**-24)  # noqa: E731
    assert stopped(estimate, terms, estimate * (1 + g(terms.size) + 0.5 * g(h)))[1]
    assert stopped(estimate, terms, estimate * (1 - g(terms.size) - 0.5 * g(h)))[1]
    assert stopped(estimate, terms, estimate * (1 + 1.01 * (g(terms.size) + g(h)))) == (True, False)
    assert stopped(estimate, terms, estimate * (1 - 1.01 * (g(terms.size) + g(h)))) == (False, False)


# ---------------------------------------------------------------------------------------------------------------
# Real footage


def check_pairs(prev: list[np.ndarray], nxt: list[np.ndarray], labels: list[str]) -> list[tvl1_cpu.PairStats]:
    """Each pair vs OpenCV: bit-identical on EXACT_BUILD, else mean EPE <= 0.05 px and p99 <= 0.5 px."""
    params = flow.fused_params()
    assert params.resize_backend == default_backend()
    stats = []
    for a, b, label in zip(prev, nxt, labels):
        ours, st = tvl1_cpu.tvl1_flow_fused(a, b, params, return_stats=True)
        ref = opencv_flow(a, b)
        epe = np.sqrt(((ours.astype(np.float64) - ref) ** 2).sum(-1))
        print(f"{label}: EPE mean {epe.mean():.3g} px, bit-identical {np.mean(ours == ref):.4f}, iterations "
              f"{st.iterations.sum()} (level 0: {st.iterations[0].tolist()}), serial sums {st.serial_sums}")
        assert epe.mean() <= 0.05 and np.percentile(epe, 99) <= 0.5, label
        if EXACT_BUILD:
            np.testing.assert_array_equal(ours, ref, err_msg=label)
        stats.append(st)
    return stats


def test_equals_opencv_on_crops() -> None:
    """Crops: a still pair (stops after one iteration in every warp), the moving pairs of test_tvl1 (one
    runs past an outer iteration, so the median runs mid-warp; one is settled by the serial float32 sum)."""
    crops = {name: read_video(need(SAMPLE_VIDEOS / f"{name}.mp4")).gray[:10] for name in CLIPS}
    g = crops["v_GGSY1Qvo990"]
    prev, nxt, labels = [g[0]], [g[1]], ["v_GGSY1Qvo990 crop 0->1 (still)"]
    for name, starts in CROP_PAIRS.items():
        for s in starts:
            prev.append(crops[name][s])
            nxt.append(crops[name][s + 1])
            labels.append(f"{name} crop {s}->{s + 1}")
    stats = check_pairs(prev, nxt, labels)
    assert (stats[0].iterations == 1).all()  # stops at once
    assert max(int(st.iterations.max()) for st in stats) > 30  # late: a second outer iteration
    assert min(int(st.iterations[st.iterations > 1].min()) for st in stats[1:]) < 15  # early, while moving
    assert sum(st.serial_sums for st in stats) >= 1  # the stopping rule's serial path decided a warp


def test_equals_opencv_on_whole_frames() -> None:
    prev, nxt, labels = [], [], []
    for name, starts in FRAME_PAIRS.items():
        frames = decoded_frames(name, max(starts) + 2)
        assert frames.shape[1:] == (256, 341)
        for s in starts[:1]:
            prev.append(frames[s])
            nxt.append(frames[s + 1])
            labels.append(f"{name} frame {s}->{s + 1}")
    stats = check_pairs(prev, nxt, labels)
    assert max(int(st.iterations.max()) for st in stats) > 30


@pytest.mark.parametrize("width", [49, 50, 63])
def test_equals_opencv_on_odd_widths(width: int) -> None:
    """Planes are padded to 16k + 1 columns: 49 fills them exactly (its last column is done apart), 50 leaves
    15 pad columns, 63 one; every pyramid level of these meets other cases. Cut from a pair that moves
    everywhere (about 2 px)."""
    frames = decoded_frames("v_ZNVhz7ctTq0", 3)
    check_pairs([frames[1][:80, 100:100 + width]], [frames[2][:80, 100:100 + width]], [f"width {width}"])


# ---------------------------------------------------------------------------------------------------------------
# The flow backend


def test_backend_wiring_and_recipe() -> None:
    assert flow.resolve_backend("auto", "cpu") == "fused" and flow.resolve_backend("auto", "cuda") == "torch"
    assert flow.resolve_backend("opencv", "cpu") == "opencv"
    gray = read_video(need(SAMPLE_VIDEOS / "v_ZNVhz7ctTq0.mp4")).gray[:3]
    ours = flow.compute_flow(gray, workers=1, backend="fused")
    ref = flow.compute_flow(gray, workers=1, backend="opencv")
    check_close(ours, ref, atol=0.05)
    recipe = flow.recipe("fused", "crop")
    assert recipe["backend"] == "fused" and "tvl1_cpu" in recipe["implementation"]
    assert flow.equivalent_backends("torch") == ("torch",)
    assert set(flow.equivalent_backends("fused")) == ({"opencv", "fused"} if EXACT_BUILD else {"fused"})


def test_finished_outputs_are_shared_by_bit_identical_backends(tmp_path: Path) -> None:
    """A feature file or flow output written by the OpenCV backend counts as done for 'fused' (same bits) and
    back, never for 'torch'; the recipe itself records the backend that made it."""
    if not EXACT_BUILD:
        pytest.skip("fused equals OpenCV bit for bit only on the verified build")
    written = {"flow": {"region": "frame", "backend": "opencv"}}
    features.save(tmp_path, "clip", np.zeros((1, 1024), np.float32), written)
    (tmp_path / "clip.flow.npy").write_bytes(b"")
    (tmp_path / "clip.flow.json").write_text(json.dumps(written))
    for backend, done in (("fused", True), ("opencv", True), ("torch", False)):
        extractor = FeatureExtractor(("flow",), "cpu", flow_backend=backend, load_models=False)
        assert features.is_complete(tmp_path, "clip", {"flow": extractor.identity()["flow"]}) == done, backend
        assert flowfiles.is_done(tmp_path, "clip", "npy", "frame", backend) == done, backend
    assert FeatureExtractor(("flow",), "cpu", load_models=False).recipe()["flow"]["backend"] == "fused"
