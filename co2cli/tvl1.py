"""TV-L1 optical flow in PyTorch, equal to OpenCV's CPU `cv2.optflow.DualTVL1OpticalFlow` (default parameters).

A batched re-implementation of `OpticalFlowDual_TVL1::calc` (opencv_contrib `modules/optflow/src/tvl1flow.cpp`),
written from reading that source and the OpenCV imgproc code it calls, and checked bit for bit against the
installed cv2 (5.1, x86-64 wheel with IPP); it runs on any torch device.

Units: images are grey intensities 0..255 (uint8, or float32 on the same 0..255 scale: OpenCV's own float input
is 0..1 and scaled by 255, so float32 here = OpenCV given the uint8 frames, or frames / 255). Flow is in pixels,
(dx, dy) = where each pixel of `prev` moved to in `nxt`.

Reproduced in OpenCV's order, in float32 with one rounding per operation (a fused multiply-add only where the
OpenCV/IPP code uses one; see `_fma`):

* Pyramid: `resize(I, Size(), 0.8, 0.8, INTER_LINEAR)` level by level (side = round-half-even(side * 0.8)); a
  level under 16 px on either side ends it. Flow starts at 0 on the coarsest level, the dual variables are reset
  to 0 per level, and between levels the flow is resized to the finer level's exact size and multiplied by 1.25.
* Resize: x86-64 builds with IPP (the pip wheels; `cv2.ipp.useIPP()` is true by default) hand float32
  INTER_LINEAR resizes to IPP, which rounds differently from OpenCV's own C++ resize. Both are reproduced
  (`TVL1Params.resize_backend`): "ipp" = along x then along y `fma(f, b - a, a)`, with IPP's border rules (its
  warpAffine path for `fx=0.8`, whose size ratio is not exactly 0.8, and its resize path for an explicit size);
  "generic" = OpenCV's `resizeGeneric_` (`a*(1-f) + b*f`, clamped taps). IPP is closed source: that model was
  measured against cv2.
* Per level: centred gradient of I1 (one-sided half differences on the border). Per warp: map (x + u1, y + u2)
  and `remap(INTER_CUBIC, BORDER_CONSTANT 0)` of I1, I1x, I1y. OpenCV 5.1 interpolates float maps at their exact
  positions (4.x rounded them to 1/32 px and used a weight table): weights A = -0.75 evaluated per pixel, taps
  outside the image = 0, an FMA chain along x per row, then one along y (measured against cv2 as well). Then
  grad = I1wx^2 + I1wy^2 and rho_c = I1w - I1wx*u1 - I1wy*u2 - I0.
* Iterations per warp: at most outer x inner (10 x 30); `medianBlur(5)` of u1 and u2 (exact median, replicated
  border) before iterations 0, 30, 60, ...; each iteration: thresholding (estimateV), divergence of p,
  u = v + theta * div p, forward gradient of u, dual update p = (p + taut * grad u) / (1 + taut * |grad u|).
* Stopping: OpenCV's `error` is a serial float32 sum, row-major, of du1^2 + du2^2, restarted per warp; the warp
  ends after the first iteration with error <= float32(epsilon^2 * area). Here the sum is taken in float64,
  with a rigorous bound on how far any serial float32 sum of those terms can be from it; only when the
  threshold lies within that bound (about 0.3 % at 224 x 224) is the pair's float32 serial sum computed (on the
  CPU), so every pair stops at OpenCV's iteration.

Batching: each pair follows its own stopping rule; a stopped pair leaves the working set (its u and p frozen)
while the others go on, so a pair's result never depends on the rest of the batch. Inside the iteration loop
the only host synchronisation is one small read per iteration (the per-pair sums).

Not covered: gamma != 0 (OpenCV's default is 0) and useInitialFlow (default false).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F

from co2cli.tvl1_params import (_F32, _FLT_EPSILON, _U32, ResizeBackend, TVL1Params, _check, _cv_round, _f32,
                                _oddeven_merge_sort, pyramid_sizes, resize_taps)



@dataclass(frozen=True)
class TVL1Stats:
    """How many inner iterations each pair ran."""

    iterations: torch.Tensor
    """(B, levels, warps) int32 on the CPU: inner iterations per pair, pyramid level (0 = finest) and warp;
    each is 1..outer_iterations*inner_iterations."""
    level_sizes: tuple[tuple[int, int], ...]
    """(height, width) in pixels of each pyramid level, finest first."""
    serial_sums: int
    """How many stopping checks fell within the float64 sum's error bound and were settled by a serial float32
    sum, as OpenCV computes it (all pairs, levels, warps and iterations together)."""


# ----------------------------------------------------------------------------------------------------------------
# Small exact-arithmetic helpers


def _fma_exact(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused a*b + c with one rounding (IPP's and OpenCV 5's AVX code use FMA), on any device.

    a*b is exact in float64; the float64 sum is made round-to-odd (TwoSum gives its exact error), which makes the
    final rounding to float32 the correct one (plain float64 then float32 can round twice). Slow: the fallback
    of `_fma`.
    """
    p = a.double() * b.double()
    c64 = c.double()
    s = p + c64
    pb = s - c64
    cb = s - pb
    err = (p - pb) + (c64 - cb)
    even = torch.bitwise_and(s.view(torch.int64), 1) == 0
    toward = torch.where(err > 0, torch.full_like(s, math.inf), torch.full_like(s, -math.inf))
    s = torch.where((err != 0) & even, torch.nextafter(s, toward), s)
    return s.float()


_MID_MASK = (1 << 29) - 1
_MID_BITS = 1 << 28
"""A float64 whose 29 low mantissa bits are 1000...0 lies exactly halfway between two float32 values."""


def _fma(a64: torch.Tensor, b64: torch.Tensor, c: torch.Tensor, bad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 fma(a, b, c) for float64 a, b holding float32 values and float32 c, via one float64 sum.

    That is the correctly rounded fma unless the sum was inexact and fell exactly on a float32 midpoint (rare);
    `bad` (0-dim bool) is or-ed with whether that happened, and callers then redo the work with `_fma_exact`.
    The sum s = p + c is exact iff s - p == c and s - c == p (Fast2Sum on whichever operand is larger).
    """
    p = a64 * b64
    c64 = c.double()
    s = p + c64
    mid = torch.bitwise_and(s.view(torch.int64), _MID_MASK) == _MID_BITS
    inexact = ((s - p) != c64) | ((s - c64) != p)
    return s.float(), bad | (mid & inexact).any()


# ----------------------------------------------------------------------------------------------------------------
# Resize (INTER_LINEAR, float32)


def _lerp_rows(img: torch.Tensor, i0: np.ndarray, i1: np.ndarray, frac: np.ndarray, dim: int,
               backend: ResizeBackend) -> torch.Tensor:
    """Interpolate `img` (B, H, W) along `dim` (-1 = columns, -2 = rows) between taps i0 and i1."""
    dev = img.device
    a = img.index_select(dim, torch.from_numpy(i0).to(dev))
    b = img.index_select(dim, torch.from_numpy(i1).to(dev))
    shape = (-1, 1) if dim == -2 else (-1,)
    f = torch.from_numpy(frac).to(dev).view(shape)
    if backend == "ipp":
        d = b - a
        out, bad = _fma(f.double(), d.double(), a, torch.zeros((), dtype=torch.bool, device=dev))
        return _fma_exact(f, d, a) if bool(bad) else out
    one_minus = torch.from_numpy((_F32(1) - frac).astype(_F32)).to(dev).view(shape)
    return a * one_minus + b * f


def resize_linear(img: torch.Tensor, size: tuple[int, int] | None = None, fx: float | None = None,
                  fy: float | None = None, backend: ResizeBackend = "ipp") -> torch.Tensor:
    """`cv2.resize(img, dsize, fx=fx, fy=fy, interpolation=INTER_LINEAR)` of float32 images (B, H, W).

    `size` = (height, width) in pixels; without it the size is round(H * fy), round(W * fx) and the scale is
    exactly fx, fy (OpenCV's `Size()` + scale call); with it the scale is size / source size. Values keep their
    units (intensities or pixels of flow).
    """
    taps = resize_taps(img.shape[-2:], size, fx, fy, backend)
    if taps is None:
        return img.clone()
    rows = _lerp_rows(img, *taps[0], dim=-1, backend=backend)
    return _lerp_rows(rows, *taps[1], dim=-2, backend=backend)


# ----------------------------------------------------------------------------------------------------------------
# Cubic remap

_A = _F32(-0.75)
_MAX_POS = float(2**24)
"""Map positions are clamped to +-2^24 px (all taps outside, result 0, as OpenCV's out-of-range floor gives)."""


def _cubic_coeffs(frac: torch.Tensor, exact: bool, bad: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The four cubic weights (A = -0.75) of OpenCV 5.1's float remap for fractional positions `frac` in [0, 1)
    (measured against cv2: c0 = A*x*(1-x)^2 and c3 = A*x^2*(1-x) as products, c1 with two FMAs, c2 = the rest)."""
    xm = 1.0 - frac
    c0 = xm * xm * frac * float(_A)
    c3 = frac * frac * xm * float(_A)
    sq = frac * frac
    one = torch.ones_like(frac)
    if exact:
        c1 = _fma_exact(sq, _fma_exact(one * 1.25, frac, one * -2.25), one)
    else:
        inner, bad = _fma(frac.double(), torch.full_like(frac, 1.25, dtype=torch.float64), one * -2.25, bad)
        c1, bad = _fma(sq.double(), inner.double(), one, bad)
    c2 = ((1.0 - c0) - c1) - c3
    return [c0, c1, c2, c3], bad


def _cubic_sum(taps: torch.Tensor, cx: list[torch.Tensor], cy: list[torch.Tensor], exact: bool,
               bad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FMA chains along x (all 4 rows at once), then along y: taps (B, Ho, Wo, 4, 4) float64 holding float32
    values, weights (B, Ho, Wo) float32. Returns the float32 result and `bad` or-ed as in `_fma`."""
    wx = [k.unsqueeze(-1) for k in cx]  # broadcast over the row axis
    if exact:
        t32 = taps.float()
        rows = t32[..., 0] * wx[0]
        for k in range(1, 4):
            rows = _fma_exact(t32[..., k], wx[k], rows)
        out = rows[..., 0] * cy[0]
        for r in range(1, 4):
            out = _fma_exact(rows[..., r], cy[r], out)
        return out, bad
    wx64 = [k.double() for k in wx]
    rows = (taps[..., 0] * wx64[0]).float()  # a product of two float32 values is exact in float64
    for k in range(1, 4):
        rows, bad = _fma(taps[..., k], wx64[k], rows, bad)
    rows64 = rows.double()
    cy64 = [k.double() for k in cy]
    out = (rows64[..., 0] * cy64[0]).float()
    for r in range(1, 4):
        out, bad = _fma(rows64[..., r], cy64[r], out, bad)
    return out, bad


def cubic_remap(src: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """`cv2.remap(src, map_x, map_y, INTER_CUBIC)` (BORDER_CONSTANT, value 0) for float32 images, as OpenCV 5.1
    computes it with float maps: exact positions (no 1/32 px table), taps outside the image count as 0, each of
    the 4 rows interpolated with an FMA chain along x, then an FMA chain along y.

    src: (B, C, H, W) intensities (or any values); map_x, map_y: (B, Ho, Wo) source positions in pixels.
    Returns (B, C, Ho, Wo). All C channels share the maps (TV-L1 warps I1 and its gradient together).
    """
    b, c, h, w = src.shape
    _, ho, wo = map_x.shape
    dev = src.device
    mx = torch.nan_to_num(map_x, nan=-_MAX_POS).clamp(-_MAX_POS, _MAX_POS)
    my = torch.nan_to_num(map_y, nan=-_MAX_POS).clamp(-_MAX_POS, _MAX_POS)
    ix, iy = torch.floor(mx), torch.floor(my)
    fx, fy = mx - ix, my - iy
    # a one-pixel zero frame, and tap indices clamped onto it, gives OpenCV's constant-0 border for free
    padded = F.pad(src, (1, 1, 1, 1)).double().reshape(b, c, (h + 2) * (w + 2))
    k4 = torch.arange(4, device=dev)
    # taps are at floor(pos) - 1 .. floor(pos) + 2; +1 for the frame
    ys = (iy.to(torch.int64).unsqueeze(-1) + (k4 - 1)).clamp(-1, h) + 1  # (B, Ho, Wo, 4)
    xs = (ix.to(torch.int64).unsqueeze(-1) + (k4 - 1)).clamp(-1, w) + 1
    idx = (ys.unsqueeze(-1) * (w + 2) + xs.unsqueeze(-2)).reshape(b, ho * wo * 16)
    for exact in (False, True):
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        cx, bad = _cubic_coeffs(fx, exact, bad)
        cy, bad = _cubic_coeffs(fy, exact, bad)
        channels = []
        for ch in range(c):  # one channel at a time keeps the float64 taps small
            taps = padded[:, ch].gather(1, idx).view(b, ho, wo, 4, 4)
            out, bad = _cubic_sum(taps, cx, cy, exact, bad)
            channels.append(out)
        # rare (an inexact float64 sum on a float32 midpoint): redo with round-to-odd FMAs
        if exact or not bool(bad):
            break
    return torch.stack(channels, dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Finite differences and the median filter (all on (B, H, W) float32)


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tvl1flow.cpp `centeredGradient`: 0.5 * central differences, 0.5 * one-sided ones on the border rows/columns.
    Units: intensity per pixel."""
    dx = torch.empty_like(img)
    dy = torch.empty_like(img)
    dx[..., 1:-1] = (img[..., 2:] - img[..., :-2]) * 0.5
    dx[..., 0] = (img[..., 1] - img[..., 0]) * 0.5
    dx[..., -1] = (img[..., -1] - img[..., -2]) * 0.5
    dy[..., 1:-1, :] = (img[..., 2:, :] - img[..., :-2, :]) * 0.5
    dy[..., 0, :] = (img[..., 1, :] - img[..., 0, :]) * 0.5
    dy[..., -1, :] = (img[..., -1, :] - img[..., -2, :]) * 0.5
    return dx, dy


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tvl1flow.cpp `forwardGradient`: u[x+1] - u[x], 0 on the last column (dx) / last row (dy)."""
    dx = torch.zeros_like(u)
    dy = torch.zeros_like(u)
    dx[..., :-1] = u[..., 1:] - u[..., :-1]
    dy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    return dx, dy


def divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """tvl1flow.cpp `divergence` (backward differences), keeping its operation order on the first row/column,
    where the missing neighbour counts as 0."""
    v1x = v1.clone()
    v1x[..., 1:] = v1[..., 1:] - v1[..., :-1]
    v2y = v2.clone()
    v2y[..., 1:, :] = v2[..., 1:, :] - v2[..., :-1, :]
    div = v1x + v2y
    # first column below row 0: OpenCV adds v1 + v2 first, then subtracts the row above
    div[..., 1:, 0] = (v1[..., 1:, 0] + v2[..., 1:, 0]) - v2[..., :-1, 0]
    return div


def _median_program(count: int) -> tuple[list[tuple[bool, int, int, int]], int]:
    """A min/max program whose output is the median of `count` (odd) inputs: Batcher's network padded with +inf
    to a power of two, comparators on +inf dropped, and only what the middle output needs kept.

    Instructions are (is_max, out, a, b) on value ids; ids 0..count-1 are the inputs. Returns (program, result).
    """
    width = 1 << (count - 1).bit_length()
    inf = -1
    wire = list(range(count)) + [inf] * (width - count)
    nxt, prog = count, []
    for i, j in _oddeven_merge_sort(width):
        a, b = wire[i], wire[j]
        if b == inf:  # min(a, inf) = a stays, max = inf stays
            continue
        if a == inf:  # the finite value moves down
            wire[i], wire[j] = b, inf
            continue
        prog += [(False, nxt, a, b), (True, nxt + 1, a, b)]
        wire[i], wire[j] = nxt, nxt + 1
        nxt += 2
    result = wire[count // 2]
    need, kept = {result}, []
    for ins in reversed(prog):
        if ins[1] in need:
            kept.append(ins)
            need.update(ins[2:])
    return kept[::-1], result


_MEDIAN_PROGRAMS = {k: _median_program(k * k) for k in (3, 5)}


def median_blur(u: torch.Tensor, ksize: int) -> torch.Tensor:
    """`cv2.medianBlur(u, ksize)` on float32 (B, H, W), ksize 3 or 5: the exact median of the ksize x ksize window
    with the border replicated, by a min/max selection network over shifted views (no arithmetic, so exact)."""
    _, h, w = u.shape
    r = ksize // 2
    padded = F.pad(u.unsqueeze(1), (r, r, r, r), mode="replicate")[:, 0]
    values = {k: padded[:, k // ksize:k // ksize + h, k % ksize:k % ksize + w] for k in range(ksize * ksize)}
    prog, result = _MEDIAN_PROGRAMS[ksize]
    for is_max, out, a, b in prog:
        values[out] = torch.maximum(values[a], values[b]) if is_max else torch.minimum(values[a], values[b])
    return values[result].contiguous()


# ----------------------------------------------------------------------------------------------------------------
# The solver


@dataclass(frozen=True)
class _Consts:
    """Per-level float32 constants and the stopping threshold, as OpenCV casts them."""

    l_t: float
    taut: float
    theta: float
    threshold: float
    """float32(epsilon^2 * area): a warp stops when its error is <= this."""


@dataclass
class _Warp:
    """Warped I1 data of one warp for the pairs still iterating (first dim = those pairs)."""

    i1wx: torch.Tensor
    i1wy: torch.Tensor
    grad: torch.Tensor
    rho_c: torch.Tensor

    def take(self, keep: torch.Tensor) -> _Warp:
        return _Warp(self.i1wx[keep], self.i1wy[keep], self.grad[keep], self.rho_c[keep])


def _iterate(u1: torch.Tensor, u2: torch.Tensor, p: list[torch.Tensor], wd: _Warp,
             c: _Consts) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One inner iteration; returns new u1, u2, [p11, p12, p21, p22] and the error terms du1^2 + du2^2."""
    # estimateV: thresholding around the linearised data term
    rho = wd.rho_c + (wd.i1wx * u1 + wd.i1wy * u2)
    lt_grad = wd.grad * c.l_t
    zero = torch.zeros((), device=u1.device, dtype=u1.dtype)
    fi = -rho / wd.grad  # only used where grad > FLT_EPSILON
    below, above = rho < -lt_grad, rho > lt_grad
    textured = wd.grad > _FLT_EPSILON

    def step(ix: torch.Tensor) -> torch.Tensor:
        lt_i = ix * c.l_t
        return torch.where(below, lt_i, torch.where(above, -lt_i, torch.where(textured, fi * ix, zero)))

    v1 = u1 + step(wd.i1wx)
    v2 = u2 + step(wd.i1wy)
    # estimateU
    n1 = v1 + divergence(p[0], p[1]) * c.theta
    n2 = v2 + divergence(p[2], p[3]) * c.theta
    d1, d2 = n1 - u1, n2 - u2
    terms = d1 * d1 + d2 * d2
    # estimateDualVariables; |grad u| as float(hypot) = sqrt in float64 of exact squares
    u1x, u1y = forward_gradient(n1)
    u2x, u2y = forward_gradient(n2)
    g1 = torch.sqrt(u1x.double().square() + u1y.double().square()).float()
    g2 = torch.sqrt(u2x.double().square() + u2y.double().square()).float()
    ng1 = g1 * c.taut + 1.0
    ng2 = g2 * c.taut + 1.0
    q = [(p[0] + u1x * c.taut) / ng1, (p[1] + u1y * c.taut) / ng1,
         (p[2] + u2x * c.taut) / ng2, (p[3] + u2y * c.taut) / ng2]
    return n1, n2, q, terms


def _stopped(terms: torch.Tensor, threshold: float) -> tuple[list[bool], int]:
    """Per pair: is OpenCV's serial float32 sum of `terms` (A, H, W), row-major, <= threshold? Also returns how
    many pairs needed the serial sum.

    The float64 sum is within n * u / (1 - n * u) * sum (+ subnormal slack) of any serial float32 sum of these
    non-negative terms; outside that band the answer is certain, inside it the float32 sum is done serially.
    """
    a = terms.shape[0]
    flat = terms.reshape(a, -1)
    n = flat.shape[1]
    sums = flat.double().sum(dim=1).cpu().tolist()  # the one sync per iteration
    rel = n * _U32 / (1.0 - n * _U32) * 1.001
    slack = n * 2.0**-149
    out: list[bool | None] = []
    unsure: list[int] = []
    for i, s in enumerate(sums):
        bound = s * rel + slack
        if s - bound > threshold:
            out.append(False)
        elif s + bound <= threshold:
            out.append(True)
        else:
            out.append(None)
            unsure.append(i)
    if unsure:
        rows = flat[torch.tensor(unsure, device=flat.device)].cpu().numpy()
        serial = np.cumsum(rows, axis=1, dtype=_F32)[:, -1]  # numpy accumulates sequentially in float32
        for i, s32 in zip(unsure, serial.tolist()):
            out[i] = s32 <= threshold
    return [bool(x) for x in out], len(unsure)


def _warp_data(i0: torch.Tensor, src: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> _Warp:
    """buildFlowMap + remap of I1, I1x, I1y + calcGradRho."""
    _, h, w = i0.shape
    gx = torch.arange(w, device=i0.device, dtype=torch.float32).view(1, 1, w)
    gy = torch.arange(h, device=i0.device, dtype=torch.float32).view(1, h, 1)
    warped = cubic_remap(src, gx + u1, gy + u2)
    i1w, i1wx, i1wy = warped[:, 0], warped[:, 1], warped[:, 2]
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
    return _Warp(i1wx, i1wy, grad, rho_c)


def _solve_level(i0: torch.Tensor, i1: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor, params: TVL1Params,
                 iterations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """procOneScale for a batch: returns the refined (u1, u2) in pixels and the number of serial float32 error
    sums it needed; fills iterations (B, warps)."""
    b, h, w = i0.shape
    c = _Consts(l_t=_f32(params.lambda_ * params.theta), taut=_f32(params.tau / params.theta),
                theta=_f32(params.theta), threshold=_f32(params.epsilon * params.epsilon * h * w))
    i1x, i1y = centered_gradient(i1)
    src = torch.stack([i1, i1x, i1y], dim=1)
    u1, u2 = u1.clone(), u2.clone()
    p_full = [torch.zeros_like(i0) for _ in range(4)]
    max_iter = params.outer_iterations * params.inner_iterations
    median = params.median_filtering > 1
    serial = 0
    for warp in range(params.warps):
        wd = _warp_data(i0, src, u1, u2)
        alive = list(range(b))
        wu1, wu2, wp = u1, u2, list(p_full)
        n = 0
        while alive and n < max_iter:
            if median and n % params.inner_iterations == 0:  # start of an outer iteration
                wu1 = median_blur(wu1, params.median_filtering)
                wu2 = median_blur(wu2, params.median_filtering)
            wu1, wu2, wp, terms = _iterate(wu1, wu2, wp, wd, c)
            n += 1
            stop, n_serial = _stopped(terms, c.threshold)
            serial += n_serial
            if any(stop):
                done = [i for i, s in enumerate(stop) if s]
                keep = [i for i, s in enumerate(stop) if not s]
                _write_back(u1, u2, p_full, wu1, wu2, wp, [alive[i] for i in done], done)
                for i in done:
                    iterations[alive[i], warp] = n
                alive = [alive[i] for i in keep]
                if alive:
                    k = torch.tensor(keep, device=i0.device)
                    wu1, wu2, wp, wd = wu1[k], wu2[k], [t[k] for t in wp], wd.take(k)
        if alive:
            _write_back(u1, u2, p_full, wu1, wu2, wp, alive, list(range(len(alive))))
            for pair in alive:
                iterations[pair, warp] = n
    return u1, u2, serial


def _write_back(u1: torch.Tensor, u2: torch.Tensor, p_full: list[torch.Tensor], wu1: torch.Tensor,
                wu2: torch.Tensor, wp: list[torch.Tensor], pairs: list[int], rows: list[int]) -> None:
    """Copy working rows `rows` (stopped pairs) into the full-batch tensors at `pairs`."""
    dst = torch.tensor(pairs, device=u1.device)
    srcr = torch.tensor(rows, device=u1.device)
    u1[dst] = wu1[srcr]
    u2[dst] = wu2[srcr]
    for full, part in zip(p_full, wp):
        full[dst] = part[srcr]


def _as_intensity(img: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8 or float32 0..255 -> float32 0..255."""
    if img.dtype == torch.uint8:
        return img.float()
    if img.dtype == torch.float32:
        return img
    raise TypeError(f"frames must be uint8 or float32 (0..255), got {img.dtype}")


def tvl1_flow(prev: torch.Tensor, nxt: torch.Tensor, *, params: TVL1Params = TVL1Params(),
              return_stats: bool = False) -> torch.Tensor | tuple[torch.Tensor, TVL1Stats]:
    """TV-L1 flow from `prev` to `nxt`, equal to OpenCV's `DualTVL1OpticalFlow.calc(prev, nxt)` per pair.

    prev, nxt: (B, H, W) or (H, W), uint8 or float32 grey 0..255, on any device (both on the same one).
    Returns flow (B, H, W, 2) (or (H, W, 2)) float32 in pixels, channel 0 = dx, 1 = dy, on that device; with
    `return_stats`, also a `TVL1Stats` with the per-pair iteration counts.
    """
    if prev.shape != nxt.shape or prev.dim() not in (2, 3):
        raise ValueError(f"prev and nxt must both be (B, H, W) or (H, W), got {tuple(prev.shape)} and "
                         f"{tuple(nxt.shape)}")
    single = prev.dim() == 2
    i0 = _as_intensity(prev if not single else prev.unsqueeze(0))
    i1 = _as_intensity(nxt if not single else nxt.unsqueeze(0)).to(i0.device)
    b, h, w = i0.shape
    _check(params, h, w)
    sizes = pyramid_sizes(h, w, params)
    i0s, i1s = [i0], [i1]
    for _ in sizes[1:]:
        i0s.append(resize_linear(i0s[-1], fx=params.scale_step, fy=params.scale_step, backend=params.resize_backend))
        i1s.append(resize_linear(i1s[-1], fx=params.scale_step, fy=params.scale_step, backend=params.resize_backend))
    iterations = torch.zeros(b, len(sizes), params.warps, dtype=torch.int32)
    u1 = torch.zeros_like(i0s[-1])
    u2 = torch.zeros_like(i0s[-1])
    up = _f32(1.0 / params.scale_step)
    serial = 0
    for level in range(len(sizes) - 1, -1, -1):
        u1, u2, n_serial = _solve_level(i0s[level], i1s[level], u1, u2, params, iterations[:, level])
        serial += n_serial
        if level:
            u1 = resize_linear(u1, sizes[level - 1], backend=params.resize_backend) * up
            u2 = resize_linear(u2, sizes[level - 1], backend=params.resize_backend) * up
    flow = torch.stack([u1, u2], dim=-1)
    if single:
        flow = flow[0]
    if return_stats:
        return flow, TVL1Stats(iterations=iterations, level_sizes=tuple(sizes), serial_sums=serial)
    return flow


def tvl1_flow_numpy(prev: np.ndarray, nxt: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 16,
                    params: TVL1Params = TVL1Params()) -> np.ndarray:
    """`tvl1_flow` on numpy frames (N, H, W) or (H, W), uint8 or float32 0..255, in batches of `batch_size`
    pairs on `device`; returns float32 flow (N, H, W, 2) (or (H, W, 2)) in pixels."""
    if prev.shape != nxt.shape or prev.ndim not in (2, 3):
        raise ValueError(f"prev and nxt must both be (N, H, W) or (H, W), got {prev.shape} and {nxt.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    single = prev.ndim == 2
    a = prev[None] if single else prev
    bb = nxt[None] if single else nxt
    out = np.empty(a.shape + (2,), dtype=np.float32)
    for start in range(0, a.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        pa = torch.from_numpy(np.ascontiguousarray(a[sl])).to(device)
        pb = torch.from_numpy(np.ascontiguousarray(bb[sl])).to(device)
        flow = tvl1_flow(pa, pb, params=params)
        assert isinstance(flow, torch.Tensor)
        out[sl] = flow.cpu().numpy()
    return out[0] if single else out
