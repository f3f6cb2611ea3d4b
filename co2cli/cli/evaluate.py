"""`co2 evaluate`: detection mAP of predictions against W-TALC ground truth."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from co2cli.cli.app import HELP_OPTIONS, app
from co2cli.cli.options import Dataset
from co2cli.errors import Co2Error


class Units(str, Enum):
    snippets = "snippets"
    seconds = "seconds"


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


class Protocol(str, Enum):
    original = "original"
    official = "official"


@app.command(context_settings=HELP_OPTIONS,
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
