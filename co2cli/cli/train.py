"""`co2 train`: CO2-Net on features with video-level labels."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from co2cli.cli.app import HELP_OPTIONS, app
from co2cli.cli.options import Dataset, Device, DeviceOpt


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
    device: DeviceOpt = Device.auto,
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
