"""numba kernels of the fused CPU TV-L1 (`tvl1_cpu.py`); importing this module compiles them (lazily, per first
call, cached on disk by numba), so only `tvl1_cpu` imports it, on first use.

Every kernel does OpenCV's float32 arithmetic in OpenCV's order with one rounding per operation: numba does not
contract a*b + c unless asked (no fastmath), and `fma32` is the one explicit fused multiply-add, used only where
OpenCV/IPP use one (the cubic remap and IPP's linear resize). Images are (H, W) float32 C-contiguous.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_F32 = np.float32


@intrinsic
def fma32(typingctx, a, b, c):  # noqa: ANN001, ANN201 (numba intrinsic signature)
    """float32 a*b + c with one rounding (llvm.fma: the FMA instruction where the CPU has one, else libm)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


# ----------------------------------------------------------------------------------------------------------------
# Resize (one axis at a time) and the centred gradient


@njit(cache=True, error_model="numpy")
def lerp_cols(src, left, right, frac, ipp, out):  # noqa: ANN001, ANN201
    """out[:, d] = interpolation between src[:, left[d]] and src[:, right[d]] by frac[d] (float32):
    IPP = fma(f, b - a, a), else OpenCV's generic a * (1 - f) + b * f."""
    one = _F32(1.0)
    for r in range(src.shape[0]):
        for d in range(out.shape[1]):
            a = src[r, left[d]]
            b = src[r, right[d]]
            f = frac[d]
            out[r, d] = fma32(f, b - a, a) if ipp else a * (one - f) + b * f
    return out


@njit(cache=True, error_model="numpy")
def lerp_rows(src, top, bottom, frac, ipp, out):  # noqa: ANN001, ANN201
    """out[d, :] = interpolation between rows src[top[d]] and src[bottom[d]] by frac[d], as `lerp_cols`."""
    one = _F32(1.0)
    for d in range(out.shape[0]):
        f = frac[d]
        g = one - f
        ta, tb = top[d], bottom[d]
        for x in range(out.shape[1]):
            a = src[ta, x]
            b = src[tb, x]
            out[d, x] = fma32(f, b - a, a) if ipp else a * g + b * f
    return out


@njit(cache=True, error_model="numpy")
def centered_gradient(img, dx, dy):  # noqa: ANN001, ANN201
    """tvl1flow.cpp centeredGradient: 0.5 * central differences, one-sided on the border (intensity per px)."""
    h, w = img.shape
    half = _F32(0.5)
    for r in range(h):
        ra, rb = (r - 1 if r > 0 else 0), (r + 1 if r < h - 1 else h - 1)
        dx[r, 0] = (img[r, 1] - img[r, 0]) * half
        for x in range(1, w - 1):
            dx[r, x] = (img[r, x + 1] - img[r, x - 1]) * half
        dx[r, w - 1] = (img[r, w - 1] - img[r, w - 2]) * half
        for x in range(w):
            dy[r, x] = (img[rb, x] - img[ra, x]) * half


# ----------------------------------------------------------------------------------------------------------------
# Cubic remap of I1, I1x, I1y (shared weights) fused with calcGradRho


@njit(cache=True, error_model="numpy", inline="always")
def _cubic_weights(f):  # noqa: ANN001, ANN202
    """OpenCV 5.1's float cubic weights (A = -0.75) at fraction f in [0, 1), in its operation order."""
    one = _F32(1.0)
    a = _F32(-0.75)
    xm = one - f
    c0 = xm * xm * f * a
    c3 = f * f * xm * a
    c1 = fma32(f * f, fma32(f, _F32(1.25), _F32(-2.25)), one)
    c2 = ((one - c0) - c1) - c3
    return c0, c1, c2, c3


@njit(cache=True, error_model="numpy", inline="always")
def _tap(img, y, x):  # noqa: ANN001, ANN202
    """img[y, x], or +0 outside the image (BORDER_CONSTANT 0)."""
    h, w = img.shape
    if 0 <= y < h and 0 <= x < w:
        return img[y, x]
    return _F32(0.0)


@njit(cache=True, error_model="numpy", inline="always")
def _cubic(img, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3, inside):  # noqa: ANN001, ANN202, PLR0913
    """One cubic sample: an FMA chain along x per tap row, then one along y (OpenCV 5.1's order)."""
    out = _F32(0.0)
    for j in range(4):
        y = iy - 1 + j
        if inside:
            row = img[y, ix - 1] * wx0
            row = fma32(img[y, ix], wx1, row)
            row = fma32(img[y, ix + 1], wx2, row)
            row = fma32(img[y, ix + 2], wx3, row)
        else:
            row = _tap(img, y, ix - 1) * wx0
            row = fma32(_tap(img, y, ix), wx1, row)
            row = fma32(_tap(img, y, ix + 1), wx2, row)
            row = fma32(_tap(img, y, ix + 2), wx3, row)
        wy = wy0 if j == 0 else (wy1 if j == 1 else (wy2 if j == 2 else wy3))
        out = row * wy if j == 0 else fma32(row, wy, out)
    return out


@njit(cache=True, error_model="numpy")
def warp_data(i0, i1, i1x, i1y, u1, u2, i1wx, i1wy, grad, rho_c):  # noqa: ANN001, ANN201, PLR0913
    """buildFlowMap + remap(INTER_CUBIC, BORDER_CONSTANT 0) of I1, I1x, I1y at (x + u1, y + u2) + calcGradRho:
    grad = I1wx^2 + I1wy^2, rho_c = I1w - I1wx * u1 - I1wy * u2 - I0. Positions clamped to +-2^24 px (NaN ->
    -2^24), where every tap is outside and the sample is 0, as in OpenCV."""
    h, w = i0.shape
    lim = _F32(2.0**24)
    for r in range(h):
        for x in range(w):
            a1, a2 = u1[r, x], u2[r, x]
            mx = _F32(x) + a1
            my = _F32(r) + a2
            mx = -lim if math.isnan(mx) else min(max(mx, -lim), lim)
            my = -lim if math.isnan(my) else min(max(my, -lim), lim)
            fx, fy = _F32(math.floor(mx)), _F32(math.floor(my))
            wx0, wx1, wx2, wx3 = _cubic_weights(mx - fx)
            wy0, wy1, wy2, wy3 = _cubic_weights(my - fy)
            ix, iy = int(fx), int(fy)
            inside = 1 <= ix and ix + 2 < w and 1 <= iy and iy + 2 < h
            v = _cubic(i1, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3, inside)
            gx = _cubic(i1x, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3, inside)
            gy = _cubic(i1y, iy, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3, inside)
            i1wx[r, x] = gx
            i1wy[r, x] = gy
            grad[r, x] = gx * gx + gy * gy
            rho_c[r, x] = ((v - gx * a1) - gy * a2) - i0[r, x]


# ----------------------------------------------------------------------------------------------------------------
# 5x5 / 3x3 median (replicated border) with sorted columns shared along the row


@njit(cache=True, error_model="numpy")
def median_blur(u, out, prog, result, k, buf):  # noqa: ANN001, ANN201, PLR0913
    """cv2.medianBlur(u, k) of float32 u (exact median, replicated border) into `out`.

    Per output row: the k-tall column at every (padded) x is sorted once (an insertion network, shared by the k
    outputs that use it), then `prog` (rows: is_max, out_id, a_id, b_id; ids < k*k are input
    column dx = id // k, rank = id % k) selects the median `result` from the k x k sorted columns.
    buf: float32 scratch of at least (k + (len(prog))) * (W + k) values.
    """
    h, w = u.shape
    rad = k // 2
    wp = w + 2 * rad
    n_in = k * k
    for r in range(h):
        # sorted columns: ranks 0..k-1 stored at buf[rank * wp + xp], xp = x + rad
        for j in range(k):
            y = min(max(r - rad + j, 0), h - 1)
            base = j * wp
            for xp in range(wp):
                buf[base + xp] = u[y, min(max(xp - rad, 0), w - 1)]
        for i in range(1, k):  # insertion sort of each column as compare-exchanges, vectorised over x
            for j in range(i, 0, -1):
                lo, hi = (j - 1) * wp, j * wp
                for xp in range(wp):
                    a, b = buf[lo + xp], buf[hi + xp]
                    buf[lo + xp] = a if a < b else b
                    buf[hi + xp] = b if a < b else a
        derived = k * wp
        for t in range(prog.shape[0]):
            is_max, o, a, b = prog[t, 0], prog[t, 1], prog[t, 2], prog[t, 3]
            ob = derived + (o - n_in) * wp
            ab = (a % k) * wp + a // k if a < n_in else derived + (a - n_in) * wp
            bb = (b % k) * wp + b // k if b < n_in else derived + (b - n_in) * wp
            if is_max:
                for x in range(w):
                    va, vb = buf[ab + x], buf[bb + x]
                    buf[ob + x] = vb if va < vb else va
            else:
                for x in range(w):
                    va, vb = buf[ab + x], buf[bb + x]
                    buf[ob + x] = va if va < vb else vb
        rb = derived + (result - n_in) * wp
        for x in range(w):
            out[r, x] = buf[rb + x]


# ----------------------------------------------------------------------------------------------------------------
# The fused inner iterations of one warp


@njit(cache=True, error_model="numpy", inline="always")
def _estimate_u_row(r, u1, u2, p11, p12, p21, p22, q12, q22, i1wx, i1wy, grad, rho_c, l_t, theta,  # noqa: ANN001, ANN202, PLR0913
                    terms, acc64):
    """Row r: estimateV (thresholding), divergence of p (q12/q22 = row r-1 of p12/p22, zeros on row 0),
    u = v + theta * div p; error terms du1^2 + du2^2 into `terms` and float64 column sums `acc64`."""
    w = u1.shape[1]
    zero = _F32(0.0)
    eps = _F32(np.finfo(np.float32).eps)
    for x in range(w):
        a1, a2 = u1[r, x], u2[r, x]
        gx, gy, g = i1wx[r, x], i1wy[r, x], grad[r, x]
        rho = rho_c[r, x] + (gx * a1 + gy * a2)
        ltg = g * l_t
        fi = -rho / g
        ltx, lty = gx * l_t, gy * l_t
        s1 = ltx if rho < -ltg else (-ltx if rho > ltg else (fi * gx if g > eps else zero))
        s2 = lty if rho < -ltg else (-lty if rho > ltg else (fi * gy if g > eps else zero))
        v1, v2 = a1 + s1, a2 + s2
        if x == 0:
            d1 = (p11[r, 0] + p12[r, 0]) - q12[0]
            d2 = (p21[r, 0] + p22[r, 0]) - q22[0]
        else:
            d1 = (p11[r, x] - p11[r, x - 1]) + (p12[r, x] - q12[x])
            d2 = (p21[r, x] - p21[r, x - 1]) + (p22[r, x] - q22[x])
        n1 = v1 + d1 * theta
        n2 = v2 + d2 * theta
        e1, e2 = n1 - a1, n2 - a2
        t = e1 * e1 + e2 * e2
        terms[r, x] = t
        acc64[x] += np.float64(t)
        u1[r, x] = n1
        u2[r, x] = n2


@njit(cache=True, error_model="numpy", inline="always")
def _dual_row(r, u1, u2, p11, p12, p21, p22, taut):  # noqa: ANN001, ANN202, PLR0913
    """Row r: forward gradient of u (rows r and r+1 final) and p = (p + taut * grad u) / (1 + taut * |grad u|),
    |grad u| = float(sqrt) of float64 exact squares."""
    h, w = u1.shape
    one = _F32(1.0)
    zero = _F32(0.0)
    last_row = r == h - 1
    rn = r if last_row else r + 1
    for x in range(w):
        a1, a2 = u1[r, x], u2[r, x]
        xn = x if x == w - 1 else x + 1
        u1x = zero if x == w - 1 else u1[r, xn] - a1
        u2x = zero if x == w - 1 else u2[r, xn] - a2
        u1y = zero if last_row else u1[rn, x] - a1
        u2y = zero if last_row else u2[rn, x] - a2
        g1 = _F32(math.sqrt(np.float64(u1x) * np.float64(u1x) + np.float64(u1y) * np.float64(u1y)))
        g2 = _F32(math.sqrt(np.float64(u2x) * np.float64(u2x) + np.float64(u2y) * np.float64(u2y)))
        ng1 = g1 * taut + one
        ng2 = g2 * taut + one
        p11[r, x] = (p11[r, x] + u1x * taut) / ng1
        p12[r, x] = (p12[r, x] + u1y * taut) / ng1
        p21[r, x] = (p21[r, x] + u2x * taut) / ng2
        p22[r, x] = (p22[r, x] + u2y * taut) / ng2


@njit(cache=True, error_model="numpy")
def sweep(u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, l_t, theta, taut, terms, acc64, zrow):  # noqa: ANN001, ANN201, PLR0913
    """One inner iteration in one pass: row r's u update, then row r-1's dual update (its u rows are final and
    row r no longer needs p of row r-1). Returns the float64 sum of the error terms."""
    h = u1.shape[0]
    acc64[:] = 0.0
    for r in range(h):
        q12 = p12[r - 1] if r > 0 else zrow
        q22 = p22[r - 1] if r > 0 else zrow
        _estimate_u_row(r, u1, u2, p11, p12, p21, p22, q12, q22, i1wx, i1wy, grad, rho_c, l_t, theta, terms, acc64)
        if r > 0:
            _dual_row(r - 1, u1, u2, p11, p12, p21, p22, taut)
    _dual_row(h - 1, u1, u2, p11, p12, p21, p22, taut)
    return acc64.sum()


@njit(cache=True, error_model="numpy")
def serial_sum(terms):  # noqa: ANN001, ANN201
    """OpenCV's error: a serial float32 sum of the terms, row-major."""
    acc = _F32(0.0)
    for v in terms.ravel():
        acc += v
    return acc


@njit(cache=True, error_model="numpy")
def stopped(sum64, terms, threshold):  # noqa: ANN001, ANN201
    """Is OpenCV's serial float32 sum of `terms` <= threshold? Settled by the float64 sum `sum64` unless the
    threshold lies within the bound on how far any serial float32 sum of these n non-negative terms can be
    from it (n u / (1 - n u), u = 2^-24, plus subnormal slack); then the serial sum is taken.
    Returns (stop, whether the serial sum was needed)."""
    n = terms.size
    unit = 2.0**-24
    bound = sum64 * (n * unit / (1.0 - n * unit) * 1.001) + n * 2.0**-149
    if sum64 - bound > threshold:
        return False, False
    if sum64 + bound <= threshold:
        return True, False
    return np.float64(serial_sum(terms)) <= threshold, True


@njit(cache=True, error_model="numpy")
def run_warp(u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, consts, limits, med, scratch):  # noqa: ANN001, ANN201, PLR0913
    """The inner iterations of one warp: median of u before iterations 0, inner, 2 inner, ... (when on), one
    fused sweep per iteration, OpenCV's stopping rule. consts = float32 [l_t, theta, taut], float64 threshold in
    limits[0]; limits[1] = max iterations, limits[2] = inner iterations; med = (prog, result, k) or k = 0.
    Returns (iterations run, serial sums taken); u1/u2 are updated in place."""
    h, w = u1.shape
    terms, tmp, acc64, zrow, buf = scratch
    prog, result, k = med
    threshold = limits[0]
    max_iter, inner = int(limits[1]), int(limits[2])
    n_serial = 0
    for n in range(max_iter):
        if k > 1 and n % inner == 0:
            median_blur(u1, tmp, prog, result, k, buf)
            u1[:] = tmp
            median_blur(u2, tmp, prog, result, k, buf)
            u2[:] = tmp
        s = sweep(u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, consts[0], consts[1], consts[2], terms,
                  acc64, zrow)
        stop, serial = stopped(s, terms, threshold)
        n_serial += serial
        if stop:
            return n + 1, n_serial
    return max_iter, n_serial
