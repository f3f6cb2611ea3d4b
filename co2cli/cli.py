"""Thin command-line layer over the co2cli modules: parse options, call the library, print results.

Results go to stdout; progress and errors go to stderr. Every Co2Error becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import sys

import typer

from co2cli.errors import Co2Error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Temporal action localization with CO2-Net.")
weights_app = typer.Typer(no_args_is_help=True, help="List, install, import and verify model weights.")
app.add_typer(weights_app, name="weights")


def fail(message: str, code: int = 1) -> None:
    """Print one clear line on stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# ---- commands are added below, one block per stage ----


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
