"""`python -m broker_aggregator`: The round service: collects personalized v heads over MQTT, averages them (FedAvg) and publishes the signed central v."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from vfer.cli import UserError, log_from_signal_handler, run_cli, setup_logging
from vfer.config_io import masked_dump

if TYPE_CHECKING:
    from broker_aggregator.config import AggregatorConfig

log = logging.getLogger("broker_aggregator")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The round service: collects personalized v heads over MQTT, averages them (FedAvg) and publishes the signed central v."""


def _service_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False, path_type=Path),
            help="aggregator.yaml",
        ),
        click.option(
            "--broker", help="broker URL, e.g. mqtt://127.0.0.1:1883 (overrides broker_url)"
        ),
        click.option(
            "--initial-weights",
            type=click.Path(dir_okay=False, path_type=Path),
            help="safetensors of v for the first central (e.g. BUNDLE/vfer_head.safetensors)",
        ),
        click.option("--classes", help="4, 6 or a comma-separated list of class names"),
        click.option(
            "--state-db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite state file"
        ),
        click.option(
            "--signing-key",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Ed25519 PKCS8 PEM private key",
        ),
        click.option(
            "--insecure-unsigned",
            is_flag=True,
            default=None,
            help="DEV ONLY: publish the central v unsigned",
        ),
        click.option(
            "--mqtt-version",
            type=click.Choice(["5", "3.1.1", "auto"]),
            help="MQTT protocol (auto: 5, else 3.1.1; 3.1.1 means a single worker)",
        ),
        click.option("--worker-id", help="this worker's id (a topic level)"),
        click.option("--rounds", type=int, help="rounds to run, then exit (0: forever)"),
        click.option("--min-submissions", type=int, help="round.min_submissions"),
        click.option("--max-submissions", type=int, help="round.max_submissions"),
        click.option("--deadline-s", type=float, help="round.deadline_s"),
        click.option(
            "--log-level",
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
            help="log level",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _load(kw: dict[str, Any]) -> Any:
    from broker_aggregator.config import load_aggregator_config
    from vfer.classes import parse_classes

    classes = list(parse_classes(kw["classes"])) if kw.get("classes") else None
    overrides = {
        "broker_url": kw.get("broker"),
        "initial_weights": str(kw["initial_weights"]) if kw.get("initial_weights") else None,
        "classes": classes,
        "state_db": str(kw["state_db"]) if kw.get("state_db") else None,
        "signing_key_file": str(kw["signing_key"]) if kw.get("signing_key") else None,
        "insecure_unsigned": kw.get("insecure_unsigned"),
        "worker_id": kw.get("worker_id"),
        "mqtt_version": kw.get("mqtt_version"),
        "round.rounds": kw.get("rounds"),
        "round.min_submissions": kw.get("min_submissions"),
        "round.max_submissions": kw.get("max_submissions"),
        "round.deadline_s": kw.get("deadline_s"),
        "log_level": kw.get("log_level"),
    }
    return load_aggregator_config(kw.get("config"), **overrides)


def _serve(kw: dict[str, Any], leader: bool) -> None:
    from broker_aggregator.service import AggregatorService

    cfg = _load(kw)
    first_start = not Path(cfg.state_db).exists()
    if leader and cfg.initial_weights is not None and (first_start or cfg.initial_weights.exists()):
        from broker_aggregator.config import check_classes_fit_weights

        check_classes_fit_weights(list(cfg.classes), Path(cfg.initial_weights))
    setup_logging(cfg.log_level)
    log.info("effective config: %s", masked_dump(cfg))
    if cfg.signing_key_file is None:
        log.warning("!!! insecure_unsigned: nodes with a fleet key will ignore these centrals !!!")
    if not leader and cfg.rule != "mean":
        raise UserError(
            f"rule {cfg.rule!r} needs every update in the leader's process: run no extra workers"
        )
    if not leader and cfg.central_privacy is not None:
        raise UserError(
            "central_privacy clips every update in the leader's process: run no extra workers"
        )
    if leader:
        _warn_if_toothless(cfg)
    if leader and cfg.initial_weights is None and not Path(cfg.state_db).exists():
        raise UserError("a first start needs --initial-weights (or initial_weights in the config)")
    service = AggregatorService(cfg, leader=leader)

    def _stop(signum: int, frame: FrameType | None) -> None:
        service.stop_event.set()
        log_from_signal_handler(log, "signal %d: stopping", signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    service.run()
    if service.fatal:
        raise UserError(service.fatal)


@cli.command()
@_service_options
def run(**kw: Any) -> None:
    """Run the leader (rounds, policy, signing) with a worker: `run --config aggregator.yaml`."""
    _serve(kw, leader=True)


@cli.command()
@_service_options
def worker(**kw: Any) -> None:
    """Run an extra worker that shares the update stream ($share) with the leader."""
    _serve(kw, leader=False)


def _warn_if_toothless(cfg: AggregatorConfig) -> None:
    """Say once at start when the robust rule protects nothing at the round's minimum size."""
    from broker_aggregator.rules import toothless

    why = toothless(cfg.rule, cfg.robust_fraction, cfg.round.min_submissions)
    if why is not None:
        log.warning("%s (round.min_submissions); raise it or robust_fraction", why)
    sa = cfg.secure_aggregation
    if sa is not None and cfg.rule != "mean":
        groups = cfg.round.min_submissions // sa.min_group_size
        why = toothless(cfg.rule, cfg.robust_fraction, groups)
        if why is not None:
            log.warning(
                "secure aggregation: the rule sees group means, and round.min_submissions "
                "%d makes %d groups of secure_aggregation.min_group_size %d: %s",
                cfg.round.min_submissions, groups, sa.min_group_size,
                why.replace("submissions", "groups"),
            )  # fmt: skip


@cli.command("config-reference")
def config_reference_cmd() -> None:
    """Print the aggregator.yaml reference (docs/aggregator-config.md's generated part)."""
    click.echo(config_reference(), nl=False)


def config_reference() -> str:
    """Markdown tables of every AggregatorConfig key, from the fields' types, defaults and bounds."""
    from broker_aggregator.config import AggregatorConfig
    from vfer.config_io import model_reference

    return model_reference(AggregatorConfig)


def main() -> None:
    run_cli(cli, prog_name="python -m broker_aggregator")
