"""TV-L1 optical flow between consecutive 25 fps frames (stage 2 of the pipeline).

* Input: grayscale uint8 0..255 frames, (N, H, W): the whole frame resized to short side 256 (region 'frame',
  DeepMind's Kinetics recipe; the field is then cropped like RGB) or the 224 x 224 centre crop (region 'crop').
* Method: OpenCV's `cv2.optflow.DualTVL1OpticalFlow_create()` with its default parameters (backend 'opencv'),
  its fused single-core numba re-implementation, `tvl1_cpu.py` (backend 'fused', the CPU default: bit-identical
  to OpenCV where `exact_with_opencv()`, ~10x+ faster per core), or its batched PyTorch re-implementation,
  `tvl1.py` (backend 'torch', CPU or CUDA, equal within 0.05 px mean end-point error).
* Output: float32 (N, H, W, 2), channel 0 = horizontal (+ right), channel 1 = vertical (+ down), in pixels
  clipped to [-20, 20] and divided by 20, so in [-1, 1] (the Kinetics I3D flow recipe).
* N frames give exactly N fields: flow[i] = TV-L1(frame i -> frame i + 1) for i < N - 1, and the last field
  repeats flow[N - 2] (there is no next frame; a repeat keeps 16-frame flow snippets aligned with RGB).
  N = 1 gives one zero field.
* Streaming: `FlowStream` carries the last frame and field across chunks, so chunked results equal the
  one-shot result exactly (TV-L1 is deterministic and keeps no state between calls).
* `workers > 1` runs pairs in that many processes (one pair each) with one OpenCV thread each: on a 2-core machine two
  processes beat `cv2.setNumThreads(2)` (docs/pipeline.md). Results are identical either way. The default is
  every CPU this process may use (`default_workers`).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from operator import attrgetter
from typing import TypeVar

import cv2
import numpy as np

from co2cli.tvl1_params import TVL1Params

FLOW_BOUND_PX = 20.0
"""Flow is clipped to +-20 px and divided by 20."""

BACKENDS = ("auto", "opencv", "torch", "fused")
REGIONS = ("frame", "crop")
DEFAULT_REGION = "frame"
"""DeepMind's Kinetics recipe: TV-L1 on the whole resized frame, then the same centre crop as RGB."""

_REGION_INPUT = {
    "frame": "grayscale uint8 of the whole frame resized to short side 256 (bilinear); the field is then "
             "centre-cropped to 224x224 like RGB",
    "crop": "grayscale uint8 of the 224x224 centre crop (after short side 256, bilinear)",
}


def default_workers() -> int:
    """CPUs this process may use (its affinity mask, so containers and `taskset` are respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_backend(backend: str, device_type: str) -> str:
    """'auto' -> 'torch' on CUDA, 'fused' on CPU (the fastest there: bench/bench_flow.py)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown flow backend {backend!r}: use {', '.join(BACKENDS)}")
    if backend == "auto":
        return "torch" if device_type == "cuda" else "fused"
    return backend


_CV_CPU_FMA3 = 12
"""cv::CPU_FMA3 (cv2 exposes checkHardwareSupport but not the enum)."""


def exact_with_opencv() -> bool:
    """Whether the 'fused' backend is bit-identical to this cv2 here: the build and CPU it was verified on
    (x86-64, cv2 5.x with IPP on, FMA3). Elsewhere it is held to the 0.05 px mean end-point error bar."""
    return (platform.machine().lower() in {"x86_64", "amd64"} and cv2.__version__.split(".")[0] == "5"
            and cv2.ipp.useIPP() and cv2.checkHardwareSupport(_CV_CPU_FMA3))


def equivalent_backends(backend: str) -> tuple[str, ...]:
    """Resolved backends whose flow equals `backend`'s bit for bit here: finished outputs made by any of them
    are as good as its own (a cache made with 'opencv' stays valid for 'fused' and back)."""
    exact = ("opencv", "fused")
    return exact if backend in exact and exact_with_opencv() else (backend,)


def fused_params() -> TVL1Params:
    """OpenCV's defaults, with the linear resize this cv2 uses (IPP's where it is on)."""
    return TVL1Params(resize_backend="ipp" if cv2.ipp.useIPP() else "generic")


def recipe(backend: str = "opencv", region: str = "crop") -> dict:
    """How flow was made, for the feature file's recipe (`backend` resolved, not 'auto')."""
    exact = "bit-identical to it here" if exact_with_opencv() else "not bit-exact here"
    impl = {"opencv": f"OpenCV {cv2.__version__} cv2.optflow.DualTVL1OpticalFlow_create() defaults",
            "fused": f"co2cli.tvl1_cpu (fused numba re-implementation of OpenCV {cv2.__version__}'s CPU TV-L1, "
                     f"default parameters; {exact})",
            }.get(backend, "co2cli.tvl1 (PyTorch re-implementation of OpenCV's CPU TV-L1, default parameters)")
    return {"method": "TV-L1", "implementation": impl, "backend": backend, "region": region,
            "input": _REGION_INPUT[region], "bound_px": FLOW_BOUND_PX,
            "scaling": "clip to [-20, 20] px, divide by 20 -> [-1, 1]; channels (dx, dy)",
            "last_frame": "flow of the last frame repeats the previous field"}



T = TypeVar("T")


def create_tvl1() -> cv2.optflow.DualTVL1OpticalFlow:
    """OpenCV's TV-L1 with its default parameters (tau 0.25, lambda 0.15, theta 0.3, 5 scales, 5 warps, ...)."""
    return cv2.optflow.DualTVL1OpticalFlow_create()


def scale_flow(flow_px: np.ndarray) -> np.ndarray:
    """Flow in pixels -> float32 in [-1, 1]: clip to [-20, 20] px, then divide by 20."""
    bound = np.float32(FLOW_BOUND_PX)
    return np.clip(flow_px.astype(np.float32, copy=False), -bound, bound) / bound


def _check_gray(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 3:
        raise ValueError(f"expected grayscale uint8 frames (N, H, W), got {frames.dtype} {frames.shape}")


PairFlow = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(prev, nxt) grey uint8 (H, W) -> flow (H, W, 2) float32 in pixels."""


def pair_flow(backend: str) -> PairFlow:
    """One-pair, one-thread TV-L1 of a CPU backend ('opencv' or 'fused'; the fused kernels load on first use)."""
    if backend == "fused":
        from co2cli.tvl1_cpu import tvl1_flow_fused

        params = fused_params()
        return lambda prev, nxt: tvl1_flow_fused(prev, nxt, params)  # type: ignore[return-value]
    tvl1 = create_tvl1()  # one object: reuse avoids reallocating its pyramids
    return lambda prev, nxt: tvl1.calc(prev, nxt, None)


_worker_flow: PairFlow | None = None


def _init_worker(backend: str) -> None:
    global _worker_flow
    cv2.setNumThreads(1)  # processes give the parallelism; threads inside would oversubscribe the cores
    _worker_flow = pair_flow(backend)


def _worker_pair(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    assert _worker_flow is not None
    return scale_flow(_worker_flow(prev, nxt))


class FlowStream:
    """TV-L1 over a stream of grayscale chunks; results equal `compute_flow` on the concatenated frames.

    `push(chunk)` returns the fields of every frame whose successor is now known (so the first push returns one
    field fewer than frames, later pushes as many as they get); `finish()` returns the last frame's field.
    """

    def __init__(self, workers: int = 1, backend: str = "opencv", device: str = "cpu", torch_batch: int = 16):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.backend = resolve_backend(backend, "cuda" if str(device).startswith("cuda") else "cpu")
        self.device = device
        self.torch_batch = torch_batch
        self._flow = pair_flow(self.backend) if workers == 1 and self.backend != "torch" else None
        self._pool: Executor | None = None
        self._last_frame: np.ndarray | None = None
        self._last_field: np.ndarray | None = None
        self.frames_seen = 0

    def _pairs(self, prevs: list[np.ndarray], nexts: list[np.ndarray]) -> list[np.ndarray]:
        if not prevs:
            return []
        if self.backend == "torch":
            from co2cli.tvl1 import tvl1_flow_numpy

            flows = tvl1_flow_numpy(np.stack(prevs), np.stack(nexts), device=self.device, batch_size=self.torch_batch)
            return [scale_flow(f) for f in flows]
        if self._flow is not None:
            return [scale_flow(self._flow(a, b)) for a, b in zip(prevs, nexts)]
        if self._pool is None:
            # spawn, not fork: the parent may hold torch/OpenMP threads that a forked child would inherit broken.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.backend,))
        return list(self._pool.map(_worker_pair, prevs, nexts))

    def push(self, gray: np.ndarray) -> np.ndarray:
        """(n, H, W) uint8 frames -> (k, H, W, 2) float32 fields in [-1, 1], k = n - 1 on the first push else n."""
        _check_gray(gray)
        frames = list(gray) if self._last_frame is None else [self._last_frame, *gray]
        fields = self._pairs(frames[:-1], frames[1:])
        if frames:
            self._last_frame = frames[-1].copy()
        if fields:
            self._last_field = fields[-1]
        self.frames_seen += len(gray)
        height, width = gray.shape[1:]
        return np.stack(fields) if fields else np.empty((0, height, width, 2), np.float32)

    def finish(self) -> np.ndarray:
        """The last frame's field, (1, H, W, 2): a repeat of the previous field, zeros if only one frame came.

        (0, 0, 0, 2) when no frame came at all. Closes the worker pool.
        """
        self.close()
        if self._last_frame is None:
            return np.empty((0, 0, 0, 2), np.float32)
        if self._last_field is None:
            return np.zeros((1, *self._last_frame.shape, 2), np.float32)
        return self._last_field[None].copy()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> FlowStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compute_flow(gray: np.ndarray, workers: int = 1, backend: str = "opencv", device: str = "cpu") -> np.ndarray:
    """(N, H, W) uint8 grayscale -> (N, H, W, 2) float32 TV-L1 flow in [-1, 1] (the last field repeated)."""
    _check_gray(gray)
    with FlowStream(workers, backend, device) as stream:
        head = stream.push(gray)
        tail = stream.finish()
    if not len(gray):
        return np.empty((0, *gray.shape[1:], 2), np.float32)
    return np.concatenate([head, tail])


def iter_flow(gray_chunks: Iterable[np.ndarray], workers: int = 1, backend: str = "opencv",
              device: str = "cpu") -> Iterator[np.ndarray]:
    """For each (n, H, W) uint8 chunk, yield its (n, H, W, 2) flow; equal to `compute_flow` on all frames.

    A chunk's flow comes out once the next chunk's first frame is known (one chunk of look-ahead).
    """
    shapes: deque[tuple[int, ...]] = deque()  # (n, H, W) of chunks whose flow is not yet yielded
    ready = np.empty((0, 0, 0, 2), np.float32)  # fields computed but not yet yielded, in order

    def complete_chunks() -> Iterator[np.ndarray]:
        nonlocal ready
        while shapes and shapes[0][0] <= len(ready):
            n, height, width = shapes.popleft()
            out, ready = ready[:n], ready[n:]
            yield out if n else np.empty((0, height, width, 2), np.float32)

    stream = FlowStream(workers, backend, device)
    try:
        for chunk in gray_chunks:
            shapes.append(chunk.shape)
            ready = _append(ready, stream.push(chunk))
            yield from complete_chunks()
        ready = _append(ready, stream.finish())  # now every chunk is complete
        yield from complete_chunks()
    finally:
        stream.close()


def _append(ready: np.ndarray, fields: np.ndarray) -> np.ndarray:
    if not len(fields):
        return ready
    return fields if not len(ready) else np.concatenate([ready, fields])


def iter_with_flow(items: Iterable[T], gray: Callable[[T], np.ndarray] = attrgetter("gray"),
                   workers: int = 1, backend: str = "opencv", device: str = "cpu") -> Iterator[tuple[T, np.ndarray]]:
    """Pair each chunk (e.g. `video.Frames`) with its flow: yields (item, (n, H, W, 2) float32 in [-1, 1])."""
    held: deque[T] = deque()

    def grays() -> Iterator[np.ndarray]:
        for item in items:
            held.append(item)
            yield gray(item)

    for fields in iter_flow(grays(), workers, backend, device):
        yield held.popleft(), fields
