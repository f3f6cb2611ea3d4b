"""TV-L1 flow speed, side by side in one run: OpenCV in 1 process, OpenCV on every core, torch on the CPU, torch on
CUDA (when present), at both flow regions (the 224 crop and the whole 256-short-side frame); then OpenCV vs the
fused CPU backend per core (one process per core for both, rounds interleaved so that load from other users of
the machine hits both alike; the median round counts); then the whole two-stream extraction per minute of video.

    .venv/bin/python bench/bench_flow.py [--pairs 8] [--batch 8] [--rounds 3] [--video PATH] [--skip-pipeline]
                                         [--json OUT]

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
from co2cli.timebase import FPS

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


def bench_pipeline(path: Path) -> list[dict]:
    """Whole two-stream extraction of the clip, per minute of video, for each flow setting."""
    import torch

    from co2cli import checkpoints, weights
    from co2cli.extract import FeatureExtractor
    from co2cli.i3d import InceptionI3d

    try:
        rgb = checkpoints.read_state_dict(weights.resolve("i3d-rgb"))
    except Exception as exc:  # noqa: BLE001 - a bench prints and moves on
        print(f"whole pipeline skipped: {exc}")
        return []
    try:
        flow_sd = checkpoints.read_state_dict(weights.resolve("i3d-flow"))
    except Exception:  # noqa: BLE001 - speed only: same shapes, random values
        torch.manual_seed(0)
        flow_sd = InceptionI3d(400, 2).state_dict()
        print("  (i3d-flow not installed: a random-weight flow I3D of the same shape is used, for speed only)")
    seconds_of_video = float(video.probe(path).duration_s or 0)
    out = []
    for backend, region in (("opencv", "crop"), ("opencv", "frame"), ("torch", "frame")):
        if backend == "torch" and not torch.cuda.is_available():
            device = "cpu"
        else:
            device = "auto"
        try:
            store = {"rgb": rgb, "flow": flow_sd}
            extractor = _extractor(store, device, backend, region)
        except Exception as exc:  # noqa: BLE001
            print(f"  {backend}/{region}: {exc}")
            continue
        seconds, extracted = timed(lambda: extractor.extract(path))
        per_minute = seconds / seconds_of_video * 60
        print(f"  two-stream {backend:>6}/{region:<5} on {extractor.device.type}: {seconds:7.1f} s for "
              f"{seconds_of_video:.1f} s of video = {per_minute:8.1f} s per minute ({60 / per_minute:.3f}x real time)")
        out.append({"name": f"pipeline {backend}/{region}", "device": extractor.device.type,
                    "s_per_minute": per_minute})
    return out


def _extractor(store: dict, device: str, backend: str, region: str):  # noqa: ANN202
    """A FeatureExtractor on given state dicts (bypassing the store's flow-weight requirement)."""
    from co2cli import checkpoints
    from co2cli.devices import pick_device
    from co2cli.extract import FeatureExtractor

    extractor = FeatureExtractor.__new__(FeatureExtractor)
    FeatureExtractor.__init__(extractor, ("rgb",), device, flow_backend=backend, flow_region=region,
                              state_dicts={"rgb": store["rgb"]})
    extractor.streams = ("rgb", "flow")
    extractor.models["flow"] = checkpoints.load_i3d(store["flow"], 2, pick_device(device))
    return extractor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the per-core rows")
    parser.add_argument("--skip-torch", action="store_true", help="only the OpenCV vs fused per-core rows")
    parser.add_argument("--video", type=Path, default=SAMPLES / "v_GGSY1Qvo990.mp4")
    parser.add_argument("--pipeline-video", type=Path, default=None, help="clip for the whole-pipeline rows")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    print(f"OpenCV {cv2.__version__}, PyAV {av.__version__}, {os.cpu_count()} CPUs "
          f"({flow.default_workers()} usable)")
    results = []
    for region in ("crop", "frame"):
        if not args.skip_torch:
            results += bench_region(args.video, region, args.pairs, args.batch)
        else:
            print(f"{args.video.name}, region {region}, {args.pairs} pairs")
        results += per_core_rows(args.video, region, args.pairs, args.rounds)
    if not args.skip_pipeline:
        results += bench_pipeline(args.pipeline_video or args.video)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
