"""`python -m edge_node`: The Raspberry Pi program: camera, face clips in SQLite, real-time IFER/VFER, nightly personalization, federation client, kiosk page."""

from __future__ import annotations

import click

from vfer.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The Raspberry Pi program: camera, face clips in SQLite, real-time IFER/VFER, nightly personalization, federation client, kiosk page."""


def main() -> None:
    run_cli(cli, prog_name="python -m edge_node")
