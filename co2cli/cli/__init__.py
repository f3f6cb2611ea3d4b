"""The `co2` command line: parse options, gather inputs (co2cli.inputs), call the library, format and print.

One module per command group, registered on the app when this package is imported: `localize`, `extract`
(extract-features, extract-flow), `evaluate`, `train`, `weights` (and sample-video). `options` declares every
shared option once; `batches` runs a batch with progress and writes its summary; `app` holds the typer app and
the entry point `main` (`co2 = "co2cli.cli:main"`).
"""

from __future__ import annotations

from co2cli.cli import localize, evaluate, extract, train, weights  # noqa: F401, I001 - registers the commands in help order
from co2cli.cli.app import app, main
from co2cli.cli.localize import OutputFormat, output_format
from co2cli.errors import UsageError
from co2cli.inputs import named_inputs

__all__ = ["OutputFormat", "UsageError", "app", "main", "named_inputs", "output_format"]
