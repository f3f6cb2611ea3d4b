"""Videos per minute of `co2 extract-features` (or `co2 extract-flow` with --job flow): the local executor vs
`--executor ray` with 1 and 2 workers, on the same clips, in one run.

    PYTHONPATH=. .venv/bin/python bench/bench_ray.py                     # 8 clips of 4 s, RGB, this machine
    PYTHONPATH=. .venv/bin/python bench/bench_ray.py --clips 16 --seconds 10 --workers 1 2 4 --cpus-per-worker 1
    PYTHONPATH=. .venv/bin/python bench/bench_ray.py --job flow --format npy --clips 4 --seconds 2

With --job flow the local rows vary OpenCV's processes instead of torch's threads (all cores, then
--local-threads: 1 process), each Ray worker runs --cpus-per-worker processes and streams its flow to the
driver, and max |diff| compares the .flow.npy arrays (jpg: 0 means every JPEG file is byte-identical).

Clips are cut from the sample videos in ../shared/data/videos (re-encoded, so every clip decodes alike). The
local rows are `runner.run_batch` on a `LocalPool` with one FeatureExtractor (torch's default threads: all cores, then
--local-threads, default 1: what one 1-CPU worker uses); each Ray row starts
a pool on one local Ray (`ray.init(num_cpus=<cores>)`, started once, its start-up timed apart) with N workers of
--cpus-per-worker CPUs. "all" includes loading the weights (and, for Ray, starting the workers); "steady" is
the rate between the first and the last finished video, which is what a long batch runs at. The max |diff|
column compares each run's features with the first local run's (thread counts differ, so the last bits may).
Ratios are against the first local row. On a machine shared with other jobs, wall-clock figures move. Needs
the i3d-rgb weights (`co2 weights install i3d-rgb`; i3d-flow too for --streams rgb,flow). Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def cut(source: Path, target: Path, seconds: float) -> Path:
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream_in = src.streams.video[0]
        out = dst.add_stream("libx264", rate=stream_in.average_rate)
        out.width, out.height, out.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        for frame in src.decode(stream_in):
            if frame.time > seconds:
                break
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in out.encode(image):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
    return target


def make_clips(folder: Path, count: int, seconds: float) -> list[tuple[Path, str]]:
    sources = sorted(SHARED_VIDEOS.glob("*.mp4"))
    if not sources:
        sys.exit(f"no sample videos in {SHARED_VIDEOS}")
    cuts = [cut(src, folder / f"cut{i}.mp4", seconds) for i, src in enumerate(sources)]
    clips = []
    for i in range(count):
        target = folder / f"clip{i:03d}.mp4"
        shutil.copy(cuts[i % len(cuts)], target)
        clips.append((target, target.stem))
    return clips


def timed_run(run, clips: list, out: Path) -> dict:
    """run(out, on_end) -> items; returns wall, per-video finish times, frames."""
    finished: list[float] = []
    started = time.perf_counter()
    items = run(out, lambda item: finished.append(time.perf_counter() - started))
    wall = time.perf_counter() - started
    done = [i for i in items if i.status == "done"]
    assert len(done) == len(clips), [(i.name, i.status, i.message) for i in items]
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) * 60 if len(finished) > 1 else float("nan")
    return {"wall": wall, "all": len(clips) / wall * 60, "steady": steady, "frames": sum(i.frames for i in done),
            "first": finished[0]}


def max_diff(a: Path, b: Path) -> float:
    return max(float(np.abs(np.load(x) - np.load(b / x.name)).max()) for x in sorted(a.glob("*.npy")))


def flow_diff(a: Path, b: Path) -> float:
    """Largest |difference| of the .flow.npy arrays; for jpg folders 0.0 when every file is byte-identical, else
    inf."""
    arrays = sorted(a.glob("*.flow.npy"))
    if arrays:
        return max(float(np.abs(np.load(x) - np.load(b / x.name)).max()) for x in arrays)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    same = files == sorted(p.relative_to(b) for p in b.rglob("*.jpg")) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)
    return 0.0 if same else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--streams", default="rgb")
    parser.add_argument("--job", choices=("features", "flow"), default="features")
    parser.add_argument("--format", choices=("npy", "jpg"), default="npy", help="--job flow: the flow files.")
    parser.add_argument("--region", choices=("frame", "crop"), default="frame", help="--job flow: TV-L1 region.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--local-threads", type=int, nargs="*", default=[1],
                        help="Extra local rows with these torch thread counts (the first row: torch's default).")
    parser.add_argument("--keep", type=Path, help="Write clips and outputs here instead of a temp folder.")
    args = parser.parse_args()

    import ray

    from co2cli import distributed
    from co2cli.batch import BatchEvents
    from co2cli.extract import FeatureExtractor, FeatureJob, parse_streams
    from co2cli.flowfiles import FlowJob
    from co2cli.runner import LocalPool, run_batch

    flow_job = args.job == "flow"
    streams = ("flow",) if flow_job else parse_streams(args.streams)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_ray_"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "clips").mkdir(exist_ok=True)
    clips = make_clips(root / "clips", args.clips, args.seconds)
    cores = os.cpu_count() or 1
    what = f"flow {args.format}, region {args.region}" if flow_job else f"streams {','.join(streams)}"
    print(f"{len(clips)} clips of {args.seconds:g} s, {what}, {cores} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, Ray {ray.__version__}", flush=True)

    rows = []

    diff = flow_diff if flow_job else max_diff

    def local(out: Path, on_end, processes: int | None = None) -> list:
        if flow_job:
            extractor = FeatureExtractor(streams, "cpu", flow_workers=processes, flow_backend="opencv",
                                         flow_region=args.region, load_models=False)
            job = FlowJob(out, args.format, args.region, "opencv")
        else:
            extractor = FeatureExtractor(streams, "cpu")
            job = FeatureJob(out, extractor.identity())
        return run_batch(clips, job, LocalPool(lambda: extractor), events=BatchEvents(on_end=on_end))

    import torch

    default_threads = cores if flow_job else torch.get_num_threads()
    unit = "process" if flow_job else "thread"
    for threads in dict.fromkeys([default_threads, *args.local_threads]):
        if not flow_job:
            torch.set_num_threads(threads)
        out = root / ("out_local" if threads == default_threads else f"out_local{threads}")
        rows.append((f"local, {threads} {unit}{'es' if flow_job and threads > 1 else 's' if threads > 1 else ''}",
                     timed_run(lambda o, e, n=threads: local(o, e, n), clips, out)))
        if threads != default_threads:
            rows[-1][1]["diff"] = diff(out, root / "out_local")
        print(f"  {rows[-1][0]}: {rows[-1][1]['wall']:.1f} s", flush=True)
    if not flow_job:
        torch.set_num_threads(default_threads)

    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=False,
             logging_level="ERROR")
    ray_start = time.perf_counter() - started
    try:
        for workers in args.workers:
            def on_ray(out: Path, on_end, workers: int = workers) -> list:
                options = distributed.ClusterOptions(workers=workers, cpus_per_worker=args.cpus_per_worker,
                                                     quiet=True)
                if flow_job:
                    spec = distributed.WorkerSpec(streams, "cpu", flow_workers=args.cpus_per_worker,
                                                  flow_backend="opencv", flow_region=args.region, load_models=False)
                    with distributed.RayPool(spec, options) as pool:
                        return distributed.extract_flow_batch(clips, out, pool, args.format,
                                                              events=BatchEvents(on_end=on_end))
                with distributed.RayPool(distributed.WorkerSpec(streams, "cpu"), options) as pool:
                    return distributed.extract_batch(clips, out, pool, events=BatchEvents(on_end=on_end))

            label = f"ray, {workers} worker{'s' if workers > 1 else ''} x {args.cpus_per_worker} CPU"
            rows.append((label, timed_run(on_ray, clips, root / f"out_ray{workers}")))
            rows[-1][1]["diff"] = diff(root / f"out_ray{workers}", root / "out_local")
            print(f"  {label}: {rows[-1][1]['wall']:.1f} s", flush=True)
    finally:
        ray.shutdown()

    base = rows[0][1]
    print(f"\nRay start-up (once, not in the rows): {ray_start:.1f} s")
    header = (f"{'executor':<26} {'wall s':>7} {'1st video s':>11} {'videos/min all':>14} {'x local':>7} "
              f"{'videos/min steady':>17} {'x local':>7} {'frames/s steady':>15} {'max |diff|':>10}")
    print(header)
    print("-" * len(header))
    frames_per_video = base["frames"] / len(clips)
    for label, r in rows:
        print(f"{label:<26} {r['wall']:7.1f} {r['first']:11.1f} {r['all']:14.2f} {r['all'] / base['all']:7.2f} "
              f"{r['steady']:17.2f} {r['steady'] / base['steady']:7.2f} "
              f"{r['steady'] * frames_per_video / 60:15.1f} {r.get('diff', 0.0):10.1e}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
