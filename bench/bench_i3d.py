"""I3D inference throughput: frames/s, snippets/s and seconds per minute of 25 fps video, RGB and flow streams.

Weights are RANDOM (timing does not depend on their values), so this needs no installed weights. One snippet is
16 frames of 224x224; a minute of 25 fps video is 1500 frames = 93 whole snippets per stream.

    .venv/bin/python bench/bench_i3d.py                       # CPU, all cores torch sees, batch 1 and 4, fp32 and bf16
    .venv/bin/python bench/bench_i3d.py --threads 1 2 --batches 1 4 8 --formats channels_last contiguous
    .venv/bin/python bench/bench_i3d.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from co2cli.i3d import PRECISIONS, SNIPPET_FRAMES, InceptionI3d, run_snippets, torch_threads

FPS = 25
SNIPPETS_PER_MINUTE = (60 * FPS) // SNIPPET_FRAMES  # 93


def time_batches(model: InceptionI3d, x: torch.Tensor, repeats: int, precision: str) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of `repeats` calls of `run_snippets` (the product's code path) after one
    warm-up (oneDNN picks kernels on the first call). CPU seconds stay meaningful on a machine shared with other
    jobs; wall seconds do not."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    wall, cpu = [], []
    run_snippets(model, x, len(x), channels_last_input=False, precision=precision)
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run_snippets(model, x, len(x), channels_last_input=False, precision=precision)
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def bench(channels: int, batch: int, repeats: int, device: torch.device, memory_format: str, precision: str) -> dict:
    torch.manual_seed(0)
    fmt = torch.channels_last_3d if memory_format == "channels_last" else torch.contiguous_format
    model = InceptionI3d(400, in_channels=channels).to(device).eval().to(memory_format=fmt)
    x = (torch.rand(batch, channels, SNIPPET_FRAMES, 224, 224, device=device) * 2 - 1).contiguous(memory_format=fmt)
    wall, cpu = time_batches(model, x, repeats, precision)
    seconds, cpu_seconds = statistics.median(wall), statistics.median(cpu)
    snippets_per_s = batch / seconds
    return {
        "stream": "rgb" if channels == 3 else "flow", "batch": batch, "format": memory_format,
        "precision": precision, "threads": torch.get_num_threads(), "median_batch_s": round(seconds, 4),
        "snippets_per_s": round(snippets_per_s, 3), "frames_per_s": round(snippets_per_s * SNIPPET_FRAMES, 2),
        "s_per_video_minute": round(SNIPPETS_PER_MINUTE / snippets_per_s, 2),
        "cpu_s_per_video_minute": round(SNIPPETS_PER_MINUTE * cpu_seconds / batch, 2),
    }


def print_row(row: dict) -> None:
    print(f"{row['stream']:6} {row['threads']:3d} {row['batch']:5d} {row['format']:>13} {row['precision']:>5} "
          f"{row['median_batch_s']:9.3f} {row['snippets_per_s']:11.3f} {row['s_per_video_minute']:16.1f} "
          f"{row['cpu_s_per_video_minute']:20.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off, as in co2cli's exact mode)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0], help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", nargs="+", choices=["channels_last", "contiguous"], default=["channels_last"],
                        help="weight/input memory layout; load_i3d uses channels_last on CPU")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["fp32", "bf16"])
    parser.add_argument("--streams", nargs="+", choices=["rgb", "flow"], default=["rgb", "flow"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    header = (f"I3D throughput, random weights, {args.device}, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(header)
    print(f"{'stream':6} {'thr':>3} {'batch':>5} {'layout':>13} {'prec':>5} {'s/batch':>9} {'snippets/s':>11} "
          f"{'s per video min':>16} {'CPU s per video min':>20}")
    rows = []
    for threads in args.threads:
        with torch_threads(threads or None):
            for stream in args.streams:
                for batch in args.batches:
                    for memory_format in args.formats:
                        for precision in args.precisions:
                            rows.append(bench(3 if stream == "rgb" else 2, batch, args.repeats, device,
                                              memory_format, precision))
                            print_row(rows[-1])
    for precision in args.precisions:
        best = {s: min((r["s_per_video_minute"] for r in rows if r["stream"] == s and r["precision"] == precision),
                       default=0.0) for s in args.streams}
        best_cpu = {s: min((r["cpu_s_per_video_minute"] for r in rows
                            if r["stream"] == s and r["precision"] == precision), default=0.0) for s in args.streams}
        print(f"{precision}: {sum(best.values()):.1f} s wall ({sum(best_cpu.values()):.1f} CPU s) of I3D per minute "
              "of 25 fps video, best setting per stream")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
