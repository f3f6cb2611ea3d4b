"""TV-L1 flow: equal to OpenCV's own call, right size and direction, chunking changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from co2cli import flow, video
from tests.shared_paths import SAMPLE_VIDEOS, need


def texture(size: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth random texture, uint8: TV-L1 needs gradients everywhere to measure motion."""
    noise = np.random.default_rng(seed).integers(0, 256, (size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def moving(n: int, size: int = 64, step: tuple[int, int] = (2, -1)) -> np.ndarray:
    """n frames of a texture moving `step` = (dx, dy) pixels per frame."""
    base = texture()
    return np.stack([np.roll(base, (k * step[1], k * step[0]), axis=(0, 1))[:size, :size] for k in range(n)])


def opencv_direct(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    raw = cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, nxt, None)
    return np.clip(raw, -20, 20) / np.float32(20)


def test_equals_opencv_tvl1_on_real_frames() -> None:
    """Our path on three 224x224 crops of a sample clip = OpenCV's TV-L1 called directly, bit for bit."""
    chunk = next(video.iter_chunks(need(SAMPLE_VIDEOS / "v_ZNVhz7ctTq0.mp4"), chunk_frames=16))
    gray = chunk.gray[5:8]
    ours = flow.compute_flow(gray)
    assert ours.shape == (3, 224, 224, 2) and ours.dtype == np.float32
    for i in range(2):
        np.testing.assert_array_equal(ours[i], opencv_direct(gray[i], gray[i + 1]))
    np.testing.assert_array_equal(ours[2], ours[1])  # the last frame repeats the previous field
    assert np.abs(ours).max() <= 1.0 and np.abs(ours).max() > 0.01  # the dog and the scooter move


@pytest.mark.parametrize("dx, dy", [(3, -2), (-2, 1)])
def test_known_translation(dx: int, dy: int) -> None:
    """Content moved dx px right and dy px down gives flow (dx, dy) px: channel 0 = x, channel 1 = y."""
    base = texture()
    prev = base[20:116, 20:116]
    nxt = base[20 - dy:116 - dy, 20 - dx:116 - dx]  # nxt(x, y) = prev(x - dx, y - dy)
    fields = flow.compute_flow(np.stack([prev, nxt]))
    interior = fields[0, 16:-16, 16:-16] * flow.FLOW_BOUND_PX
    assert interior[..., 0].mean() == pytest.approx(dx, abs=0.3)
    assert interior[..., 1].mean() == pytest.approx(dy, abs=0.3)


def test_n_frames_give_n_fields() -> None:
    frames = moving(4)
    fields = flow.compute_flow(frames)
    assert fields.shape == (4, 64, 64, 2)
    np.testing.assert_array_equal(fields[3], fields[2])
    np.testing.assert_array_equal(flow.compute_flow(frames[:1]), np.zeros((1, 64, 64, 2), np.float32))
    assert flow.compute_flow(frames[:0]).shape == (0, 64, 64, 2)


@pytest.fixture(scope="module")
def seven() -> tuple[np.ndarray, np.ndarray]:
    frames = moving(7)
    return frames, flow.compute_flow(frames)


@pytest.mark.parametrize("sizes", [[7], [3, 1, 3], [1, 1, 1, 1, 1, 1, 1], [2, 0, 5], [6, 1]])
def test_chunked_equals_one_shot(sizes: list[int], seven: tuple[np.ndarray, np.ndarray]) -> None:
    frames, one_shot = seven
    edges = np.cumsum([0, *sizes])
    chunks = [frames[a:b] for a, b in zip(edges[:-1], edges[1:])]
    outputs = list(flow.iter_flow(chunks))
    assert [len(o) for o in outputs] == sizes
    np.testing.assert_array_equal(np.concatenate(outputs), one_shot)
    # The low-level stream: the first push lags by one frame, finish() gives the last field.
    stream = flow.FlowStream()
    pushed = [stream.push(c) for c in chunks]
    assert sum(len(p) for p in pushed) == 6
    np.testing.assert_array_equal(np.concatenate([*pushed, stream.finish()]), one_shot)


def test_pairs_chunks_with_their_flow() -> None:
    frames = moving(5)
    items = [SimpleNamespace(name="a", gray=frames[:2]), SimpleNamespace(name="b", gray=frames[2:])]
    paired = list(flow.iter_with_flow(items))
    assert [item.name for item, _ in paired] == ["a", "b"]
    assert [len(f) for _, f in paired] == [2, 3]
    np.testing.assert_array_equal(np.concatenate([f for _, f in paired]), flow.compute_flow(frames))


def test_worker_processes_give_identical_flow() -> None:
    frames = moving(5)
    np.testing.assert_array_equal(flow.compute_flow(frames, workers=2), flow.compute_flow(frames))


def test_scaling_and_input_checks() -> None:
    raw = np.array([-30.0, -20.0, -10.0, 0.0, 5.0, 20.0, 25.0], np.float32)
    np.testing.assert_array_equal(flow.scale_flow(raw), [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0])
    with pytest.raises(ValueError):
        flow.compute_flow(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError):
        flow.compute_flow(np.zeros((2, 8, 8, 3), np.uint8))
