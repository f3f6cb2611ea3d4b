"""The one exception type users see: its message is printed as a single line on stderr by the CLI."""


class Co2Error(Exception):
    """A user-facing error (bad input, missing weights, wrong file). Never shown with a traceback."""
