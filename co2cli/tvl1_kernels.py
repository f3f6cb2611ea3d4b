# ruff: noqa: ANN001, ANN201, ANN202, PLR0913  (numba kernels: types come from the call, not annotations)
"""numba kernels of the fused CPU TV-L1 (`tvl1_cpu.py`). Each compiles on its first call (or loads from numba's
on-disk cache, `cache=True`); only `tvl1_cpu` imports this module, and only when a pair is computed.

Every kernel does OpenCV's float32 arithmetic in OpenCV's order with one rounding per operation: numba does not
contract a*b + c unless asked (no fastmath), and `fma32` is the one explicit fused multiply-add, used only where
OpenCV/IPP use one (the cubic remap and IPP's linear resize). Images are (H, W) float32 C-contiguous.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.extending import intrinsic

_F32 = np.float32


@intrinsic
def fma32(typingctx, a, b, c):
    """float32 a*b + c with one rounding (llvm.fma: the FMA instruction where the CPU has one, else libm)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


class NoAliasPipeline(CompilerBase):
    """numba's nopython pipeline with LLVM `noalias` on the array arguments, so that a loop storing to many rows
    of an output vectorises without runtime overlap checks (LLVM gives up past 128 of them). Only for kernels
    whose array arguments never overlap."""

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [DefaultPassBuilder.define_nopython_pipeline(self.state)]


# ----------------------------------------------------------------------------------------------------------------
# Resize (one axis at a time) and the centred gradient


@njit(cache=True, error_model="numpy")
def lerp_cols(src, left, right, frac, ipp, out):
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
def lerp_rows(src, top, bottom, frac, ipp, out):
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
def centered_gradient(img, dx, dy):
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
def _cubic_weights(f):
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
def _floor(v):
    """floor of a float32 with |v| <= 2^24, as an int (numba's math.floor on float32 calls libm's floorf)."""
    i = int(v)
    return i - 1 if _F32(i) > v else i


@intrinsic
def cubic_taps(typingctx, src, y, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3):
    """The cubic interpolation of the three planes of src (H, W, 4 float32, planes interleaved per pixel) from
    the 4x4 taps whose first is (row y, column ix), weights wx along x and wy along y: each tap row is t0 * wx0
    then an FMA per further tap (OpenCV 5.1's order), then the rows the same way with wy. The four interleaved
    planes of one tap are one <4 x float> load, so every operation does the three planes (and the zero plane)
    at once: LLVM's vectoriser does not find this on its own. Returns (I1, I1x, I1y) at the point."""
    sig = types.UniTuple(types.float32, 3)(src, y, ix, wx0, wx1, wx2, wx3, wy0, wy1, wy2, wy3)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        v4 = ir.VectorType(ir.FloatType(), 4)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        name = "llvm.fma.v4f32"
        fma = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(v4, [v4] * 3), name)

        def splat(x):
            one = builder.insert_element(ir.Constant(v4, ir.Undefined), x, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(v4, ir.Undefined), ir.Constant(ir.VectorType(i32, 4), [0] * 4))

        wx, wy = [splat(a) for a in args[3:7]], [splat(a) for a in args[7:11]]
        row = builder.mul(builder.extract_value(ary.shape, 1), ir.Constant(i64, 4))  # floats per row
        first = builder.add(builder.mul(args[1], row), builder.mul(args[2], ir.Constant(i64, 4)))
        acc = None
        for j in range(4):
            start = builder.add(first, builder.mul(ir.Constant(i64, j), row))
            taps = []
            for i in range(4):
                ptr = builder.gep(ary.data, [builder.add(start, ir.Constant(i64, 4 * i))], inbounds=True)
                load = builder.load(builder.bitcast(ptr, v4.as_pointer()))
                load.align = 4
                taps.append(load)
            r = builder.fmul(taps[0], wx[0])
            for i in range(1, 4):
                r = builder.call(fma, [taps[i], wx[i], r])
            acc = builder.fmul(r, wy[0]) if j == 0 else builder.call(fma, [r, wy[j], acc])
        planes = [builder.extract_element(acc, ir.Constant(i32, c)) for c in range(3)]
        return context.make_tuple(builder, signature.return_type, planes)

    return sig, codegen


REMAP_FRAME = 4
"""Zero frame (px) around the remapped planes: with the tap origin clamped to [-3, size + 1] every tap is a
plain load and taps outside the image read 0 (BORDER_CONSTANT), exactly as far-away positions do."""


@njit(cache=True, error_model="numpy", inline="always")
def _tap_row(r, u1, u2, w, h, wts, tap):
    """Row r's remap positions (x + u1, r + u2), clamped to +-2^24 px (NaN -> -2^24) as in OpenCV, as cubic
    weights and first-tap indices (clamped to [-3, size + 1], framed): a branch-free loop that vectorises."""
    lim = _F32(2.0**24)
    fr = REMAP_FRAME
    for x in range(w):
        mx = _F32(x) + u1[r, x]
        my = _F32(r) + u2[r, x]
        mx = -lim if math.isnan(mx) else min(max(mx, -lim), lim)
        my = -lim if math.isnan(my) else min(max(my, -lim), lim)
        ix, iy = _floor(mx), _floor(my)
        wts[0, x], wts[1, x], wts[2, x], wts[3, x] = _cubic_weights(mx - _F32(ix))
        wts[4, x], wts[5, x], wts[6, x], wts[7, x] = _cubic_weights(my - _F32(iy))
        tap[0, x] = min(max(ix, -3), w + 1) + fr - 1
        tap[1, x] = min(max(iy, -3), h + 1) + fr - 1


@njit(cache=True, error_model="numpy")
def warp_data(i0, src, u1, u2, i1wx, i1wy, rho_c):
    """buildFlowMap + remap(INTER_CUBIC, BORDER_CONSTANT 0) of I1, I1x, I1y at (x + u1, y + u2) + calcGradRho's
    rho_c = I1w - I1wx * u1 - I1wy * u2 - I0 (its grad = I1wx^2 + I1wy^2 is recomputed where used, `_u_pixel`).

    src: (H + 8, W + 8, 4) I1, I1x, I1y (and a 0 plane) interleaved per pixel (`cubic_taps` does the three
    planes in one vector), in a zero frame of REMAP_FRAME px. Positions are clamped to +-2^24 px (NaN ->
    -2^24) as in OpenCV; each tap row is an FMA chain along x, then one along y (OpenCV 5.1's order).
    """
    h, w = i0.shape
    wts = np.empty((8, w), np.float32)  # per row: x weights 0..3, y weights 0..3
    tap = np.empty((2, w), np.int64)  # per row: first tap column, row (framed)
    for r in range(h):
        _tap_row(r, u1, u2, w, h, wts, tap)
        for x in range(w):
            v, gx, gy = cubic_taps(src, tap[1, x], tap[0, x], wts[0, x], wts[1, x], wts[2, x], wts[3, x],
                                   wts[4, x], wts[5, x], wts[6, x], wts[7, x])
            i1wx[r, x] = gx
            i1wy[r, x] = gy
            rho_c[r, x] = ((v - gx * u1[r, x]) - gy * u2[r, x]) - i0[r, x]


# ----------------------------------------------------------------------------------------------------------------
# 5x5 / 3x3 median (replicated border) with sorted columns shared along the row


@njit(cache=True, error_model="numpy")
def median3_rows(cols, out, r):  # generated by tvl1_cpu.median_source
    """Row r of the 3x3 median: cols = (3, W + 2) sorted columns of the padded row."""
    for x in range(out.shape[1]):
        v0 = cols[0, x + 0]
        v1 = cols[1, x + 0]
        v2 = cols[2, x + 0]
        v3 = cols[0, x + 1]
        v4 = cols[1, x + 1]
        v5 = cols[2, x + 1]
        v6 = cols[0, x + 2]
        v7 = cols[1, x + 2]
        v8 = cols[2, x + 2]
        v9 = v2 if v2 < v3 else v3
        v10 = v3 if v2 < v3 else v2
        v11 = v0 if v0 < v9 else v9
        v12 = v9 if v0 < v9 else v0
        v13 = v4 if v4 < v6 else v6
        v14 = v6 if v4 < v6 else v4
        v15 = v5 if v5 < v7 else v7
        v16 = v7 if v5 < v7 else v5
        v17 = v1 if v1 < v12 else v12
        v18 = v12 if v1 < v12 else v1
        v19 = v15 if v15 < v14 else v14
        v20 = v14 if v15 < v14 else v15
        v21 = v13 if v11 < v13 else v11
        v22 = v17 if v17 < v19 else v19
        v23 = v19 if v17 < v19 else v17
        v24 = v18 if v18 < v20 else v20
        v25 = v20 if v18 < v20 else v18
        v26 = v10 if v10 < v16 else v16
        v27 = v24 if v24 < v21 else v21
        v28 = v21 if v24 < v21 else v24
        v29 = v26 if v26 < v23 else v23
        v30 = v23 if v26 < v23 else v26
        v31 = v27 if v22 < v27 else v22
        v32 = v29 if v29 < v28 else v28
        v33 = v28 if v29 < v28 else v29
        v34 = v30 if v30 < v25 else v25
        v35 = v33 if v33 < v8 else v8
        v36 = v35 if v31 < v35 else v31
        v37 = v32 if v32 < v34 else v34
        v38 = v36 if v37 < v36 else v37
        out[r, x] = v38


@njit(cache=True, error_model="numpy", pipeline_class=NoAliasPipeline)
def median5_pairs(cols, pairs):  # generated by tvl1_cpu.median5_source
    """pairs[:, y] = the sorted merge of the sorted columns y and y + 1."""
    for y in range(pairs.shape[1]):
        v0 = cols[0, y]
        v1 = cols[1, y]
        v2 = cols[2, y]
        v3 = cols[3, y]
        v4 = cols[4, y]
        v5 = cols[0, y + 1]
        v6 = cols[1, y + 1]
        v7 = cols[2, y + 1]
        v8 = cols[3, y + 1]
        v9 = cols[4, y + 1]
        v10 = v0 if v0 < v5 else v5
        v11 = v5 if v0 < v5 else v0
        v12 = v1 if v1 < v6 else v6
        v13 = v6 if v1 < v6 else v1
        v14 = v2 if v2 < v7 else v7
        v15 = v7 if v2 < v7 else v2
        v16 = v3 if v3 < v8 else v8
        v17 = v8 if v3 < v8 else v3
        v18 = v4 if v4 < v9 else v9
        v19 = v9 if v4 < v9 else v4
        v20 = v18 if v18 < v11 else v11
        v21 = v11 if v18 < v11 else v18
        v22 = v14 if v14 < v20 else v20
        v23 = v20 if v14 < v20 else v14
        v24 = v16 if v16 < v13 else v13
        v25 = v13 if v16 < v13 else v16
        v26 = v15 if v15 < v21 else v21
        v27 = v21 if v15 < v21 else v15
        v28 = v12 if v12 < v22 else v22
        v29 = v22 if v12 < v22 else v12
        v30 = v24 if v24 < v23 else v23
        v31 = v23 if v24 < v23 else v24
        v32 = v25 if v25 < v26 else v26
        v33 = v26 if v25 < v26 else v25
        v34 = v17 if v17 < v27 else v27
        v35 = v27 if v17 < v27 else v17
        pairs[0, y] = v10
        pairs[1, y] = v28
        pairs[2, y] = v29
        pairs[3, y] = v30
        pairs[4, y] = v31
        pairs[5, y] = v32
        pairs[6, y] = v33
        pairs[7, y] = v34
        pairs[8, y] = v35
        pairs[9, y] = v19


@njit(cache=True, error_model="numpy", pipeline_class=NoAliasPipeline)
def median5_quads(pairs, quads):  # generated by tvl1_cpu.median5_source
    """quads[:, y] = ranks 7..12 of the sorted merge of columns y..y + 3."""
    for y in range(quads.shape[1]):
        v0 = pairs[0, y]
        v1 = pairs[1, y]
        v2 = pairs[2, y]
        v3 = pairs[3, y]
        v4 = pairs[4, y]
        v5 = pairs[5, y]
        v6 = pairs[6, y]
        v7 = pairs[7, y]
        v8 = pairs[8, y]
        v9 = pairs[9, y]
        v10 = pairs[0, y + 2]
        v11 = pairs[1, y + 2]
        v12 = pairs[2, y + 2]
        v13 = pairs[3, y + 2]
        v14 = pairs[4, y + 2]
        v15 = pairs[5, y + 2]
        v16 = pairs[6, y + 2]
        v17 = pairs[7, y + 2]
        v18 = pairs[8, y + 2]
        v19 = pairs[9, y + 2]
        v20 = v10 if v0 < v10 else v0
        v21 = v11 if v1 < v11 else v1
        v22 = v12 if v2 < v12 else v2
        v23 = v13 if v3 < v13 else v3
        v24 = v4 if v4 < v14 else v14
        v25 = v14 if v4 < v14 else v4
        v26 = v5 if v5 < v15 else v15
        v27 = v15 if v5 < v15 else v5
        v28 = v6 if v6 < v16 else v16
        v29 = v7 if v7 < v17 else v17
        v30 = v8 if v8 < v18 else v18
        v31 = v9 if v9 < v19 else v19
        v32 = v30 if v30 < v20 else v20
        v33 = v20 if v30 < v20 else v30
        v34 = v31 if v31 < v21 else v21
        v35 = v21 if v31 < v21 else v31
        v36 = v32 if v24 < v32 else v24
        v37 = v34 if v26 < v34 else v26
        v38 = v28 if v28 < v22 else v22
        v39 = v22 if v28 < v22 else v28
        v40 = v29 if v29 < v23 else v23
        v41 = v23 if v29 < v23 else v29
        v42 = v25 if v25 < v33 else v33
        v43 = v27 if v27 < v35 else v35
        v44 = v36 if v38 < v36 else v38
        v45 = v40 if v40 < v37 else v37
        v46 = v37 if v40 < v37 else v40
        v47 = v39 if v39 < v42 else v42
        v48 = v42 if v39 < v42 else v39
        v49 = v41 if v41 < v43 else v43
        v50 = v45 if v45 < v44 else v44
        v51 = v44 if v45 < v44 else v45
        v52 = v46 if v46 < v47 else v47
        v53 = v47 if v46 < v47 else v46
        v54 = v49 if v49 < v48 else v48
        v55 = v48 if v49 < v48 else v49
        quads[0, y] = v50
        quads[1, y] = v51
        quads[2, y] = v52
        quads[3, y] = v53
        quads[4, y] = v54
        quads[5, y] = v55


@njit(cache=True, error_model="numpy", pipeline_class=NoAliasPipeline)
def median5_select(quads, cols, out, r):
    """Row r of the 5x5 median: rank 12 of window x = quads[:, x] (ranks 7..12 of its first four columns) and
    the sorted column x + 4 (see tvl1_cpu._MEDIAN5_STAGES)."""
    for x in range(out.shape[1]):
        m = quads[5, x]
        for j in range(5):
            q, c = quads[4 - j, x], cols[j, x + 4]
            big = c if q < c else q
            m = m if m < big else big
        out[r, x] = m


@njit(cache=True, error_model="numpy", inline="always")
def _sort2(a, b):
    return (a if a < b else b), (b if a < b else a)


@njit(cache=True, error_model="numpy", pipeline_class=NoAliasPipeline)
def median5_columns(r0, r1, r2, r3, r4, cols, w):
    """cols[:, x + 2] = the column (r0[x], ..., r4[x]) sorted (tvl1_cpu._SORT_NETWORKS[5]) for x < w, and the
    two columns past each end replicate the border ones (cols: (5, w + 4))."""
    for x in range(w):
        a, b, c, d, e = r0[x], r1[x], r2[x], r3[x], r4[x]
        a, b = _sort2(a, b)
        d, e = _sort2(d, e)
        c, e = _sort2(c, e)
        c, d = _sort2(c, d)
        b, e = _sort2(b, e)
        a, d = _sort2(a, d)
        a, c = _sort2(a, c)
        b, d = _sort2(b, d)
        b, c = _sort2(b, c)
        cols[0, x + 2], cols[1, x + 2], cols[2, x + 2], cols[3, x + 2], cols[4, x + 2] = a, b, c, d, e
    for j in range(5):
        cols[j, 0] = cols[j, 1] = cols[j, 2]
        cols[j, w + 3] = cols[j, w + 2] = cols[j, w + 1]


@njit(cache=True, error_model="numpy")
def median_blur(u, out, network, cols):
    """cv2.medianBlur(u[:, :W], k) of float32 u (exact median, replicated border) into `out` (H, W),
    k = len(cols) (3 or 5).

    Per output row the k-tall column at every padded x is sorted once (`network`: comparator rows (i, j), min
    to i), shared by the k outputs that use it; then for 5x5 the generated `median5_pairs` / `median5_quads`
    merge neighbouring columns (each merge shared by two windows) and `median5_select` picks each median; for
    3x3 the generated `median3_rows` selects it.
    cols: float32 scratch (k, W + k - 1).
    """
    h, w = out.shape  # u may be wider (a padded plane): its first w columns are the image
    k = cols.shape[0]
    rad = k // 2
    pairs = np.empty((10, w + 3), np.float32)  # 5x5 only: merged neighbouring columns ...
    quads = np.empty((6, w), np.float32)  # ... and the middle ranks of four
    for r in range(h):
        if k == 5:
            median5_columns(u[max(r - 2, 0)], u[max(r - 1, 0)], u[r], u[min(r + 1, h - 1)], u[min(r + 2, h - 1)],
                            cols, w)
        else:
            for j in range(k):
                y = min(max(r - rad + j, 0), h - 1)
                line, src = cols[j], u[y]
                for xp in range(rad):
                    line[xp] = src[0]
                    line[w + rad + xp] = src[w - 1]
                for x in range(w):
                    line[x + rad] = src[x]
            for c in range(network.shape[0]):
                lo, hi = cols[network[c, 0]], cols[network[c, 1]]
                for xp in range(w + 2 * rad):
                    a, b = lo[xp], hi[xp]
                    lo[xp] = a if a < b else b
                    hi[xp] = b if a < b else a
        if k == 5:
            median5_pairs(cols, pairs)
            median5_quads(pairs, quads)
            median5_select(quads, cols, out, r)
        else:
            median3_rows(cols, out, r)


# ----------------------------------------------------------------------------------------------------------------
# The fused inner iterations of one warp


@njit(cache=True, error_model="numpy", inline="always")
def _u_pixel(a1, a2, gx, gy, rc, d1, d2, l_t, theta):
    """estimateV (thresholding around the linearised data term) + u = v + theta * div p at one pixel; returns
    (u1, u2, du1^2 + du2^2). a = u before, g = I1wx^2 + I1wy^2 (recomputed: the same bits as calcGradRho's grad,
    one plane less to read), rc = rho_c, d = div p."""
    g = gx * gx + gy * gy
    rho = rc + (gx * a1 + gy * a2)
    ltg = g * l_t
    fi = -rho / g
    ltx, lty = gx * l_t, gy * l_t
    eps = _F32(np.finfo(np.float32).eps)
    zero = _F32(0.0)
    s1 = ltx if rho < -ltg else (-ltx if rho > ltg else (fi * gx if g > eps else zero))
    s2 = lty if rho < -ltg else (-lty if rho > ltg else (fi * gy if g > eps else zero))
    n1 = (a1 + s1) + d1 * theta
    n2 = (a2 + s2) + d2 * theta
    e1, e2 = n1 - a1, n2 - a2
    return n1, n2, e1 * e1 + e2 * e2


def padded_width(w):
    """Plane width for `sweep`: w - 1 rounded up to a multiple of 16 float32 lanes (one zmm), plus 1 (column 0
    is peeled), so both row loops run whole vectors."""
    return (w + 14) // 16 * 16 + 1


@njit(cache=True, error_model="numpy", inline="always")
def _estimate_u_row(r, u1, u2, p11, p12, p21, p22, q12, q22, i1wx, i1wy, rho_c, l_t, theta, terms, acc):
    """Row r: u update with divergence of p (q12/q22 = row r-1 of p12/p22, zeros on row 0; column 0 adds v1 + v2
    first, as OpenCV); error terms into `terms`, float32 column sums into `acc`. p is only read here, so the
    x-divergence loads p[x - 1] directly (no loop-carried value: the loop vectorises 16 wide)."""
    w = u1.shape[1]
    U1, U2, P11, P12, P21, P22, T = u1[r], u2[r], p11[r], p12[r], p21[r], p22[r], terms[r]
    IX, IY, RC = i1wx[r], i1wy[r], rho_c[r]
    n1, n2, t = _u_pixel(U1[0], U2[0], IX[0], IY[0], RC[0],
                         (P11[0] + P12[0]) - q12[0], (P21[0] + P22[0]) - q22[0], l_t, theta)
    U1[0], U2[0], T[0] = n1, n2, t
    acc[0] += t
    for x in range(1, w):  # the padded width: the pad columns are scratch
        d1 = (P11[x] - P11[x - 1]) + (P12[x] - q12[x])
        d2 = (P21[x] - P21[x - 1]) + (P22[x] - q22[x])
        n1, n2, t = _u_pixel(U1[x], U2[x], IX[x], IY[x], RC[x], d1, d2, l_t, theta)
        U1[x], U2[x], T[x] = n1, n2, t
        acc[x] += t


@njit(cache=True, error_model="numpy", inline="always")
def _dual_pixel(p1, p2, ux, uy, taut):
    """p = (p + taut * grad u) / (1 + taut * |grad u|), |grad u| = float(sqrt) of float64 exact squares."""
    g = _F32(math.sqrt(np.float64(ux) * np.float64(ux) + np.float64(uy) * np.float64(uy)))
    ng = g * taut + _F32(1.0)
    return (p1 + ux * taut) / ng, (p2 + uy * taut) / ng


@njit(cache=True, error_model="numpy", inline="always")
def _dual_last(r, x, u1, u2, b1, b2, p11, p12, p21, p22, taut, zero):
    """Column x of row r as the image's last column (forward x-gradient 0) from the p values now stored."""
    p11[r, x], p12[r, x] = _dual_pixel(p11[r, x], p12[r, x], zero, b1[x] - u1[r, x], taut)
    p21[r, x], p22[r, x] = _dual_pixel(p21[r, x], p22[r, x], zero, b2[x] - u2[r, x], taut)


@njit(cache=True, error_model="numpy", inline="always")
def _dual_row(r, w, u1, u2, p11, p12, p21, p22, taut, zrow):
    """Row r: forward gradient of u (rows r and r+1 final; 0 on the last column / row) + dual update.

    The vector loop runs over the padded width but its last column (a multiple of the vector length, no scalar
    remainder). With pad columns, `sweep` has replicated the image's last u column into the first pad column,
    so the last column's x-gradient comes out as OpenCV's 0 (u - u = +0) inside the loop; without them, the
    last column is done apart. The pad columns are scratch that no image column reads."""
    h, wp = u1.shape
    b1 = u1[r + 1] if r < h - 1 else u1[r]
    b2 = u2[r + 1] if r < h - 1 else u2[r]
    for x in range(wp - 1):
        a1, a2 = u1[r, x], u2[r, x]
        u1y, u2y = b1[x] - a1, b2[x] - a2
        p11[r, x], p12[r, x] = _dual_pixel(p11[r, x], p12[r, x], u1[r, x + 1] - a1, u1y, taut)
        p21[r, x], p22[r, x] = _dual_pixel(p21[r, x], p22[r, x], u2[r, x + 1] - a2, u2y, taut)
    if w == wp:
        _dual_last(r, w - 1, u1, u2, b1, b2, p11, p12, p21, p22, taut, zrow[0])


@njit(cache=True, error_model="numpy", pipeline_class=NoAliasPipeline)
def sweep(u1, u2, p11, p12, p21, p22, i1wx, i1wy, rho_c, l_t, theta, taut, terms, acc, zrow, w):
    """One inner iteration in one pass: row r's u update, then row r-1's dual update (its u rows are final and
    row r no longer needs p of row r-1). Returns the float64 sum of the float32 column sums (`acc`, each a serial
    sum over the rows) of the error terms of the image's w columns: see `stopped` for its error bound.

    Planes are (H, padded_width(w)): the loops run over the whole padded row so that they vectorise without a
    scalar remainder; the pad columns (data planes 0 there) compute values that no image column reads."""
    h = u1.shape[0]
    acc[:] = 0.0
    for r in range(h):
        q12 = p12[r - 1] if r > 0 else zrow
        q22 = p22[r - 1] if r > 0 else zrow
        _estimate_u_row(r, u1, u2, p11, p12, p21, p22, q12, q22, i1wx, i1wy, rho_c, l_t, theta, terms, acc)
        if w < u1.shape[1]:  # replicate the last column for `_dual_row`'s x-gradient (u - u = +0, as OpenCV)
            u1[r, w] = u1[r, w - 1]
            u2[r, w] = u2[r, w - 1]
        if r > 0:
            _dual_row(r - 1, w, u1, u2, p11, p12, p21, p22, taut, zrow)
    _dual_row(h - 1, w, u1, u2, p11, p12, p21, p22, taut, zrow)
    total = 0.0
    for x in range(w):
        total += np.float64(acc[x])
    return total


@njit(cache=True, error_model="numpy")
def serial_sum(terms):
    """OpenCV's error: a serial float32 sum of the terms, row-major."""
    acc = _F32(0.0)
    for r in range(terms.shape[0]):
        for x in range(terms.shape[1]):
            acc += terms[r, x]
    return acc


@njit(cache=True, error_model="numpy")
def stopped(estimate, terms, threshold):
    """Is OpenCV's serial float32 sum of `terms` (H, W) <= threshold? Settled by `estimate` (the float64 sum of
    float32 column sums, as `sweep` returns) unless the threshold lies within the bound on how far the two can
    be apart; then the serial sum is taken. Returns (stop, whether the serial sum was needed).

    Bound: any serial float32 sum of k non-negative terms is within g(k) = k u / (1 - k u) (u = 2^-24) of their
    exact sum S, so |serial - S| <= g(n) S and |estimate - S| <= g(H) S (+ the float64 sum, below 2^-40 S);
    with S <= estimate / (1 - g(H)), |serial - estimate| <= (g(n) + g(H)) / (1 - g(H)) estimate, widened by
    0.1 % and by n 2^-149 for subnormal terms."""
    n, h = terms.size, terms.shape[0]
    unit = 2.0**-24
    gn = n * unit / (1.0 - n * unit)
    gh = h * unit / (1.0 - h * unit)
    bound = estimate * ((gn + gh + 2.0**-40) / (1.0 - gh) * 1.001) + n * 2.0**-149
    if estimate - bound > threshold:
        return False, False
    if estimate + bound <= threshold:
        return True, False
    return np.float64(serial_sum(terms)) <= threshold, True


@njit(cache=True, error_model="numpy")
def _copy(src, dst):
    """dst[:, :W] = src for (H, W) src (a plain loop: numba's slice assignment is slower)."""
    for r in range(src.shape[0]):
        for x in range(src.shape[1]):
            dst[r, x] = src[r, x]


@njit(cache=True, error_model="numpy")
def run_warp(u1, u2, p11, p12, p21, p22, i1wx, i1wy, rho_c, consts, limits, med, scratch, w):
    """The inner iterations of one warp: median of u before iterations 0, inner, 2 inner, ... (when on), one
    fused sweep per iteration, OpenCV's stopping rule. consts = float32 [l_t, theta, taut]; limits = float64
    [threshold, max iterations, inner iterations]; med = (sorting network, k), k = 0 for no median.
    Planes are padded to (H, padded_width(w)) as `sweep` needs; the median sees the image's w columns.
    Returns (iterations run, serial sums taken); u1/u2 are updated in place."""
    terms, tmp, acc, zrow, cols = scratch
    network, k = med
    threshold = limits[0]
    max_iter, inner = int(limits[1]), int(limits[2])
    n_serial = 0
    for n in range(max_iter):
        if k > 1 and n % inner == 0:  # on the padded (C-contiguous) planes: tmp is (H, w)
            median_blur(u1, tmp, network, cols)
            _copy(tmp, u1)
            median_blur(u2, tmp, network, cols)
            _copy(tmp, u2)
        s = sweep(u1, u2, p11, p12, p21, p22, i1wx, i1wy, rho_c, consts[0], consts[1], consts[2], terms, acc, zrow,
                  w)
        stop, serial = stopped(s, terms[:, :w], threshold)
        n_serial += serial
        if stop:
            return n + 1, n_serial
    return max_iter, n_serial
