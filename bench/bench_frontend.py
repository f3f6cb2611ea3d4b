"""Front-end speed on CPU: decode + 25 fps resample + resize/crop, and TV-L1 flow, on the sample clips.

    .venv/bin/python bench/bench_frontend.py [--flow-frames 50] [--workers 2] [videos ...]

Prints frames per second and seconds per minute of 25 fps video (1500 frames) for each stage, and our flow path
next to OpenCV's TV-L1 called directly on the same frames. Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from co2cli import flow, video

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
FRAMES_PER_MINUTE = 60 * video.FPS


def per_minute(frames: int, seconds: float) -> str:
    fps = frames / seconds
    return f"{fps:8.1f} frames/s  {FRAMES_PER_MINUTE / fps:8.1f} s per minute of 25 fps video"


def bench_decode(path: Path) -> video.Frames:
    """Decode the whole clip (best of 3 runs); return its first chunk for flow."""
    best = float("inf")
    for _ in range(3):
        reader = video.VideoReader(path)
        start = time.perf_counter()
        chunks = list(reader.chunks(drop_remainder=False))
        best = min(best, time.perf_counter() - start)
    info = reader.info
    print(f"{path.name}: {info.width}x{info.height} {info.source_fps:.2f} fps, {reader.frames_decoded} decoded -> "
          f"{reader.frames_total} frames at 25 fps")
    print(f"  decode+resample+resize/crop+gray : {per_minute(reader.frames_total, best)}")
    return video.concat(chunks)


def bench_flow(gray: np.ndarray, workers: int) -> None:
    """Our path vs cv2's TV-L1 called directly (same frames, same default-parameter object)."""
    n = len(gray)
    start = time.perf_counter()
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    direct = [tvl1.calc(gray[i], gray[i + 1], None) for i in range(n - 1)]
    direct_s = time.perf_counter() - start

    start = time.perf_counter()
    ours = flow.compute_flow(gray)
    ours_s = time.perf_counter() - start
    same = all(np.array_equal(ours[i], flow.scale_flow(direct[i])) for i in range(n - 1))
    print(f"  TV-L1 direct cv2 ({cv2.getNumThreads()} threads) : {per_minute(n - 1, direct_s)}")
    print(f"  TV-L1 co2cli.flow (workers=1)    : {per_minute(n, ours_s)}   ours/direct time per field "
          f"{(ours_s / n) / (direct_s / (n - 1)):.3f}, identical: {same}")
    if workers > 1:
        start = time.perf_counter()
        parallel = flow.compute_flow(gray, workers=workers)
        par_s = time.perf_counter() - start
        print(f"  TV-L1 co2cli.flow (workers={workers})    : {per_minute(n, par_s)}   vs direct "
              f"{(par_s / n) / (direct_s / (n - 1)):.3f}, identical: {np.array_equal(parallel, ours)}"
              " (includes starting the processes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--flow-frames", type=int, default=50, help="frames of flow per clip (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="also time this many flow processes (1 = skip)")
    args = parser.parse_args()
    videos = args.videos or sorted(SAMPLES.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos given and no samples in {SAMPLES}")
    print(f"CPU cores: {os.cpu_count()}, OpenCV {cv2.__version__}, flow on {video.CROP}x{video.CROP} crops")
    for path in videos:
        frames = bench_decode(path)
        bench_flow(frames.gray[:args.flow_frames], args.workers)


if __name__ == "__main__":
    main()
