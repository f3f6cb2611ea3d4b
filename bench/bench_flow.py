"""TV-L1 flow speed, side by side in one run: OpenCV in 1 process, OpenCV on every core, torch on the CPU, torch on
CUDA (when present), at both flow regions (the 224 crop and the whole 256-short-side frame); then OpenCV vs the
fused CPU backend per core (one process per core for both, rounds interleaved so that load from other users of
the machine hits both alike; the median round counts); then the whole two-stream extraction per minute of video.

    .venv/bin/python bench/bench_flow.py [--pairs 8] [--batch 8] [--rounds 3] [--video PATH] [--skip-pipeline]
                                         [--pipeline-rounds N] [--pipeline-only new] [--json OUT]

Prints frame pairs per second and seconds per minute of 25 fps video (1500 fields) for each row, with ratios to
OpenCV in one process, and the torch backend's end-point error against OpenCV on the same pairs. Asserts nothing
about time. The whole-pipeline row needs the i3d-rgb weights installed and uses a random-weight flow I3D of the
same shape when i3d-flow is not installed (speed only).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np

from co2cli import flow, video
from co2cli.timebase import FPS, SNIPPET_FRAMES

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
FIELDS_PER_MINUTE = 60 * FPS


def gray_frames(path: Path, count: int, region: str, start: int = 100) -> np.ndarray:
    """`count` consecutive 25 fps grayscale frames from frame `start` on (into the action, where TV-L1 works
    hardest): 224 crops or whole 256-short-side frames."""
    frames = video.concat(video.VideoReader(path).chunks(128, drop_remainder=False, whole_frame_gray=True))
    gray = frames.gray if region == "crop" else frames.gray_frame
    return np.ascontiguousarray(gray[start:start + count])


def timed(fn) -> tuple[float, object]:  # noqa: ANN001
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def opencv_direct(gray: np.ndarray) -> list[np.ndarray]:
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return [tvl1.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)]


def row(name: str, pairs: int, seconds: float, base: float | None, extra: str = "") -> dict:
    rate = pairs / seconds
    ratio = f"{base / seconds:6.2f}x" if base else "  1.00x"
    print(f"  {name:<38} {rate:8.2f} pairs/s  {FIELDS_PER_MINUTE / rate:9.1f} s per minute  {ratio}  {extra}")
    return {"name": name, "pairs_per_s": rate, "s_per_minute": FIELDS_PER_MINUTE / rate}


def epe(a: list[np.ndarray], b: np.ndarray) -> str:
    errors = [np.linalg.norm(x - y, axis=-1) for x, y in zip(a, b)]
    worst_mean = max(float(e.mean()) for e in errors)
    worst_p99 = max(float(np.percentile(e, 99)) for e in errors)
    return f"EPE mean {worst_mean:.4f} px, p99 {worst_p99:.3f} px (worst pair)"


def bench_region(path: Path, region: str, pairs: int, batch: int) -> list[dict]:
    import torch

    from co2cli.tvl1 import tvl1_flow_numpy

    gray = gray_frames(path, pairs + 1, region)
    h, w = gray.shape[1:]
    print(f"{path.name}, region {region} ({w}x{h}), {pairs} pairs")
    out = []
    base, reference = timed(lambda: opencv_direct(gray))
    out.append(row("OpenCV, 1 process", pairs, base, None))
    workers = flow.default_workers()
    flow.compute_flow(gray[:workers + 1], workers=workers)  # warm-up; each call starts its pool
    seconds, _ = timed(lambda: flow.compute_flow(gray, workers=workers))
    out.append(row(f"OpenCV, {workers} processes", pairs, seconds, base))
    prev, nxt = gray[:-1], gray[1:]
    seconds, ours = timed(lambda: tvl1_flow_numpy(prev, nxt, device="cpu", batch_size=batch))
    out.append(row(f"torch CPU ({torch.get_num_threads()} threads)", pairs, seconds, base, epe(reference, ours)))
    if torch.cuda.is_available():
        tvl1_flow_numpy(prev[:2], nxt[:2], device="cuda", batch_size=batch)  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        seconds, ours = timed(lambda: tvl1_flow_numpy(prev, nxt, device="cuda", batch_size=batch))
        out.append(row("torch CUDA", pairs, seconds, base, epe(reference, ours)))
    else:
        print("  torch CUDA                   (no CUDA device here)")
    return [r | {"region": region} for r in out]


def _timed_pair(prev: np.ndarray, nxt: np.ndarray) -> tuple[np.ndarray, float]:
    """A pool worker's field and the CPU seconds its thread spent on it (other users' load barely moves it)."""
    start = time.thread_time()
    field = flow._worker_pair(prev, nxt)
    return field, time.thread_time() - start


def per_core_rows(path: Path, region: str, pairs: int, rounds: int) -> list[dict]:
    """OpenCV vs fused, pairs per second per core, one process per core for both (warm pools: the fused
    kernels are loaded once per process), rounds interleaved in alternating order. Two figures per backend:
    wall clock x processes (median round), and the workers' own CPU seconds (robust on a shared machine).
    Also checks the fields are bit-identical."""
    gray = gray_frames(path, pairs + 1, region)
    workers = flow.default_workers()
    prev, nxt = list(gray[:-1]), list(gray[1:])
    spawn = multiprocessing.get_context("spawn")
    pools = {b: ProcessPoolExecutor(workers, mp_context=spawn, initializer=flow._init_worker, initargs=(b,))
             for b in ("opencv", "fused")}
    wall: dict[str, list[float]] = {b: [] for b in pools}
    cpu: dict[str, list[float]] = {b: [] for b in pools}
    fields: dict[str, list[np.ndarray]] = {}
    try:
        for pool in pools.values():  # warm-up: spawn, imports, the fused kernels' cache
            list(pool.map(_timed_pair, prev[:workers], nxt[:workers]))
        for r in range(rounds):
            for b in (("opencv", "fused") if r % 2 == 0 else ("fused", "opencv")):
                seconds, done = timed(lambda b=b: list(pools[b].map(_timed_pair, prev, nxt)))
                wall[b].append(seconds * workers)  # core-seconds for `pairs` pairs
                cpu[b].append(sum(c for _, c in done))
                fields[b] = [f for f, _ in done]
    finally:
        for pool in pools.values():
            pool.shutdown()
    same = all(np.array_equal(a, b) for a, b in zip(fields["opencv"], fields["fused"]))
    print(f"  per core: {workers} processes each, {rounds} interleaved rounds; fields bit-identical: {same}")
    out = []
    for label, figures in (("wall x processes", wall), ("CPU time", cpu)):
        base = statistics.median(figures["opencv"])
        out.append(row(f"OpenCV, per core ({label})", pairs, base, None))
        out.append(row(f"fused, per core ({label})", pairs, statistics.median(figures["fused"]), base))
    return [r | {"region": region, "per_core": True, "bit_identical": same} for r in out]


PIPELINE_CONFIGS = {
    # name: (flow backend, I3D threads (None: torch's default, as before), I3D precision, overlap)
    "old: opencv, I3D torch-default threads": ("opencv", 0, "fp32", True),
    "new: fused, I3D threads = CPUs - flow workers": ("fused", None, "fp32", True),  # torch threads - workers
    "new, sequential (no overlap)": ("fused", None, "fp32", False),
    "new, bf16": ("fused", None, "bf16", True),
}


def pipeline_once(path: Path, name: str, cpus: int, chunk_snippets: int) -> dict:
    """One whole two-stream extraction (frame region) in a fresh subprocess pinned to `cpus` CPUs: its wall time,
    CPU seconds (itself and its reaped flow workers) and a digest of the features."""
    import subprocess
    import sys

    pinned = sorted(os.sched_getaffinity(0))[:cpus]
    code = ("import sys, json; sys.path.insert(0, %r); from bench_flow import pipeline_child; "
            "print(json.dumps(pipeline_child(%r, %r, %d)))"
            % (str(Path(__file__).parent), str(path), name, chunk_snippets))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, pinned))
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pipeline_child(path: str, name: str, chunk_snippets: int) -> dict:
    """In the pinned subprocess: build the extractor, extract once, report wall and CPU seconds (self + workers)."""
    import hashlib
    import resource

    import torch

    backend, threads, precision, overlap = PIPELINE_CONFIGS[name]
    extractor = _extractor(backend, precision, overlap)
    extractor.chunk_frames = SNIPPET_FRAMES * chunk_snippets  # short clips: several chunks, as a long video has
    if threads == 0:  # the old settings: torch's own thread count while flow workers run beside it
        extractor.i3d_threads = torch.get_num_threads()
    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    features = extractor.extract(path).features
    wall = time.perf_counter() - start
    after, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) + kids.ru_utime + kids.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "i3d_threads": extractor.i3d_threads,
            "flow_workers": extractor.flow_workers, "sha256": hashlib.sha256(features.tobytes()).hexdigest()[:16]}


def _extractor(backend: str, precision: str, overlap: bool):  # noqa: ANN202
    """A FeatureExtractor with the installed RGB I3D and, when i3d-flow is not installed, a random-weight flow
    I3D of the same shape (speed only)."""
    import torch

    from co2cli import checkpoints, weights
    from co2cli.devices import pick_device
    from co2cli.extract import FeatureExtractor
    from co2cli.i3d import InceptionI3d

    extractor = FeatureExtractor(("rgb",), "cpu", flow_backend=backend, flow_region="frame",
                                 precision=precision, overlap=overlap)
    extractor.streams = ("rgb", "flow")
    extractor.i3d_threads = extractor._default_i3d_threads()  # now that flow is in the streams
    try:
        flow_sd = checkpoints.read_state_dict(weights.resolve("i3d-flow"))
    except Exception:  # noqa: BLE001 - speed only: same shapes, random values
        torch.manual_seed(0)
        flow_sd = InceptionI3d(400, 2).state_dict()
    extractor.models["flow"] = checkpoints.load_i3d(flow_sd, 2, pick_device("cpu"))
    return extractor


def bench_pipeline(path: Path, rounds: int, chunk_snippets: int, only: str = "") -> list[dict]:
    """Whole two-stream extraction (frame region) per minute of video: old vs new settings, on 1 CPU and on all,
    each run a fresh pinned subprocess, runs interleaved in alternating order; medians of wall and CPU seconds.
    `only`: comma-separated words; settings whose name contains none of them are left out (the old setting
    takes ~10x the others: leave it out to repeat the new ones)."""
    from co2cli import weights

    try:
        weights.resolve("i3d-rgb")
    except Exception as exc:  # noqa: BLE001 - a bench prints and moves on
        print(f"whole pipeline skipped: {exc}")
        return []
    seconds_of_video = float(video.probe(path).duration_s or 0)
    cores = flow.default_workers()
    words = [w for w in only.split(",") if w]
    runs = [(name, cpus) for cpus in sorted({1, cores}) for name in PIPELINE_CONFIGS
            if (cpus == cores or "sequential" not in name) and (not words or any(w in name for w in words))]
    got: dict[tuple[str, int], list[dict]] = {run: [] for run in runs}
    for r in range(rounds):
        for run in (runs if r % 2 == 0 else runs[::-1]):
            got[run].append(pipeline_once(path, *run, chunk_snippets))
            print(f"    round {r + 1} {run[0]} on {run[1]} CPU(s): {got[run][-1]['wall_s']:.1f} s wall, "
                  f"{got[run][-1]['cpu_s']:.1f} CPU s", flush=True)
    return _pipeline_rows(got, seconds_of_video, path)


def _pipeline_rows(got: dict, seconds_of_video: float, path: Path) -> list[dict]:
    per_minute = 60 / seconds_of_video
    print(f"  whole two-stream pipeline, frame region, {path.name} ({seconds_of_video:.1f} s of video), "
          "per minute of video (median of rounds):")
    print(f"  {'setting':<48} {'CPUs':>4} {'I3D thr':>7} {'wall s/min':>11} {'CPU s/min':>10} {'vs old':>7}  features")
    digests = {v["sha256"] for (name, _), runs in got.items() if "bf16" not in name for v in runs}
    out = []
    for (name, cpus), runs in got.items():
        wall = statistics.median(v["wall_s"] for v in runs) * per_minute
        cpu = statistics.median(v["cpu_s"] for v in runs) * per_minute
        old = got.get((next(iter(PIPELINE_CONFIGS)), cpus))
        ratio = f"{statistics.median(v['wall_s'] for v in old) * per_minute / wall:6.2f}x" if old else "    - "
        print(f"  {name:<48} {cpus:>4} {runs[0]['i3d_threads']:>7} {wall:11.1f} {cpu:10.1f} {ratio}  "
              f"{runs[0]['sha256']}")
        out.append({"name": f"pipeline {name}", "cpus": cpus, "s_per_minute": wall, "cpu_s_per_minute": cpu,
                    "sha256": runs[0]["sha256"]})
    print(f"  fp32 features identical across old/new/sequential and 1/{max(c for _, c in got)} CPUs: "
          f"{len(digests) == 1}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the per-core rows")
    parser.add_argument("--skip-torch", action="store_true", help="only the OpenCV vs fused per-core rows")
    parser.add_argument("--video", type=Path, default=SAMPLES / "v_GGSY1Qvo990.mp4")
    parser.add_argument("--pipeline-video", type=Path, default=None, help="clip for the whole-pipeline rows")
    parser.add_argument("--pipeline-rounds", type=int, default=1, help="interleaved rounds of the pipeline rows")
    parser.add_argument("--pipeline-only", default="",
                        help="comma-separated words: only the pipeline settings whose name has one (e.g. new)")
    parser.add_argument("--pipeline-chunk-snippets", type=int, default=8,
                        help="snippets per chunk in the pipeline rows (smaller: a short clip still overlaps)")
    parser.add_argument("--skip-flow", action="store_true", help="only the whole-pipeline rows")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    print(f"OpenCV {cv2.__version__}, PyAV {av.__version__}, {os.cpu_count()} CPUs "
          f"({flow.default_workers()} usable)")
    results = []
    for region in () if args.skip_flow else ("crop", "frame"):
        if not args.skip_torch:
            results += bench_region(args.video, region, args.pairs, args.batch)
        else:
            print(f"{args.video.name}, region {region}, {args.pairs} pairs")
        results += per_core_rows(args.video, region, args.pairs, args.rounds)
    if not args.skip_pipeline:
        results += bench_pipeline(args.pipeline_video or args.video, args.pipeline_rounds,
                                  args.pipeline_chunk_snippets, args.pipeline_only)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
