"""Options shared by several commands, each declared once here with one name and one meaning (`Annotated` types:
a command takes `device: DeviceOpt = Device.auto`). Choices live in one place, so adding a flow backend or an
executor is one line here (and the library code behind it).

Old spellings stay accepted as hidden aliases (extract-flow's `--backend` / `--region`).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Optional

import typer

from co2cli.errors import UsageError


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class FlowBackend(str, Enum):
    auto = "auto"
    fused = "fused"
    opencv = "opencv"
    torch = "torch"


class FlowRegion(str, Enum):
    frame = "frame"
    crop = "crop"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class Dataset(str, Enum):
    thumos14 = "thumos14"
    activitynet12 = "activitynet12"


VIDEO_INPUTS = "VIDEO|FOLDER|GLOB|-"
FLOW_BACKEND_HELP = ("TV-L1 implementation: auto (torch on CUDA, fused on CPU), fused (numba, equal to OpenCV bit "
                     "for bit on x86-64), opencv, or torch.")
FLOW_REGION_HELP = ("frame: TV-L1 on the whole 256-short-side frame, then the centre crop (the Kinetics recipe); "
                    "crop: TV-L1 on the 224 crop (co2cli 0.1).")
FLOW_WORKERS_HELP = "Processes computing OpenCV TV-L1 (default: every CPU this process may use)."

VideoInputs = Annotated[Optional[list[str]], typer.Argument(
    metavar=VIDEO_INPUTS, help="Video files, folders (searched recursively), globs, or - (stdin).", show_default=False)]
FromFileOpt = Annotated[Optional[str], typer.Option(
    "--from-file", metavar="LIST", help="Read input names from this file, one per line.")]
DeviceOpt = Annotated[Device, typer.Option(
    "--device", help="Where the networks (and the torch TV-L1) run: auto takes CUDA when there is one.")]
MaxSideOpt = Annotated[Optional[int], typer.Option(
    "--max-side", metavar="PX", envvar="CO2CLI_MAX_SIDE", min=16,
    help="Refuse videos whose long side exceeds PX (default 2560).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, notes or summary on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo videos whose outputs already exist.")]
FlowBackendOpt = Annotated[FlowBackend, typer.Option("--flow-backend", help=FLOW_BACKEND_HELP)]
FlowRegionOpt = Annotated[FlowRegion, typer.Option("--flow-region", help=FLOW_REGION_HELP)]
FlowWorkersOpt = Annotated[Optional[int], typer.Option(
    "--flow-workers", metavar="N", min=1, help=FLOW_WORKERS_HELP)]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="I3D arithmetic: fp32 (the reference) or bf16 (faster on CPUs with AVX512-BF16/AMX and on "
                        "CUDA; features differ slightly from fp32 and are cached apart).")]
FlowBackendAlias = Annotated[Optional[FlowBackend], typer.Option("--backend", hidden=True,
                                                                 help="Old spelling of --flow-backend.")]
FlowRegionAlias = Annotated[Optional[FlowRegion], typer.Option("--region", hidden=True,
                                                               help="Old spelling of --flow-region.")]
ExecutorOpt = Annotated[Executor, typer.Option(
    "--executor", help="local: in this process; ray: on Ray workers (a cluster, or a local Ray started for the "
                       "run); needs pip install 'co2cli[ray]'.")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS", help="With --executor ray: the cluster (`ray start --head` prints it). "
                                             "Default: $RAY_ADDRESS, else a local Ray for the run.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", metavar="N", min=1, help="With --executor ray: workers to start. Default: one per GPU of the "
                                          "cluster, else its CPUs // --cpus-per-worker.")]
CpusPerWorkerOpt = Annotated[Optional[int], typer.Option(
    "--cpus-per-worker", metavar="N", min=1, help="With --executor ray: CPUs each worker reserves (its torch "
                                                  "threads and OpenCV TV-L1 processes). Default 1.")]


def with_alias(value: Any, old: Any, default: Any, name: str, old_name: str) -> Any:
    """The value of an option that also has an old, hidden spelling (`old`: None when that was not given)."""
    if old is None:
        return value
    if value != default and value != old:
        raise UsageError(f"{old_name} is the old spelling of {name}: give one of them")
    return old


def cluster_options(executor: Executor, ray_address: str | None, workers: int | None,
                    cpus_per_worker: int | None, quiet: bool) -> Any:
    """distributed.ClusterOptions for --executor ray, None for local. Called first: a missing Ray is one error
    line (with the install command) before any input is read or model loaded."""
    if executor is not Executor.ray:
        given = [name for name, value in (("--ray-address", ray_address), ("--workers", workers),
                                          ("--cpus-per-worker", cpus_per_worker)) if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --executor ray")
        return None
    from co2cli import distributed

    distributed.require_ray()
    return distributed.ClusterOptions(ray_address, workers, cpus_per_worker or 1, quiet)
