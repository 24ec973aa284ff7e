"""`python -m edge_node adapt` and `python -m edge_node model ...`: personalization and bundle versions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from edge_node.bundles import BundleHome
from edge_node.personalization.params import AdaptParams
from edge_node.personalization.run import AdaptResult
from vfer import personalization_defaults as d
from vfer.cli import UserError
from vfer.gate import GateOptions
from vfer.privacy.options import PrivacyOptions


def print_result(r: AdaptResult) -> None:
    click.echo(f"clips stored: {r.clips_total}; below p_threshold: {r.below_threshold}")
    click.echo(f"{'class':<12} {'candidates':>10} {'selected':>9}")
    for c in r.classes:
        click.echo(f"{c:<12} {r.candidates_per_class[c]:>10} {r.selected_per_class[c]:>9}")
    click.echo(f"{r.status}: {r.reason}")
    if r.loss_before is not None:
        click.echo(
            f"pseudo-label loss: central {r.loss_before:.4f} -> personalized {r.loss_after:.4f}"
        )
    if r.new_version:
        click.echo(
            f"new bundle {r.new_version} (from {r.base_version}) is active; step model changed: {r.step_changed}"
        )
    if r.privacy is not None:
        p = r.privacy
        click.echo(
            f"privacy: epsilon {p['epsilon_night']:.3g} tonight, {p['epsilon_spent']:.3g} of "
            f"{p['epsilon_window']:g} spent over {p['window_nights']} nights (delta {p['delta']:g})"
        )
    click.echo(f"took {r.seconds:.1f} s")


@click.command("adapt")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="node.yaml"
)
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False), help="clip database")
@click.option(
    "--bundle", type=click.Path(path_type=Path), help="model bundle (folder or managed link)"
)
@click.option("--p", "p", type=click.IntRange(min=0), help=f"at most P clips per class [{d.P}]")
@click.option(
    "--p-threshold",
    type=click.FloatRange(0, 1),
    help=f"minimum pseudo-label confidence [{d.P_THRESHOLD}]",
)
@click.option("--epochs", type=click.IntRange(min=1), help=f"fine-tuning epochs [{d.EPOCHS}]")
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), help=f"Adam learning rate [{d.LR}]"
)
@click.option(
    "--min-clips",
    type=click.IntRange(min=1),
    help=f"do not adapt below this many selected clips [{d.MIN_CLIPS}]",
)
@click.option(
    "--nightly",
    is_flag=True,
    help="the timer's mode: skip if tonight's adaptation already ran (service or timer), else record it",
)
@click.option(
    "--gate",
    "gate",
    help="the safety gate: 'off', or its options as JSON (default: node.yaml's adaptation.gate_*)",
)
@click.option(
    "--teacher",
    type=click.Choice(["g", "external", "ensemble"]),
    help="whose probabilities make the pseudo labels (default: node.yaml's adaptation.teacher)",
)
@click.option(
    "--balance",
    type=float,
    callback=lambda _ctx, _param, value: check_balance(value),
    help="class-balanced selection: the most one class may keep per clip of the smallest, 1..100; "
    "0: the paper's rule (default: node.yaml's adaptation.selection)",
)
@click.option(
    "--l2sp",
    type=click.FloatRange(0, 100),
    help="L2 pull towards the central v while fine-tuning, 0 = off (default: node.yaml's adaptation.l2sp)",
)
@click.option(
    "--gate-report", is_flag=True, help="record the gate's verdict but never block (simulations)"
)
@click.option(
    "--privacy",
    callback=lambda _ctx, _param, value: parse_privacy(value),
    hidden=True,
    help="the node's loop: adaptation.privacy as JSON, or 'off' (default: node.yaml's)",
)
@click.option(
    "--gap-s",
    type=click.FloatRange(min=0, min_open=True),
    hidden=True,
    help="the node's loop: clips closer than this are one visit (default: node.yaml's clips.gap_s)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option(
    "--night",
    hidden=True,
    help="the node's loop: the night (YYYY-MM-DD) this run counts for, marked done with it",
)
@click.option(
    "--result",
    "result_file",
    type=click.Path(path_type=Path, dir_okay=False),
    hidden=True,
    help="the node's child protocol: write the typed report (and v's weights beside it) here",
)
def adapt_cmd(
    config_path: Path | None,
    db: Path | None,
    bundle: Path | None,
    nightly: bool,
    gate: str | None,
    gate_report: bool,
    as_json: bool,
    night: str | None,
    result_file: Path | None,
    **flags: Any,
) -> None:
    """Personalize v once from the stored clips (the nightly job) and switch to the new bundle.

    ``flags``: the parameters (--p, --p-threshold, --epochs, --lr, --min-clips, --teacher,
    --balance, --l2sp); None where not given, so node.yaml's value holds.
    """
    from edge_node.config import load_node_config
    from edge_node.personalization.run import nightly_adapt, run_adapt

    cfg = load_node_config(config_path, db=db, bundle=bundle)
    flags["gap_s"] = flags["gap_s"] or cfg.clips.gap_s
    params = AdaptParams.build(cfg.adaptation, **flags)
    if gate is not None:
        params = replace(params, gate=parse_gate(gate))
    if gate_report:
        params = replace(params, gate_enforce=False)
    if nightly:
        from datetime import datetime

        when = datetime.now()
        result = nightly_adapt(cfg.db, cfg.bundle, params, cfg.adaptation.window_start, when)
        if result is None:
            click.echo("tonight is already done: not adapting again")
            return
    else:
        result = run_adapt(cfg.db, cfg.bundle, params, night)
    _answer(result, cfg.db, result_file, as_json)


def _answer(result: AdaptResult, db: Path, result_file: Path | None, as_json: bool) -> None:
    """To the parent node (it records the result), or recorded here and printed for people."""
    if result_file is not None:
        from edge_node.personalization.child import write_child_result

        write_child_result(result_file, result)
        return
    from edge_node.personalization.results import record
    from edge_node.store import ClipStore

    with ClipStore(db) as store:
        record(store, result.report())
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        print_result(result)


def check_balance(value: float | None) -> float | None:
    """``--balance``: 0 (off) or 1..100; a clear error otherwise (NaN included)."""
    if value is not None and value != 0 and not 1.0 <= value <= 100.0:
        raise click.BadParameter(f"must be 0 (off) or in 1..100, got {value}")
    return value


def parse_privacy(text: str | None) -> PrivacyOptions | None:
    """``--privacy off`` or ``--privacy '{"enabled": true, ...}'``; None: not given."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return PrivacyOptions(enabled=False)
    try:
        return PrivacyOptions.model_validate_json(text)
    except ValueError as exc:
        raise click.BadParameter(f"not adaptation.privacy settings: {exc}") from None


def parse_gate(text: str) -> GateOptions | None:
    """``--gate off`` or ``--gate '{"min_classes": 2, ...}'``; a clear error otherwise."""
    if text.strip().lower() == "off":
        return None
    try:
        return GateOptions(**json.loads(text))
    except (ValueError, TypeError) as exc:
        raise UserError(f"--gate {text!r}: {exc}") from None


@click.group("model")
def model_group() -> None:
    """The node's bundle versions: status and rollback."""


@model_group.command("status")
@click.option("--bundle", required=True, type=click.Path(path_type=Path))
def model_status(bundle: Path) -> None:
    """Which bundle is active, which is previous, which is the central base."""
    home = BundleHome(bundle)
    m = home.active().manifest
    click.echo(
        f"active: {m.head_version} (round {m.federation_round}, personalized {m.personalized})"
    )
    state = home.installed()
    click.echo(
        f"previous: {state.previous or '-'}; central base: {state.central or m.head_version} "
        f"(federation v{state.central_version})"
    )


@model_group.command("rollback")
@click.option("--bundle", required=True, type=click.Path(path_type=Path))
def model_rollback(bundle: Path) -> None:
    """Go back to the previous bundle (the node picks it up at its next clip)."""
    now = BundleHome(bundle).rollback()
    click.echo(f"active bundle is now {now}")


@model_group.command("install-central")
@click.option("--bundle", required=True, type=click.Path(path_type=Path))
@click.option(
    "--weights",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="v's trainable weights (safetensors), already verified by the node",
)
@click.option("--version", "version", required=True, type=click.IntRange(min=1, max=2**53))
@click.option("--round", "round_id", required=True, type=click.IntRange(min=0, max=2**53))
@click.option("--classes", required=True, help="the central's classes, comma-separated")
def model_install_central(
    bundle: Path, weights: Path, version: int, round_id: int, classes: str
) -> None:
    """Write a central v the node has verified as a new bundle version (the node runs this)."""
    from edge_node.personalization.heads import install_central
    from vfer import weights as wio

    name = install_central(bundle, version, round_id, tuple(classes.split(",")), wio.load(weights))
    click.echo(f"central v{version} installed as {name}")
