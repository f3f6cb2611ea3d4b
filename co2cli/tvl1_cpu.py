"""Fused CPU TV-L1 ('fused' flow backend): OpenCV's `cv2.optflow.DualTVL1OpticalFlow` (default parameters) bit
for bit on x86-64 with FMA (the build `tests/test_tvl1.py` calls EXACT_BUILD), one pair per call on one core.

The same arithmetic as `tvl1.py` (which documents OpenCV's operation order and the IPP resize model), done in
numba kernels (`tvl1_kernels.py`) that make one pass over memory per inner iteration instead of one per
operation: row r gets estimateV + divergence + the u update, then row r-1 (whose u rows are now final) gets the
forward gradient + the dual update. The stopping rule is OpenCV's serial float32 error sum, settled by a float64
sum and its error bound, and only near the threshold by the serial sum itself. The cubic remap shares its
weights across I1, I1x, I1y; the median sorts each column once per row for the k outputs that use it.

numba compiles the kernels on first use and caches them on disk (numba's `__pycache__` rules), so importing
co2cli never compiles anything. Units as in `tvl1.py`: grey 0..255 in, flow (dx, dy) in pixels out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from co2cli.tvl1_params import TVL1Params, _check, _f32, _oddeven_merge_sort, pyramid_sizes, resize_taps

_F32 = np.float32


@dataclass(frozen=True)
class PairStats:
    """How one pair ran."""

    iterations: np.ndarray
    """(levels, warps) int32: inner iterations per pyramid level (0 = finest) and warp."""
    serial_sums: int
    """Stopping checks settled by the serial float32 sum (the float64 sum was too close to the threshold)."""


def _kernels():  # noqa: ANN202
    """The numba kernels, imported (hence compiled or loaded from numba's cache) on first use only."""
    from co2cli import tvl1_kernels

    return tvl1_kernels


@cache
def median_program(k: int) -> tuple[np.ndarray, int]:
    """A min/max program for the median of a k x k window given its k columns already sorted: Batcher's
    network on the k*k inputs (padded with +inf), with every comparator whose outcome the known order decides
    dropped, then only what the middle output needs kept, ids renumbered densely.

    Returns (program rows (is_max, out, a, b), result id); ids < k*k are inputs, column id // k, rank id % k.
    """
    n = k * k
    columns = [list(range(c * k, c * k + k)) for c in range(k)]
    wire = list(range(n)) + [-1] * ((1 << (n - 1).bit_length()) - n)  # columns packed, -1 = +inf
    prog, (result,) = _pruned_network(columns, wire, (n // 2,))
    return prog, result


def _pruned_network(chains: list[list[int]], wire: list[int], ranks: tuple[int, ...]
                    ) -> tuple[np.ndarray, tuple[int, ...]]:
    """Batcher's odd-even merge sort on `wire` (input ids, -1 = +inf; a power of two long) given that each chain
    of ids is in ascending order: every comparator whose outcome the known order decides is dropped, then only
    what the wanted ranks need is kept, new ids renumbered densely after the inputs.

    Returns (program rows (is_max, out, a, b), the ids holding the ranks)."""
    n = sum(len(ch) for ch in chains)
    below = {i: set(ch[:r + 1]) for ch in chains for r, i in enumerate(ch)}  # id: ids known <= it
    wire = list(wire)
    prog, nxt = [], n
    for i, j in _oddeven_merge_sort(len(wire)):
        a, b = wire[i], wire[j]
        if b == -1 or (a != -1 and a in below[b]):
            continue  # already in order
        if a == -1 or b in below[a]:
            wire[i], wire[j] = b, a
            continue
        lo, hi = nxt, nxt + 1
        nxt += 2
        below[lo] = (below[a] & below[b]) | {lo}
        below[hi] = below[a] | below[b] | {lo, hi}
        for z, known in below.items():  # whatever is >= a or >= b is >= their min
            if z not in (lo, hi) and (a in known or b in known):
                known.add(lo)
        prog += [(0, lo, a, b), (1, hi, a, b)]
        wire[i], wire[j] = lo, hi
    need, kept = {wire[r] for r in ranks}, []
    for ins in reversed(prog):
        if ins[1] in need:
            kept.append(ins)
            need.update(ins[2:])
    dense = {old: n + i for i, old in enumerate(ins[1] for ins in reversed(kept))}
    rows = [(m, dense[o], dense.get(a, a), dense.get(b, b)) for m, o, a, b in reversed(kept)]
    return np.array(rows, dtype=np.int64).reshape(-1, 4), tuple(dense.get(wire[r], wire[r]) for r in ranks)


@cache
def merge_program(lengths: tuple[int, ...], ranks: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """A min/max program for the given ranks (0 = smallest) of the union of sorted chains of `lengths`: Batcher's
    network with each chain in its own power-of-two block (padded with +inf), every comparator whose outcome the
    known order decides dropped, then only what the wanted ranks need kept, ids renumbered densely.

    Returns (program rows (is_max, out, a, b), the ids of the ranks); ids < sum(lengths) are the inputs, chain
    by chain, each in ascending order."""
    block = 1 << (max(lengths) - 1).bit_length()
    ids = np.cumsum((0, *lengths)).tolist()
    chains = [list(range(ids[c], ids[c + 1])) for c in range(len(lengths))]
    wire = [x for ch in chains for x in ch + [-1] * (block - len(ch))]  # -1 = +inf
    wire += [-1] * ((1 << (len(wire) - 1).bit_length()) - len(wire))
    return _pruned_network(chains, wire, ranks)


_MEDIAN5_STAGES = {
    # name: (inputs as (array, column offset) per chain, chain length, ranks kept, output array, doc)
    "median5_pairs": (("cols", 0), ("cols", 1), 5, tuple(range(10)), "pairs",
                      "pairs[:, y] = the sorted merge of the sorted columns y and y + 1"),
    "median5_quads": (("pairs", 0), ("pairs", 2), 10, tuple(range(7, 13)), "quads",
                      "quads[:, y] = ranks 7..12 of the sorted merge of columns y..y + 3"),
}
"""The 5x5 median from sorted columns, sharing work between neighbouring outputs: a merged pair of columns
serves two windows, and window x = quads(x) + column x + 4, whose median (rank 12 of 25) is
min(q12, max(q11, c0), max(q10, c1), ..., max(q7, c4)) for q ranks of the quad, c the sorted column."""


def median5_source(name: str) -> str:
    """Python source of a `tvl1_kernels` 5x5 median stage (`_MEDIAN5_STAGES`) as straight-line min/max code, so
    numba keeps every value in vector registers; pasted there (numba caches only functions in files), a test
    checks the copy."""
    (src_a, off_a), (src_b, off_b), length, ranks, out, doc = _MEDIAN5_STAGES[name]
    prog, result = merge_program((length, length), ranks)
    used = sorted({i for row in prog for i in row[2:] if i < 2 * length} | {i for i in result if i < 2 * length})
    lines = [f"def {name}({src_a}, {out}):  # generated by tvl1_cpu.median5_source",
             f'    """{doc}."""',
             f"    for y in range({out}.shape[1]):"]
    for i in used:
        arr, off = (src_a, off_a) if i < length else (src_b, off_b)
        lines.append(f"        v{i} = {arr}[{i % length}, y{f' + {off}' if off else ''}]")
    for is_max, o, a, b in prog:
        lines.append(f"        v{o} = v{b} if v{a} < v{b} else v{a}" if is_max else
                     f"        v{o} = v{a} if v{a} < v{b} else v{b}")
    lines += [f"        {out}[{k}, y] = v{r}" for k, r in enumerate(result)]
    return "\n".join(lines) + "\n"


_SORT_NETWORKS = {3: [(0, 1), (1, 2), (0, 1)],
                  5: [(0, 1), (3, 4), (2, 4), (2, 3), (1, 4), (0, 3), (0, 2), (1, 3), (1, 2)]}
"""Optimal sorting networks (comparators i < j: min to i) for the k-tall columns of the median window."""


def median_source(k: int) -> str:
    """Python source of `tvl1_kernels.median{k}_rows`: the k x k median of one output row as straight-line
    min/max code over k sorted columns (so numba keeps every value in vector registers). It is generated here
    and pasted into tvl1_kernels.py (numba caches only functions defined in files); a test checks the copy.
    The kernels use it for k = 3; the 5x5 median shares merges between windows instead (`median5_source`)."""
    prog, result = median_program(k)
    used = sorted({i for row in prog for i in row[2:] if i < k * k})
    lines = [f"def median{k}_rows(cols, out, r):  # generated by tvl1_cpu.median_source",
             f'    """Row r of the {k}x{k} median: cols = ({k}, W + {k - 1}) sorted columns of the padded row."""',
             "    for x in range(out.shape[1]):"]
    lines += [f"        v{i} = cols[{i % k}, x + {i // k}]" for i in used]
    for is_max, o, a, b in prog:
        lines.append(f"        v{o} = v{b} if v{a} < v{b} else v{a}" if is_max else
                     f"        v{o} = v{a} if v{a} < v{b} else v{b}")
    lines.append(f"        out[r, x] = v{result}")
    return "\n".join(lines) + "\n"


def resize(img: np.ndarray, size: tuple[int, int] | None = None, scale: float | None = None,
           backend: str = "ipp") -> np.ndarray:
    """`cv2.resize(img, ..., INTER_LINEAR)` of a float32 (H, W) image: to `size` (height, width) px, or by
    `scale` on both axes (OpenCV's Size() + fx = fy call), as `tvl1.resize_linear` computes it."""
    taps = resize_taps(img.shape, size, scale, scale, backend)  # type: ignore[arg-type]
    if taps is None:
        return img.copy()
    (xl, xr, xf), (yt, yb, yf) = taps
    k = _kernels()
    ipp = backend == "ipp"
    rows = k.lerp_cols(img, xl, xr, xf, ipp, np.empty((img.shape[0], len(xf)), _F32))
    return k.lerp_rows(rows, yt, yb, yf, ipp, np.empty((len(yf), len(xf)), _F32))


def median_blur(u: np.ndarray, ksize: int) -> np.ndarray:
    """`cv2.medianBlur(u, ksize)` of float32 (H, W), ksize 3 or 5 (exact median, replicated border)."""
    u = np.ascontiguousarray(u, dtype=_F32)
    out = np.empty_like(u)
    _kernels().median_blur(u, out, _network(ksize), _median_scratch(u.shape[1], ksize))
    return out


def _network(ksize: int) -> np.ndarray:
    return np.array(_SORT_NETWORKS[ksize], np.int64)


def _median_scratch(width: int, ksize: int) -> np.ndarray:
    return np.empty((ksize, width + ksize - 1), _F32)


def _sweep_planes(h: int, wp: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The sweep's ten (h, wp) float32 planes, zeroed: u1, u2; p11, p12, p21, p22; i1wx, i1wy, rho_c; terms. Cut
    from one buffer with each plane starting 5 cache lines further into a 4 KB page than the one before, so the
    sweep's parallel row streams do not all fall on the same offset within a page (measured ~5 % faster on the
    whole-frame level, 256 x 353 planes)."""
    size = h * wp
    step = -(-size // 1024) * 1024 + 5 * 16  # floats: whole 4 KB pages, then 5 lines of 64 bytes
    buf = np.zeros(10 * step + 16, _F32)
    first = (-buf.ctypes.data % 64) // 4  # 64-byte aligned start
    planes = [buf[first + i * step:first + i * step + size].reshape(h, wp) for i in range(10)]
    return planes[0:2], planes[2:6], planes[6:9], planes[9]


def _solve_level(i0: np.ndarray, i1: np.ndarray, u1: np.ndarray, u2: np.ndarray, params: TVL1Params,
                 iterations: np.ndarray) -> int:
    """procOneScale: refines u1, u2 (px) in place, fills iterations (warps,); returns the serial sums taken."""
    k = _kernels()
    h, w = i0.shape
    fr = k.REMAP_FRAME
    src = np.zeros((h + 2 * fr, w + 2 * fr, 4), _F32)  # I1, I1x, I1y interleaved, in a zero frame
    i1x, i1y = np.empty_like(i1), np.empty_like(i1)
    k.centered_gradient(i1, i1x, i1y)
    for c, plane in enumerate((i1, i1x, i1y)):
        src[fr:-fr, fr:-fr, c] = plane
    wp = k.padded_width(w)
    uu, p, warped, terms = _sweep_planes(h, wp)
    uu[0][:, :w], uu[1][:, :w] = u1, u2
    consts = np.array([_f32(params.lambda_ * params.theta), _f32(params.theta), _f32(params.tau / params.theta)],
                      _F32)
    limits = np.array([_f32(params.epsilon * params.epsilon * h * w),
                       params.outer_iterations * params.inner_iterations, params.inner_iterations], np.float64)
    ksize = params.median_filtering if params.median_filtering > 1 else 0
    med = (_network(ksize), ksize) if ksize else (np.zeros((0, 2), np.int64), 0)
    scratch = (terms, np.empty_like(i0), np.empty(wp, _F32), np.zeros(wp, _F32),
               _median_scratch(w, max(ksize, 1)))
    serial = 0
    for warp in range(params.warps):
        k.warp_data(i0, src, *uu, *warped)
        n, n_serial = k.run_warp(*uu, *p, *warped, consts, limits, med, scratch, w)
        iterations[warp] = n
        serial += n_serial
    u1[:], u2[:] = uu[0][:, :w], uu[1][:, :w]
    return serial


def _as_intensity(img: np.ndarray) -> np.ndarray:
    if img.dtype not in (np.uint8, np.float32):
        raise TypeError(f"frames must be uint8 or float32 (0..255), got {img.dtype}")
    return np.ascontiguousarray(img, dtype=_F32)


def tvl1_flow_fused(prev: np.ndarray, nxt: np.ndarray, params: TVL1Params = TVL1Params(),
                    return_stats: bool = False) -> np.ndarray | tuple[np.ndarray, PairStats]:
    """TV-L1 flow (H, W, 2) float32 in px, channel 0 = dx, from grey (H, W) uint8 or float32 0..255 frames;
    equal to `DualTVL1OpticalFlow_create().calc(prev, nxt, None)` (see module doc). Single-threaded."""
    if prev.shape != nxt.shape or prev.ndim != 2:
        raise ValueError(f"prev and nxt must both be (H, W), got {prev.shape} and {nxt.shape}")
    h, w = prev.shape
    _check(params, h, w)
    sizes = pyramid_sizes(h, w, params)
    i0s, i1s = [_as_intensity(prev)], [_as_intensity(nxt)]
    for _ in sizes[1:]:
        i0s.append(resize(i0s[-1], scale=params.scale_step, backend=params.resize_backend))
        i1s.append(resize(i1s[-1], scale=params.scale_step, backend=params.resize_backend))
    iterations = np.zeros((len(sizes), params.warps), np.int32)
    u1 = np.zeros(sizes[-1], _F32)
    u2 = np.zeros(sizes[-1], _F32)
    up = _F32(1.0 / params.scale_step)
    serial = 0
    for level in range(len(sizes) - 1, -1, -1):
        serial += _solve_level(i0s[level], i1s[level], u1, u2, params, iterations[level])
        if level:
            u1 = resize(u1, sizes[level - 1], backend=params.resize_backend) * up
            u2 = resize(u2, sizes[level - 1], backend=params.resize_backend) * up
    flow = np.stack([u1, u2], axis=-1)
    return (flow, PairStats(iterations, serial)) if return_stats else flow
