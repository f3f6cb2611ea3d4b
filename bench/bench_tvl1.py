"""TV-L1 speed: OpenCV's CPU DualTVL1 (one pair at a time) vs co2cli.tvl1 (a batch of pairs), per 224x224 pair.

Pairs are consecutive 224x224 grey crops of a sample clip (real motion). Prints wall and process-CPU seconds per
pair (CPU seconds stay meaningful on a machine shared with other jobs; wall seconds do not) and checks that the
two flows agree. One run each: TV-L1 takes seconds per pair on a CPU.

    .venv/bin/python bench/bench_tvl1.py                         # batch 8 on the CPU, 1 torch thread
    .venv/bin/python bench/bench_tvl1.py --device cuda --batch 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from co2cli.tvl1 import tvl1_flow
from co2cli.video import read_video

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "v_ZNVhz7ctTq0.mp4"


def timed(fn, sync=lambda: None) -> tuple[object, float, float]:
    """Result, wall seconds, process-CPU seconds of fn()."""
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    return out, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--batch", type=int, default=8, help="pairs per tvl1_flow call (and pairs timed)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1)")
    ap.add_argument("--opencv-pairs", type=int, default=None, help="pairs to time OpenCV on (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    gray = read_video(args.clip).gray[1:args.batch + 2]
    prev, nxt = gray[:-1], gray[1:]
    n_cv = args.batch if args.opencv_pairs is None else min(args.opencv_pairs, args.batch)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    refs, cv_wall, cv_cpu = timed(lambda: [tvl1.calc(prev[i], nxt[i], None) for i in range(n_cv)])

    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    a, b = torch.from_numpy(prev).to(dev), torch.from_numpy(nxt).to(dev)
    if dev.type == "cuda":  # warm-up (kernel loading) on two pairs
        tvl1_flow(a[:2], b[:2])
        sync()
    flow, wall, cpu = timed(lambda: tvl1_flow(a, b), sync)
    flow = flow.cpu().numpy()
    identical = float(np.mean([np.array_equal(flow[i], refs[i]) for i in range(n_cv)]))
    epe = max(float(np.sqrt(((flow[i] - refs[i]) ** 2).sum(-1)).mean()) for i in range(n_cv))
    result = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "opencv": cv2.__version__,
        "device": str(dev), "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
        "batch": args.batch,
        "opencv_s_per_pair": {"wall": cv_wall / n_cv, "cpu": cv_cpu / n_cv},
        "tvl1_s_per_pair": {"wall": wall / args.batch, "cpu": cpu / args.batch},
        "pairs_bit_identical_to_opencv": identical, "worst_mean_epe_px": epe,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
