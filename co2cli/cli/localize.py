"""`co2 localize`: inputs -> a localizer -> analyses (runner.run_batch on the chosen executor) -> outputs in the
formats of `writers.FORMATS`."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from co2cli import writers
from co2cli.cli.app import HELP_OPTIONS, app, echo_err
from co2cli.cli.batches import Reporter, open_pool, run_jobs, summary_line
from co2cli.cli.options import (CpusPerWorkerOpt, DeviceOpt, Device, Executor, ExecutorOpt, FlowBackend,
                                FlowBackendOpt, FlowRegion, FlowRegionOpt, FlowWorkersOpt, FromFileOpt, MaxSideOpt,
                                Precision, PrecisionOpt, QuietOpt, RayAddressOpt, WorkersOpt, cluster_options)
from co2cli.errors import Co2Error, UsageError
from co2cli.inputs import check_writable, prepare_inputs
from co2cli.version import __version__

if TYPE_CHECKING:
    from co2cli.localize import Segment
    from co2cli.pipeline import Analysis, Localizer


class ClassSet(str, Enum):
    thumos = "thumos"
    activitynet = "activitynet"
    kinetics = "kinetics"


OutputFormat = Enum("OutputFormat", {name: name for name in (*writers.FORMATS, writers.ALL)}, type=str)  # type: ignore[misc]
"""--format: every format of the registry, and all."""


class View(str, Enum):
    raw = "raw"
    merged = "merged"


NO_INPUTS = "no inputs: give videos, feature files, folders or globs (or - to read names from stdin)"


@dataclass(frozen=True)
class Outputs:
    """Where and how `co2 localize` writes its results (the output options, checked)."""

    fmt: str
    view: View | None
    top_k: int | None
    only: list[str] | None
    output: Path | None
    output_dir: Path | None
    plot: Path | None
    html: Path | None
    quiet: bool

    def merged(self, fmt: writers.ResultFormat) -> bool:
        return self.view is View.merged if self.view is not None else fmt.merged


def output_format(fmt: Any, output: Path | None) -> str:
    """--format, else the --output file's extension, else table; a contradiction is a usage error."""
    implied = writers.EXTENSIONS.get(output.suffix.lower()) if output is not None else None
    if fmt is not None and fmt.value == writers.ALL:
        if output is not None:
            raise UsageError("--format all writes one file per format: use --output-dir DIR, not --output")
        return writers.ALL
    if fmt is not None:
        if implied is not None and implied != fmt.value:
            raise UsageError(f"--format {fmt.value} contradicts the extension of --output {output} ({implied})")
        return fmt.value
    if output is not None and implied is None:
        raise UsageError(f"cannot tell the format of --output {output} from its extension: add --format "
                         f"({', '.join(list(writers.FORMATS)[:-1])} or {list(writers.FORMATS)[-1]})")
    return implied or "table"


def check_outputs(fmt: Any, output: Path | None, output_dir: Path | None, html: Path | None) -> str:
    """The format to write, after the checks that need no input (a contradiction is a usage error)."""
    if output is not None and output.is_dir():
        raise Co2Error(f"{output}: is a folder; give a file name to write the results to (or use --output-dir)")
    fmt_name = writers.ALL if fmt is None and output_dir is not None else output_format(fmt, output)
    if output is not None and output_dir is not None:
        raise UsageError("--output and --output-dir exclude each other")
    if fmt_name == writers.ALL and output_dir is None:
        raise UsageError("--format all needs --output-dir DIR")
    if fmt_name == "html" and output is None and output_dir is None and html is None:
        raise UsageError("--format html writes a page: give --output FILE.html or --html DIR")
    return fmt_name


def check_targets(outputs: Outputs, inputs: int) -> None:
    if outputs.fmt in ("srt", "vtt") and outputs.output_dir is None and inputs > 1:
        raise UsageError(f"--format {outputs.fmt} is subtitles for one video: for {inputs} inputs use --output-dir "
                         "DIR (one file per input)")
    for target, kind in ((outputs.output, "file"), (outputs.output_dir, "dir"), (outputs.plot, "dir"),
                         (outputs.html, "dir")):
        if target is not None:
            check_writable(target, kind)


def weights_needed(classes: str, checkpoint: str | None, has_videos: bool) -> list[str]:
    """Installed weights a localize run needs (a --checkpoint path replaces the installed CO2-Net)."""
    names = {"kinetics": [], "thumos": ["co2-thumos"], "activitynet": ["co2-activitynet"]}[classes]
    if checkpoint is not None:
        names = []
    if has_videos or classes == "kinetics":
        names += ["i3d-rgb"] + (["i3d-flow"] if classes != "kinetics" else [])
    return names


def choose_classes(classes: ClassSet | None, checkpoint: str | None) -> str:
    from co2cli.pipeline import default_classes

    chosen = classes.value if classes else default_classes(checkpoint)
    if chosen == "kinetics" and checkpoint is not None:
        raise UsageError("--checkpoint is a CO2-Net checkpoint; the kinetics classes use none (choose --classes "
                         "thumos or activitynet with it)")
    return chosen


def require_weights(names: list[str], failures: Sequence[tuple[Path, str]]) -> None:
    """Missing weights are an error; what was already found wrong with the inputs is reported before it."""
    from co2cli import weights

    try:
        weights.require(names)
    except Co2Error as exc:
        raise Co2Error(str(exc), [*(message for _, message in failures), *exc.details]) from None


Inputs = Annotated[Optional[list[str]], typer.Argument(
    metavar="VIDEO|FEATURES.npy|FOLDER|GLOB|-", show_default=False,
    help="Videos, (T, 2048) feature .npy files, folders, globs, or - (names on stdin).")]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    "--checkpoint", "-c", metavar="PATH|NAME", help="CO2-Net checkpoint: a path (plain or .gz) or an installed name.")]
ClassesOpt = Annotated[Optional[ClassSet], typer.Option(
    "--classes", help="CO2-Net thumos / activitynet, or kinetics (zero-shot I3D). Default: thumos when CO2-Net "
                      "weights are installed or --checkpoint is given, else kinetics.")]
FormatOpt = Annotated[Optional[OutputFormat], typer.Option(  # type: ignore[valid-type]
    "--format", "-f", help="table (default), json (ActivityNet), csv, srt, vtt, html, or all (with --output-dir). "
                           "Default: from --output's extension.")]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "--output", "-o", metavar="FILE", help="Write all results to FILE instead of stdout.")]
OutputDirOpt = Annotated[Optional[Path], typer.Option(
    "--output-dir", metavar="DIR", help="Write one file per input: <name>.<format>.")]
ViewOpt = Annotated[Optional[View], typer.Option(
    "--view", help="raw: the original's proposals (for evaluators; json/csv default); merged: overlapping segments "
                   "of a class joined, sorted by time (table/srt/vtt/html default).")]
TopKOpt = Annotated[Optional[int], typer.Option(
    "--top-k", metavar="N", min=1, help="Keep the N best-scoring segments per video (raw or merged view).")]
OnlyOpt = Annotated[Optional[str], typer.Option(
    "--only", metavar="CLASS[,CLASS]", help="Keep only these classes (names, comma-separated).")]
MinScoreOpt = Annotated[Optional[float], typer.Option("--min-score", metavar="S", help="Drop segments below S.")]
PlotOpt = Annotated[Optional[Path], typer.Option(
    "--plot", metavar="DIR", help="Write one PNG timeline per input.")]
HtmlOpt = Annotated[Optional[Path], typer.Option(
    "--html", metavar="DIR", help="Write a review page (index.html) for the batch into DIR.")]
NoCacheOpt = Annotated[bool, typer.Option(
    "--no-cache", help="Do not read or write the feature cache (<CO2CLI_HOME>/features) for videos.")]


@app.command(context_settings=HELP_OPTIONS, epilog="Examples: co2 localize clip.mp4 | co2 localize videos/ "
             "--output-dir out --format all | ls *.mp4 | co2 localize - -f json -o results.json")
def localize(
    inputs: Inputs = None, from_file: FromFileOpt = None, checkpoint: CheckpointOpt = None,
    classes: ClassesOpt = None, fmt: FormatOpt = None, output: OutputOpt = None, output_dir: OutputDirOpt = None,
    view: ViewOpt = None, top_k: TopKOpt = None, only: OnlyOpt = None, min_score: MinScoreOpt = None,
    plot: PlotOpt = None, html: HtmlOpt = None, device: DeviceOpt = Device.auto, no_cache: NoCacheOpt = False,
    max_side: MaxSideOpt = None, flow_backend: FlowBackendOpt = FlowBackend.auto,
    flow_region: FlowRegionOpt = FlowRegion.frame, flow_workers: FlowWorkersOpt = None,
    precision: PrecisionOpt = Precision.fp32, quiet: QuietOpt = False,
    executor: ExecutorOpt = Executor.local, ray_address: RayAddressOpt = None, workers: WorkersOpt = None,
    cpus_per_worker: CpusPerWorkerOpt = None,
) -> None:
    """Find action segments (in seconds) in videos or feature files."""
    cluster = cluster_options(executor, ray_address, workers, cpus_per_worker, quiet)  # --executor ray
    from co2cli import video as video_mod
    from co2cli.pipeline import FEATURE_SUFFIXES, is_feature_file, load_model

    outputs = Outputs(check_outputs(fmt, output, output_dir, html), view, top_k, parse_only(only), output,
                      output_dir, plot, html, quiet)
    named, failures = prepare_inputs(inputs, from_file, video_mod.VIDEO_SUFFIXES | FEATURE_SUFFIXES, NO_INPUTS)
    check_targets(outputs, len(named))
    chosen = choose_classes(classes, checkpoint)
    has_videos = not all(is_feature_file(path) for path, _ in named)
    require_weights(weights_needed(chosen, checkpoint, has_videos), failures)

    started = time.perf_counter()
    localizer = load_model(chosen, checkpoint=checkpoint, device=device.value, use_cache=not no_cache,
                           max_side_px=max_side, flow_backend=flow_backend.value, flow_region=flow_region.value,
                           flow_workers=flow_workers, precision=precision.value)
    check_only(outputs.only, localizer)
    echo_err(f"model: {localizer.description}", quiet)
    analyses, run_failures = localize_inputs(localizer, named, min_score, cluster, device.value, quiet)
    failures += run_failures
    wall = time.perf_counter() - started
    if analyses:
        sha256 = model_weights_sha256(chosen, checkpoint) | (localizer.features.weights_sha256() if has_videos
                                                             else {})
        write_outputs(analyses, localizer.description, sha256, outputs)
    for path, message in failures:
        typer.echo(f"error: {message}" if str(path) in message else f"error: {path}: {message}", err=True)
    video_seconds = sum(a.duration_s or a.timeline_s for a in analyses)
    echo_err(summary_line("localized", len(analyses), len(failures), video_seconds, wall), quiet)
    if failures:
        raise typer.Exit(1)


def localize_inputs(localizer: Localizer, named: list[tuple[Path, str]], min_score: float | None, cluster: Any,
                    device: str, quiet: bool) -> tuple[list[Analysis], list[tuple[Path, str]]]:
    """(analyses, [(input, message)] failures), both in input order, computed on the chosen executor."""
    from co2cli.batch import BatchItem
    from co2cli.pipeline import LocalizeJob

    source = localizer.features

    def spec() -> Any:  # Ray workers make the features `source` makes, with the weights it holds (shipped)
        from co2cli.distributed import WorkerSpec

        return WorkerSpec(streams=source.streams, device=device, batch_size=source.batch_size,
                          max_side_px=source.max_side_px, flow_backend=source.flow_backend,
                          flow_region=source.flow_region, precision=source.precision)

    pool = open_pool(cluster, source.extractor, spec, source.state_dicts or None)

    def on_item(item: BatchItem, reporter: Reporter) -> None:
        if item.status == "done" and item.output.from_cache:  # type: ignore[attr-defined]
            reporter.note(f"{item.name}: features from the cache ({localizer.cache_folder(item.path)}; "
                          "--no-cache recomputes)", quiet)

    job = LocalizeJob(localizer, min_score, any_backend=cluster is not None)
    items, _ = run_jobs(named, job, pool, "inputs", False, quiet, on_item)
    return ([item.output for item in items if item.status == "done"],  # type: ignore[misc]
            [(item.path, item.message) for item in items if item.status == "failed"])


def parse_only(only_text: str | None) -> list[str] | None:
    return [c.strip() for c in only_text.split(",") if c.strip()] if only_text else None


def check_only(only: list[str] | None, localizer: Localizer) -> None:
    """--only names must be classes of the model (case-insensitive): a typo is a usage error, not an empty result."""
    import difflib

    names = list(getattr(localizer, "class_names", []) or [])
    known = {n.casefold() for n in names}
    unknown = [n for n in only or [] if n.casefold() not in known]
    if names and unknown:
        close = [m for n in unknown for m in difflib.get_close_matches(n, names, n=1)]
        raise UsageError(f"--only: {', '.join(repr(n) for n in unknown)} is not a class of "
                         f"{localizer.description}" + (f" (did you mean {', '.join(close)}?)" if close else ""))


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


# ---------------------------------------------------------------------------------------------------------------
# Writing the results


def shown_segments(analysis: Analysis, merged: bool, top_k: int | None, only: list[str] | None) -> list[Segment]:
    """The segments an output shows: merged (see writers.merge_segments), or the raw proposals in their original
    order, filtered by `only` and cut to the `top_k` best."""
    if merged:
        return writers.merge_segments(analysis.segments, top_k, only)
    shown = list(analysis.segments)
    if only:
        wanted = {name.casefold() for name in only}
        shown = [s for s in shown if s.label_name.casefold() in wanted]
    if top_k is not None:
        best = set(sorted(range(len(shown)), key=lambda i: -shown[i].score)[:top_k])
        shown = [s for i, s in enumerate(shown) if i in best]
    return shown


def review_page(analyses: Sequence[Analysis], shown: dict, page_dir: Path, model: str) -> str:
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


@dataclass(frozen=True)
class _Batch:
    """The analyses of a run and what every format needs to render them."""

    analyses: Sequence[Analysis]
    outputs: Outputs
    run: writers.RunInfo
    title: str

    def rendering(self, fmt: writers.ResultFormat, analyses: Sequence[Analysis] | None = None,
                  page_dir: Path | None = None) -> writers.Rendering:
        """What `fmt` renders for `analyses` (default: all), its review page placed in `page_dir`."""
        chosen = self.analyses if analyses is None else analyses
        o = self.outputs
        results = {a.video: shown_segments(a, o.merged(fmt), o.top_k, o.only) for a in chosen}
        page = (lambda: review_page(chosen, results, page_dir, self.run.model)) if page_dir is not None else None
        return writers.Rendering(results, self.run, self.title, page)


def write_outputs(analyses: Sequence[Analysis], description: str, weights_sha256: dict[str, str | None],
                  outputs: Outputs) -> None:
    """Every output the options ask for: files per input, one file, stdout, the review page, the plots."""
    run = writers.RunInfo(description, dict(weights_sha256), __version__, {a.video: a.duration_s for a in analyses})
    batch = _Batch(analyses, outputs, run, f"Actions found by {description}")
    if outputs.output_dir is not None:
        write_output_dir(batch, outputs.output_dir)
    elif outputs.output is not None:
        from co2cli.fsio import write_result_file

        fmt = writers.FORMATS[outputs.fmt]
        write_result_file(outputs.output, fmt.render(batch.rendering(fmt, page_dir=outputs.output.parent)))
        echo_err(f"wrote {outputs.output}", outputs.quiet)
    elif outputs.fmt != "html":
        print_results(batch, writers.FORMATS[outputs.fmt])
    if outputs.html is not None:
        write_page(batch, outputs.html)
        echo_err(f"wrote review page {outputs.html / 'index.html'}", outputs.quiet)
    if outputs.plot is not None:
        write_plots(batch, outputs.plot)


def write_output_dir(batch: _Batch, output_dir: Path) -> None:
    """--output-dir: `<name>.<extension>` per input for each per-input format, `index.html` for the page."""
    from co2cli.fsio import write_text_atomic

    for fmt in writers.formats_named(batch.outputs.fmt):
        if not fmt.per_input:
            write_page(batch, output_dir)
            continue
        for a in batch.analyses:
            write_text_atomic(output_dir / f"{a.video}{fmt.extension}", fmt.render(batch.rendering(fmt, [a])))
    echo_err(f"wrote {len(batch.analyses)} result(s) per format into {output_dir}", batch.outputs.quiet)


def write_page(batch: _Batch, page_dir: Path) -> None:
    from co2cli.fsio import write_text_atomic

    fmt = writers.FORMATS["html"]
    write_text_atomic(page_dir / "index.html", fmt.render(batch.rendering(fmt, page_dir=page_dir)))


def print_results(batch: _Batch, fmt: writers.ResultFormat) -> None:
    """Results on stdout: the table drawn for the terminal's width, other formats as their text."""
    if fmt.name != "table":
        sys.stdout.write(fmt.render(batch.rendering(fmt)))
        sys.stdout.flush()
        return
    from rich.console import Console

    console = Console(width=max(Console().width, 100))
    console.print(writers.to_table(batch.rendering(fmt).results, title=batch.title, caption=None))
    console.print(writers.SCORE_LEGEND, soft_wrap=True, markup=False, highlight=False)


def write_plots(batch: _Batch, plot_dir: Path) -> None:
    """One PNG timeline per input (merged segments unless --view raw)."""
    o = batch.outputs
    for a in batch.analyses:
        target = plot_dir / f"{a.video}.png"
        segments = shown_segments(a, o.view is not View.raw, o.top_k, o.only)
        writers.plot_timeline(target, f"{a.video} - {batch.run.model}", float(a.snippet_seconds), a.curves,
                              segments, a.attention, a.attention_label, a.offset_s)
        echo_err(f"wrote plot {target}", o.quiet)
