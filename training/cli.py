"""`python -m training`: the central (lab) side."""

from __future__ import annotations

import click

from training.cli_models import backbone_cmd, export_bundle_cmd, model_summary_cmd
from training.cli_train import register as register_train
from training.experiments.gate_eval_cli import gate_eval_cmd
from training.sim.cli import (
    demo_cmd,
    docker_build_cmd,
    docker_demo_cmd,
    docker_faults_cmd,
    sim_node_cmd,
    sim_setup_cmd,
    simulate_cmd,
)
from training.synthetic.cli import synth_cmd, synth_images_cmd
from vfer.cli import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Central (lab) side: the backbone f, training g and v, the paper's experiments, the fleet simulation."""


cli.add_command(model_summary_cmd)
cli.add_command(backbone_cmd)
cli.add_command(export_bundle_cmd)
cli.add_command(demo_cmd)
cli.add_command(docker_build_cmd)
cli.add_command(docker_demo_cmd)
cli.add_command(docker_faults_cmd)
cli.add_command(simulate_cmd)
cli.add_command(sim_setup_cmd)
cli.add_command(sim_node_cmd)
cli.add_command(synth_cmd)
cli.add_command(synth_images_cmd)
register_train(cli)
cli.add_command(gate_eval_cmd)


def main() -> None:
    run_cli(cli, prog_name="python -m training")
