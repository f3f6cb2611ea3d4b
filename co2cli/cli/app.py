"""The `co2` application: the typer app, its root options and the entry point that turns every error into one
line on stderr.

Results go to stdout (or files); progress, summaries and errors go to stderr. Every Co2Error and every OS-level
failure becomes one `error: ...` line and exit code 1; usage errors exit 2; an unexpected exception is reported in
one line as a bug (`--debug` or CO2CLI_DEBUG=1 shows the traceback). Heavy modules (torch, the networks) are
imported by the commands that need them, so `co2 --help` and `co2 weights list` start fast.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

import typer
import typer.core

from co2cli.errors import Co2Error, UsageError
from co2cli.version import __version__

if TYPE_CHECKING:
    from rich.console import Console

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


class PlainUsage(typer.core.TyperCommand):
    """Usage lines as click and POSIX write them: a required argument is NAME, an optional one [NAME] (typer
    writes {name} and [name])."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^([{\[])(\w+)([}\]])", lambda m: m.group(2).upper() if m.group(1) == "{"
                       else f"[{m.group(2).upper()}]", piece) for piece in super().collect_usage_pieces(ctx)]


class PlainTyper(typer.Typer):
    """A typer app whose commands all write plain usage lines (PlainUsage), unless a command asks for another
    class."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().command(*args, cls=cls or PlainUsage, **kwargs)


app = PlainTyper(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP_OPTIONS, rich_markup_mode=None,
                  help="Find when actions happen in untrimmed videos (CO2-Net, I3D, TV-L1).")
weights_app = PlainTyper(no_args_is_help=True, context_settings=HELP_OPTIONS,
                          help="List, install, import and verify model weights.")
app.add_typer(weights_app, name="weights")


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
    except Co2Error as exc:
        for line in exc.details:
            typer.echo(f"error: {line}", err=True)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
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
