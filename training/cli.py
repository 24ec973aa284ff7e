"""`python -m training`: Central (lab) side: the backbone f, training g and v, the paper's experiments, and the fleet simulation."""

from __future__ import annotations

import click

from vfer.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Central (lab) side: the backbone f, training g and v, the paper's experiments, and the fleet simulation."""


def main() -> None:
    run_cli(cli, prog_name="python -m training")
