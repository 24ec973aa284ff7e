"""`python -m broker_aggregator`: The round service: collects personalized v heads over MQTT, averages them (FedAvg) and publishes the signed central v."""

from __future__ import annotations

import click

from vfer.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The round service: collects personalized v heads over MQTT, averages them (FedAvg) and publishes the signed central v."""


def main() -> None:
    run_cli(cli, prog_name="python -m broker_aggregator")
