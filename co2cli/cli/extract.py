"""`co2 extract-features` and `co2 extract-flow`: a job per command, a pool per executor, one batch runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from co2cli.cli.app import HELP_OPTIONS, app
from co2cli.cli.batches import finish_batch, open_pool, print_output_path, run_jobs
from co2cli.cli.options import (CpusPerWorkerOpt, Device, DeviceOpt, Executor, ExecutorOpt, FlowBackend,
                                FlowBackendAlias, FlowBackendOpt, FlowRegion, FlowRegionAlias, FlowRegionOpt,
                                FlowWorkersOpt, FromFileOpt, MaxSideOpt, OverwriteOpt, Precision, PrecisionOpt,
                                QuietOpt, RayAddressOpt, VideoInputs, WorkersOpt, cluster_options, with_alias)
from co2cli.errors import Co2Error, UsageError
from co2cli.inputs import NO_VIDEOS, prepare_inputs

if TYPE_CHECKING:
    from co2cli.runner import Pool

FLOW_FORMATS = ("npy", "jpg")  # as flowfiles.FORMATS (not imported here: `co2 --help` stays light)


def _flow_format(value: str) -> str:
    if value not in FLOW_FORMATS:
        raise UsageError(f"--format must be npy or jpg, not {value!r}")
    return value


FlowFormatOpt = Annotated[str, typer.Option(
    "--format", "-f", metavar="npy|jpg", callback=_flow_format,
    help="npy: <name>.flow.npy float32 (N, 224, 224, 2) in [-1, 1] as I3D receives it; jpg: <name>/flow_x_00001.jpg, "
         "flow_y_... (denseflow/mmaction layout, bound 20).")]


def _video_inputs(inputs: list[str] | None, from_file: str | None, output: Path) -> tuple[list, list]:
    from co2cli import video as video_mod

    return prepare_inputs(inputs, from_file, video_mod.VIDEO_SUFFIXES, NO_VIDEOS, output)


@app.command("extract-features", context_settings=HELP_OPTIONS,
             epilog="Example: co2 extract-features videos/ -o features/ --streams rgb,flow")
def extract_features(
    inputs: VideoInputs = None,
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Folder for <name>.npy and <name>.json."),
    from_file: FromFileOpt = None,
    streams: str = typer.Option("rgb,flow", "--streams", metavar="rgb,flow|rgb",
                                help="rgb,flow (T, 2048) or rgb (T, 1024)."),
    device: DeviceOpt = Device.auto,
    batch_size: int = typer.Option(4, "--batch-size", metavar="N", min=1, help="Snippets per I3D forward pass."),
    flow_backend: FlowBackendOpt = FlowBackend.auto,
    flow_region: FlowRegionOpt = FlowRegion.frame,
    flow_workers: FlowWorkersOpt = None,
    precision: PrecisionOpt = Precision.fp32,
    max_side: MaxSideOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    cpus_per_worker: CpusPerWorkerOpt = None,
) -> None:
    """Two-stream I3D features per video (resumable: finished videos are skipped)."""
    cluster = cluster_options(executor, ray_address, workers, cpus_per_worker, quiet)  # --executor ray
    from co2cli import weights
    from co2cli.extract import WEIGHT_NAMES, FeatureExtractor, FeatureJob, parse_streams
    from co2cli.features import output_paths

    chosen = parse_streams(streams)
    named, failures = _video_inputs(inputs, from_file, output)
    try:
        weights.require([WEIGHT_NAMES[s] for s in chosen])
    except Co2Error as exc:
        hint = "; or use --streams rgb for RGB-only (T, 1024) features" if "i3d-flow" in str(exc) else ""
        raise Co2Error(f"{exc}{hint}") from None
    extractor = None
    if cluster is None:  # built before the batch: the identity of its outputs, and any weight error first
        extractor = FeatureExtractor(chosen, device.value, batch_size, flow_workers=flow_workers,
                                     max_side_px=max_side, flow_backend=flow_backend.value,
                                     flow_region=flow_region.value, precision=precision.value)
    # On Ray, `auto` lets each worker pick its flow backend, so an output made by either counts as done.
    job = (FeatureJob(output, extractor.identity()) if extractor is not None
           else FeatureJob.installed(output, chosen, flow_region.value, flow_backend.value, precision.value))

    def spec() -> Any:
        from co2cli.distributed import WorkerSpec

        return WorkerSpec(chosen, device.value, batch_size, flow_workers=flow_workers or 1, max_side_px=max_side,
                          flow_backend=flow_backend.value, flow_region=flow_region.value,
                          precision=precision.value)

    pool = open_pool(cluster, lambda: extractor, spec)
    items, wall = run_jobs(named, job, pool, "videos", overwrite, quiet,
                           print_output_path(lambda name: output_paths(output, name)[0]))
    finish_batch("extract-features", "extracted", items, failures, wall, quiet)


@app.command("extract-flow", context_settings=HELP_OPTIONS,
             epilog="Example: co2 extract-flow videos/ -o flow/ --format jpg --flow-region frame")
def extract_flow(
    inputs: VideoInputs = None,
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Folder for the flow files."),
    from_file: FromFileOpt = None,
    flow_backend: FlowBackendOpt = FlowBackend.auto,
    flow_region: FlowRegionOpt = FlowRegion.frame,
    fmt: FlowFormatOpt = "npy",
    device: DeviceOpt = Device.auto,
    flow_workers: FlowWorkersOpt = None,
    max_side: MaxSideOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    cpus_per_worker: CpusPerWorkerOpt = None,
    backend: FlowBackendAlias = None,
    region: FlowRegionAlias = None,
) -> None:
    """TV-L1 optical flow per video, as I3D sees it (resumable: finished videos are skipped)."""
    if executor is not Executor.ray and workers is not None:
        raise UsageError("--workers needs --executor ray (OpenCV TV-L1 processes: --flow-workers)")
    cluster = cluster_options(executor, ray_address, workers, cpus_per_worker, quiet)
    flow_backend = with_alias(flow_backend, backend, FlowBackend.auto, "--flow-backend", "--backend")
    flow_region = with_alias(flow_region, region, FlowRegion.frame, "--flow-region", "--region")
    from co2cli import flowfiles

    named, failures = _video_inputs(inputs, from_file, output)
    job, pool = _flow_job(cluster, output, fmt, device, flow_backend, flow_region, flow_workers, max_side)
    items, wall = run_jobs(named, job, pool, "videos", overwrite, quiet,
                           print_output_path(lambda name: flowfiles.outputs(output, name, fmt)[0]))
    finish_batch("extract-flow", "extracted flow for", items, failures, wall, quiet)


def _flow_job(cluster: Any, output: Path, fmt: str, device: Device, backend: FlowBackend, region: FlowRegion,
              flow_workers: int | None, max_side: int | None) -> tuple[Any, Pool]:
    """(the flow job, the pool of the chosen executor): no I3D weights are read or shipped."""
    from co2cli.extract import FeatureExtractor, worker_flow_backend
    from co2cli.flowfiles import FlowJob

    def local() -> FeatureExtractor:
        return FeatureExtractor(("flow",), device.value, flow_workers=flow_workers, max_side_px=max_side,
                                flow_backend=backend.value, flow_region=region.value, load_models=False)

    def spec() -> Any:  # each Ray worker's OpenCV TV-L1 uses the CPUs it reserved
        from co2cli.distributed import WorkerSpec

        return WorkerSpec(("flow",), device.value, flow_workers=cluster.cpus_per_worker, max_side_px=max_side,
                          flow_backend=backend.value, flow_region=region.value, load_models=False)

    extractor = local() if cluster is None else None  # built before the batch, as extract-features does
    # A local output is done when made by the backend this process resolves `auto` to; on Ray each worker
    # resolves `auto` on its own device, so an output made by either counts as done.
    done_by = extractor.flow_backend if extractor is not None else worker_flow_backend(backend.value)
    return FlowJob(output, fmt, region.value, done_by), open_pool(cluster, lambda: extractor, spec)
