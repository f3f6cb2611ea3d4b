"""Seconds per minute of 25 fps video for `co2 localize` on CPU, split by stage.

    .venv/bin/python bench/bench_localize.py [VIDEO] [--frames 96] [--device cpu|cuda]

Stages: decode + resample + resize/crop (video.py), TV-L1 flow (flow.py), I3D RGB and I3D flow (i3d.py),
CO2-Net forward (co2net.py), proposals + soft-NMS (localize.py). The first --frames frames of the video are
timed (TV-L1 dominates; a whole clip would take minutes) and every figure is scaled to one minute of video
(1500 frames = 93.75 snippets). Weights: the installed i3d-rgb; i3d-flow and CO2-Net installed ones if present,
else randomly initialised networks of the same architecture (same cost; the output says which). Prints figures
only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from co2cli import co2net, flow, i3d, localize, video, weights
from co2cli.features import pick_device

FRAMES_PER_MINUTE = 60 * video.FPS


def default_video() -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "v_GGSY1Qvo990.mp4"
    if shared.is_file():
        return shared
    from co2cli.samples import sample_video

    return sample_video()


def load_or_random_i3d(name: str, channels: int, device: torch.device) -> tuple[i3d.InceptionI3d, str]:
    try:
        return i3d.load_i3d(weights.resolve(name), channels, device), "installed"
    except Exception:  # noqa: BLE001 - timing only needs the architecture
        return i3d.InceptionI3d(400, channels).to(device).eval(), "random (not installed)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=96, help="frames to time (multiple of 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    path = args.video or default_video()
    device = pick_device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    n = args.frames - args.frames % video.SNIPPET
    timings: dict[str, float] = {}

    start = time.perf_counter()
    frames = video.concat(video.iter_chunks(path, chunk_frames=video.DEFAULT_CHUNK_FRAMES))
    timings["decode+resize"] = (time.perf_counter() - start) / len(frames)  # per frame, whole clip
    rgb, gray = frames.rgb[:n], frames.gray[:n]
    snippets = n // video.SNIPPET

    start = time.perf_counter()
    fields = flow.compute_flow(gray)
    timings["tv-l1 flow"] = (time.perf_counter() - start) / n

    rgb_model, rgb_source = load_or_random_i3d("i3d-rgb", 3, device)
    flow_model, flow_source = load_or_random_i3d("i3d-flow", 2, device)
    rgb_in = video.rgb_to_float(rgb).reshape(snippets, video.SNIPPET, *rgb.shape[1:])
    flow_in = fields.reshape(snippets, video.SNIPPET, *fields.shape[1:])
    i3d.run_snippets(rgb_model, rgb_in[:1], 1)  # warm-up
    start = time.perf_counter()
    rgb_feats, _ = i3d.run_snippets(rgb_model, rgb_in, args.batch_size)
    timings["i3d rgb"] = (time.perf_counter() - start) / n
    start = time.perf_counter()
    flow_feats, _ = i3d.run_snippets(flow_model, flow_in, args.batch_size)
    timings["i3d flow"] = (time.perf_counter() - start) / n

    try:
        model, co2_source = co2net.load_co2net(weights.resolve("co2-thumos"), device), "installed"
    except Exception:  # noqa: BLE001
        model, co2_source = co2net.CO2Net(20).to(device).eval(), "random (not installed)"
    minute = int(FRAMES_PER_MINUTE / video.SNIPPET) + 1  # CO2-Net on a full minute of snippets
    feats = np.tile(np.concatenate([rgb_feats, flow_feats], axis=1), (minute // snippets + 1, 1))[:minute]
    start = time.perf_counter()
    outputs = co2net.run_co2net(model, feats)
    co2_seconds = time.perf_counter() - start
    start = time.perf_counter()
    localize.multiple_threshold_proposals(outputs["cas"], outputs["attn"])
    proposal_seconds = time.perf_counter() - start

    per_minute = {name: per_frame * FRAMES_PER_MINUTE for name, per_frame in timings.items()}
    per_minute["co2-net"] = co2_seconds
    per_minute["proposals"] = proposal_seconds
    total = sum(per_minute.values())
    print(f"video: {path.name}, {len(frames)} frames at 25 fps; timed {n} frames ({snippets} snippets) "
          f"on {device}, {torch.get_num_threads()} torch threads")
    print(f"weights: i3d-rgb {rgb_source}, i3d-flow {flow_source}, co2-thumos {co2_source}")
    print(f"{'stage':<16}{'s / min video':>15}{'share':>9}{'frames/s':>11}")
    for name, seconds in per_minute.items():
        rate = FRAMES_PER_MINUTE / seconds if seconds > 0 else float("inf")
        print(f"{name:<16}{seconds:>15.1f}{seconds / total:>9.1%}{rate:>11.1f}")
    print(f"{'total':<16}{total:>15.1f}{'':>9}{FRAMES_PER_MINUTE / total:>11.2f}")
    rgb_only = per_minute["decode+resize"] + per_minute["i3d rgb"]
    print(f"kinetics zero-shot (RGB only): {rgb_only:.1f} s / min video ({total / rgb_only:.1f}x faster than "
          "two-stream)")


if __name__ == "__main__":
    main()
