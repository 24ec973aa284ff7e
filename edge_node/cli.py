"""`python -m edge_node`: The Raspberry Pi program: camera, face clips in SQLite, real-time IFER/VFER, nightly personalization, federation client, kiosk page."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import click

from edge_node.cli_evaluate import evaluate_cmd
from edge_node.personalization.cli import adapt_cmd, model_group
from vfer.cli import UserError, run_cli, setup_logging

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The Raspberry Pi program: camera, face clips in SQLite, real-time IFER/VFER, nightly personalization, federation client, kiosk page."""


_PATH = click.Path(path_type=Path)


@cli.command("run")
@click.option("--config", "config_path", type=_PATH, help="node.yaml (default: built-in defaults)")
@click.option(
    "--source", help="picamera2, a webcam index, an rtsp/http URL, a video file or a folder"
)
@click.option("--bundle", type=_PATH, help="model bundle folder")
@click.option("--db", type=_PATH, help="SQLite database of clips")
@click.option("--kiosk-port", type=int, help="serve the kiosk page on this port (enables it)")
@click.option("--no-kiosk", is_flag=True, help="headless, whatever node.yaml says")
@click.option("--face-model", type=_PATH, help="face_detection_short_range.tflite")
@click.option("--loop/--no-loop", default=None, help="files: start again at the end")
@click.option("--max-frames", type=click.IntRange(min=1), help="stop after N frames (tests)")
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), help="stop after S seconds"
)
@click.option(
    "--keep-running", is_flag=True, help="stay up after a file/folder source ends (until SIGTERM)"
)
def run_cmd(
    config_path: Path | None,
    source: str | None,
    bundle: Path | None,
    db: Path | None,
    kiosk_port: int | None,
    no_kiosk: bool,
    face_model: Path | None,
    loop: bool | None,
    max_frames: int | None,
    duration: float | None,
    keep_running: bool,
) -> None:
    """Capture, recognize and record until SIGTERM/SIGINT (or the source ends)."""
    from edge_node.config import load_node_config, require_deployment_context
    from edge_node.service import resolve_face_model, serve, stop_on_signals
    from edge_node.sources import source_kind

    overrides: dict[str, Any] = {
        "camera.source": source,
        "camera.loop": loop,
        "bundle": bundle,
        "db": db,
        "face.model": face_model,
        "kiosk.port": kiosk_port,
        "kiosk.enabled": _kiosk_flag(config_path, kiosk_port, no_kiosk),
    }
    config = load_node_config(config_path, **{k: _plain(v) for k, v in overrides.items()})
    require_deployment_context(config, source_kind(config.camera))
    _check_fleet_classes(config)
    setup_logging(config.log_level)
    face = resolve_face_model(config.face.model, config.bundle)
    stop = threading.Event()
    with stop_on_signals(stop):
        summary = serve(
            config,
            face_model=face,
            stop=stop,
            kiosk=config.kiosk.enabled,
            max_frames=max_frames,
            duration_s=duration,
            keep_running=keep_running,
        )
    click.echo(
        f"{summary.frames} frames ({summary.fps:.1f} fps), {len(summary.clips_saved)} clips saved, "
        f"{summary.clips_discarded} discarded, {summary.corrupt_frames} corrupt frames skipped"
    )


def _kiosk_flag(config_path: Path | None, kiosk_port: int | None, no_kiosk: bool) -> bool | None:
    """``--no-kiosk`` off, ``--kiosk-port`` on, no YAML and no port off (a quick start is
    headless); None: node.yaml says."""
    if no_kiosk:
        return False
    if kiosk_port is not None:
        return True
    return False if config_path is None else None


def _clip_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "frames": row.frame_count,
        "face_ratio": round(row.face_ratio, 4),
        "duration_s": round(row.ended_at - row.started_at, 3),
        "prediction": row.prediction,
        "confidence": round(row.confidence, 4),
        "vfer_probs": dict(zip(row.classes, map(_r4, row.vfer_probs), strict=True)),
        "ifer_mean": dict(zip(row.classes, map(_r4, row.ifer_mean), strict=True)),
        "bundle_id": row.bundle_id,
    }


def _clip_line(row: Any) -> str:
    return (
        f"clip {row.id}: {row.frame_count} frames, face {row.face_ratio:.0%}, "
        f"VFER {row.prediction} ({row.confidence:.2f})"
    )


def _check_fleet_classes(config: Any) -> None:
    """The bundle's classes are the fleet's (node.yaml ``classes``); cheap: the manifest only."""
    from edge_node import bundles
    from edge_node.config import check_bundle_classes
    from vfer.bundle import Bundle, BundleError

    if config.classes is None:
        return
    try:
        found = Bundle.load(bundles.BundleHome(config.bundle).resolve(), verify=False).classes
    except (BundleError, OSError):
        return  # no bundle yet: the service says so with its own message
    check_bundle_classes(config, found)


@cli.command("ingest")
@click.option("--video", required=True, type=_PATH, help="a video file (or a folder of videos)")
@click.option("--db", required=True, type=_PATH, help="SQLite database of clips")
@click.option("--bundle", required=True, type=_PATH, help="model bundle folder")
@click.option("--face-model", type=_PATH, help="face_detection_short_range.tflite")
@click.option("--config", "config_path", type=_PATH, help="node.yaml for face/clips settings")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per stored clip")
def ingest_cmd(
    video: Path,
    db: Path,
    bundle: Path,
    face_model: Path | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Process a video as fast as possible and print the clips stored, with their VFER prediction."""
    from edge_node.config import load_node_config
    from edge_node.service import resolve_face_model, run_node
    from edge_node.store import ClipStore

    if not video.exists():
        raise UserError(f"no such video file or folder: {video}")
    config = load_node_config(
        config_path,
        **{
            "camera.source": str(video),
            "camera.kind": "folder" if video.is_dir() else "file",
            "camera.loop": False,
            "camera.realtime": False,
            "bundle": str(bundle),
            "db": str(db),
            "face.model": _plain(face_model),
            "kiosk.enabled": False,
        },
    )
    setup_logging("WARNING" if config.log_level == "INFO" else config.log_level)
    summary = run_node(config, face_model=resolve_face_model(config.face.model, config.bundle))
    with ClipStore(db) as store:
        rows = [store.clip(i) for i in summary.clips_saved]
    for row in rows:
        click.echo(json.dumps(_clip_json(row)) if as_json else _clip_line(row))
    if not as_json:
        click.echo(
            f"{len(rows)} clips stored from {summary.frames} frames "
            f"({summary.face_frames} with a face, {summary.corrupt_frames} corrupt skipped)"
        )


@cli.command("forget")
@click.option("--all", "everything", is_flag=True, help="delete every clip (required)")
@click.option("--db", required=True, type=_PATH, help="SQLite database of clips")
@click.option(
    "--bundle",
    type=_PATH,
    help="the node's bundle: also drop every personalized head (built from those clips)",
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def forget_cmd(everything: bool, db: Path, bundle: Path | None, yes: bool) -> None:
    """Delete every stored clip and VACUUM the database (and the personalized heads with --bundle).

    An update already sent to the aggregator cannot be recalled: it is averaged into the fleet's
    central model.
    """
    from edge_node.forget import forget_everything
    from edge_node.store import ClipStore

    if not everything:
        raise UserError("say what to forget: --all deletes every clip")
    if not db.is_file():
        raise UserError(f"no such database: {db}")
    with ClipStore(db) as store:
        if not yes:
            click.confirm(f"Delete all {store.count()} clips in {db}?", abort=True)
        done = forget_everything(store, bundle, "forget --all")
        click.echo(f"deleted {done.clips} clips; {db} is {store.size_bytes():,} bytes")
    if bundle is not None:
        click.echo(f"dropped {len(done.heads)} personalized heads; the central head is active")


@cli.command("config-reference")
def config_reference_cmd() -> None:
    """Print the node.yaml reference (docs/config.md's generated part) from the config model."""
    click.echo(config_reference(), nl=False)


def config_reference() -> str:
    """Markdown tables of every NodeConfig section, from the fields' types, defaults and bounds."""
    from edge_node.config import NodeConfig
    from vfer.config_io import model_reference

    return model_reference(NodeConfig)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _r4(x: Any) -> float:
    return round(float(x), 4)


cli.add_command(adapt_cmd)
cli.add_command(model_group)
cli.add_command(evaluate_cmd)


def main() -> None:
    run_cli(cli, prog_name="python -m edge_node")
