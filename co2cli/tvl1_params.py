"""TV-L1 parameters and the torch-free parts shared by `tvl1.py` (PyTorch) and `tvl1_cpu.py` (numba): OpenCV's
pyramid sizes, the linear-resize taps of IPP and of OpenCV's generic code, the median's comparator network.
Units: pixels; see `tvl1.py` for how each piece was matched to OpenCV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ResizeBackend = Literal["ipp", "generic"]

_F32 = np.float32
_U32 = 2.0**-24
"""float32 unit roundoff: one rounding moves a value by at most this fraction of it."""
_FLT_EPSILON = float(np.finfo(np.float32).eps)
_MIN_LEVEL_SIDE = 16


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV's `DualTVL1OpticalFlow_create()` parameters (defaults unchanged) plus the resize backend."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
    """Kernel of the median filter on u (OpenCV's float medianBlur takes 3 or 5); 1 or 0 turns it off."""
    resize_backend: ResizeBackend = "ipp"
    """Which OpenCV float32 INTER_LINEAR resize to reproduce: "ipp" (x86-64 builds with IPP on, the pip wheels'
    default) or "generic" (OpenCV's C++ code: `cv2.ipp.setUseIPP(False)`, or builds without IPP)."""


def _f32(value: float) -> float:
    """The float32 value OpenCV gets from `static_cast<float>(value)`, as a Python float."""
    return float(_F32(value))


def _cv_round(value: float) -> int:
    """saturate_cast<int>(double): round half to even (Python's round on a float does exactly that)."""
    return int(round(value))


def _generic_taps(src: int, dst: int, inv_scale: float, clamp_frac: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV `hal::resize` taps: source index pair and float32 fraction per destination index.

    Horizontally (`clamp_frac`) a tap left of 0 or right of src-1 becomes (edge, fraction 0); vertically only the
    row indices are clamped and the fraction stays, as in `resizeGeneric_Invoker`.
    """
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * (1.0 / inv_scale) - 0.5).astype(_F32)
    left = np.floor(pos).astype(np.int64)
    frac = (pos - left.astype(_F32)).astype(_F32)
    if clamp_frac:
        low = left < 0
        frac[low], left[low] = 0, 0
        high = left >= src - 1
        frac[high], left[high] = 0, src - 1
    return np.clip(left, 0, src - 1), np.clip(left + 1, 0, src - 1), frac


def _ipp_taps(src: int, dst: int, inv_scale: float, affine: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IPP taps (measured against cv2): position clamped to [0, src-1], then on the warpAffine path the left tap
    stays <= src-2 (fraction 1 at the right edge) while the resize path replicates the edge pixel."""
    d = np.arange(dst, dtype=np.float64)
    if affine:  # OpenCV passes the forward map x_dst = s*x_src + (0.5*s - 0.5); IPP inverts it
        pos = (d - (-0.5 + 0.5 * inv_scale)) / inv_scale
    else:
        pos = (d + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1.0)
    left = np.floor(pos).astype(np.int64)
    if affine:
        left = np.minimum(left, max(src - 2, 0))
    frac = (pos - left).astype(_F32)
    return left, np.minimum(left + 1, src - 1), frac


Taps = tuple[np.ndarray, np.ndarray, np.ndarray]


def resize_taps(shape: tuple[int, int], size: tuple[int, int] | None, fx: float | None, fy: float | None,
                backend: ResizeBackend) -> tuple[Taps, Taps] | None:
    """(column taps, row taps) of `resize_linear` from `shape` (height, width) px; None when the size is
    unchanged (the resize is a copy)."""
    h, w = shape
    if size is None:
        if fx is None or fy is None:
            raise ValueError("resize_linear needs size or both fx and fy")
        inv_x, inv_y = float(fx), float(fy)
        size = (_cv_round(h * inv_y), _cv_round(w * inv_x))
    else:
        inv_x, inv_y = size[1] / w, size[0] / h
    dh, dw = size
    if (dh, dw) == (h, w):
        return None
    if backend == "ipp":
        affine = abs(dw / w - inv_x) / inv_x > 1e-10 or abs(dh / h - inv_y) / inv_y > 1e-10
        return _ipp_taps(w, dw, inv_x, affine), _ipp_taps(h, dh, inv_y, affine)
    if backend == "generic":
        return _generic_taps(w, dw, inv_x, True), _generic_taps(h, dh, inv_y, False)
    raise ValueError(f"unknown resize backend {backend!r}")


def _oddeven_merge_sort(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort comparators (i < j: min to i, max to j) for n a power of two."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def pyramid_sizes(height: int, width: int, params: TVL1Params = TVL1Params()) -> list[tuple[int, int]]:
    """(height, width) in pixels of each level, finest first; a level under 16 px on a side is not made."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = sizes[-1]
        nh, nw = _cv_round(h * params.scale_step), _cv_round(w * params.scale_step)
        if nh < _MIN_LEVEL_SIDE or nw < _MIN_LEVEL_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


def _check(params: TVL1Params, h: int, w: int) -> None:
    if params.median_filtering > 1 and params.median_filtering not in (3, 5):
        raise ValueError("median_filtering must be 0/1 (off), 3 or 5 (what OpenCV's float medianBlur supports)")
    if params.nscales < 1 or params.warps < 1 or params.inner_iterations < 1 or params.outer_iterations < 1:
        raise ValueError("nscales, warps, inner_iterations and outer_iterations must be >= 1")
    if not 0.0 < params.scale_step < 1.0:
        raise ValueError("scale_step must be in (0, 1)")
    if h < 3 or w < 3:
        raise ValueError(f"frames must be at least 3x3 pixels, got {h}x{w}")
