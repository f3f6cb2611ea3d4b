"""Thin command-line layer over the co2cli modules: parse options, call the library, print results.

Results go to stdout; progress and errors go to stderr. Every Co2Error becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
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
    classes: ClassSet = typer.Option(ClassSet.thumos, "--classes", help="Which label set / model to use."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, json (ActivityNet) or csv."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results here instead of stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write one PNG per video into this folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Drop segments scoring below this."),
) -> None:
    """Find action segments (seconds) in feature files or videos."""
    from co2cli import pipeline

    localizer = pipeline.load_model(classes.value, checkpoint=checkpoint, device=device)
    results, failures = localizer.localize_many(inputs, min_score=min_score, plot_dir=plot)
    if fmt is OutputFormat.json:
        _emit(writers.to_json_text(results), output)
    elif fmt is OutputFormat.csv:
        _emit(writers.to_csv_text(results), output)
    elif output is not None:
        _emit(writers.to_json_text(results), output)
    else:
        Console().print(writers.to_table(results, title=f"Actions found by {localizer.description}"))
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
    if dataset is Dataset.thumos14:
        thresholds, default_subset = evaluate_mod.THUMOS_TIOU, "test"
    else:
        thresholds, default_subset = evaluate_mod.ACTIVITYNET_TIOU, "validation"
    result = evaluate_mod.detection_map(preds, ann, subset=subset or default_subset, thresholds=thresholds,
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


# ---- train (train.py) ----


# ---- weights (weights.py) ----




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
