"""`python -m co2cli.cli`: the `co2` command."""

from co2cli.cli import main

main()
