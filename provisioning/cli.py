"""`python -m provisioning`: Fleet keys, broker configuration, node configs, Raspberry Pi OS images and flashing."""

from __future__ import annotations

import click

from vfer.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Fleet keys, broker configuration, node configs, Raspberry Pi OS images and flashing."""


def main() -> None:
    run_cli(cli, prog_name="python -m provisioning")
