"""The exception types users see: the message is printed as a single line on stderr by the CLI."""

from __future__ import annotations

from collections.abc import Sequence


class Co2Error(Exception):
    """A user-facing error (bad input, missing weights, wrong file). Never shown with a traceback.

    `details`: earlier error lines the CLI prints before this one (one per failed input, say)."""

    def __init__(self, message: str = "", details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


class UsageError(Co2Error):
    """A wrong combination of options or arguments: exit code 2, like the parser's own errors."""
