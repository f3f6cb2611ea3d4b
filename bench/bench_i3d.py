"""I3D inference throughput: frames/s, snippets/s and seconds per minute of 25 fps video, RGB and flow streams.

Weights are RANDOM (timing does not depend on their values), so this needs no installed weights. One snippet is
16 frames of 224x224; a minute of 25 fps video is 1500 frames = 93 whole snippets per stream.

    .venv/bin/python bench/bench_i3d.py                       # CPU, all cores torch sees, batch 1 and 4
    .venv/bin/python bench/bench_i3d.py --threads 1 --repeats 5 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from co2cli.i3d import SNIPPET_FRAMES, InceptionI3d, disable_tf32

FPS = 25
SNIPPETS_PER_MINUTE = (60 * FPS) // SNIPPET_FRAMES  # 93


def time_batches(model: InceptionI3d, x: torch.Tensor, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of `repeats` forward passes after one warm-up (oneDNN/cuDNN pick kernels on
    the first call). CPU seconds stay meaningful on a machine shared with other jobs; wall seconds do not."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    wall, cpu = [], []
    with torch.inference_mode():
        model.features_and_logits(x)
        sync()
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            model.features_and_logits(x)
            sync()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def bench(channels: int, batch: int, repeats: int, device: torch.device, memory_format: str) -> dict:
    torch.manual_seed(0)
    fmt = torch.channels_last_3d if memory_format == "channels_last" else torch.contiguous_format
    model = InceptionI3d(400, in_channels=channels).to(device).eval().to(memory_format=fmt)
    x = (torch.rand(batch, channels, SNIPPET_FRAMES, 224, 224, device=device) * 2 - 1).contiguous(memory_format=fmt)
    wall, cpu = time_batches(model, x, repeats)
    seconds, cpu_seconds = statistics.median(wall), statistics.median(cpu)
    snippets_per_s = batch / seconds
    return {
        "stream": "rgb" if channels == 3 else "flow", "batch": batch, "format": memory_format,
        "median_batch_s": round(seconds, 4),
        "snippets_per_s": round(snippets_per_s, 3), "frames_per_s": round(snippets_per_s * SNIPPET_FRAMES, 2),
        "s_per_video_minute": round(SNIPPETS_PER_MINUTE / snippets_per_s, 2),
        "cpu_s_per_video_minute": round(SNIPPETS_PER_MINUTE * cpu_seconds / batch, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off, as in co2cli's exact mode)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", nargs="+", choices=["channels_last", "contiguous"], default=["channels_last"],
                        help="weight/input memory layout; load_i3d uses channels_last on CPU")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        disable_tf32()
    header = (f"I3D throughput, random weights, {args.device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}")
    print(header)
    print(f"{'stream':6} {'batch':>5} {'layout':>13} {'s/batch':>9} {'snippets/s':>11} {'frames/s':>9} "
          f"{'s per video min':>16} {'CPU s per video min':>20}")
    rows = []
    for channels in (3, 2):
        for batch in args.batches:
            for memory_format in args.formats:
                row = bench(channels, batch, args.repeats, device, memory_format)
                rows.append(row)
                print(f"{row['stream']:6} {batch:5d} {memory_format:>13} {row['median_batch_s']:9.3f} "
                      f"{row['snippets_per_s']:11.3f} {row['frames_per_s']:9.1f} {row['s_per_video_minute']:16.1f} "
                      f"{row['cpu_s_per_video_minute']:20.1f}", flush=True)
    best = {s: min(r["s_per_video_minute"] for r in rows if r["stream"] == s) for s in ("rgb", "flow")}
    best_cpu = {s: min(r["cpu_s_per_video_minute"] for r in rows if r["stream"] == s) for s in ("rgb", "flow")}
    print(f"both streams: {best['rgb'] + best['flow']:.1f} s wall ({best_cpu['rgb'] + best_cpu['flow']:.1f} CPU s) "
          "of I3D per minute of 25 fps video, best setting per stream")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
