"""`python -m provisioning`: Fleet keys, broker configuration, node configs, Raspberry Pi OS images and flashing."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import click

from vfer.cli import UserError, run_cli, setup_logging

FLEET_DIR = click.option(
    "--dir",
    "fleet",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="the fleet folder (keys, broker files, node files)",
)


def fleet_classes(bundle: Path | None, classes: str | None) -> tuple[str, ...]:
    """The fleet's classes from ``--bundle`` (its manifest) or ``--classes``; 6 by default."""
    from vfer.bundle import Bundle, BundleError
    from vfer.classes import EMOTIONS_6, parse_classes

    if bundle is not None and classes is not None:
        raise UserError("give --bundle or --classes, not both")
    if bundle is not None:
        try:
            return Bundle.load(bundle, verify=False).classes
        except BundleError as exc:
            raise UserError(f"--bundle: {exc}") from None
    return parse_classes(classes) if classes else EMOTIONS_6


def lawful_context(context: str | None) -> str | None:
    """``--context`` checked by the node's own model (workplace and education are refused)."""
    from pydantic import ValidationError

    from edge_node.config import DeploymentConfig

    if context is None:
        return None
    try:
        return DeploymentConfig(context=context).context  # type: ignore[arg-type]
    except ValidationError as exc:
        raise UserError(f"--context {context}: {exc.errors()[0]['msg']}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING, ERROR")
def cli(log_level: str) -> None:
    """Fleet keys, broker configuration, node configs, Raspberry Pi OS images and flashing."""
    setup_logging(log_level)


@cli.command("init-fleet")
@FLEET_DIR
@click.option("--broker-host", required=True, help="host name or address the nodes dial")
@click.option(
    "--broker-name",
    "extra_names",
    multiple=True,
    help="more names/addresses for the server certificate",
)
@click.option("--port", default=8883, show_default=True, type=click.IntRange(1, 65535))
@click.option("--topic-prefix", default="fedvfer", show_default=True)
@click.option(
    "--fleet-size",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="sizes the broker queues",
)
@click.option(
    "--client-certs/--no-client-certs",
    default=False,
    show_default=True,
    help="nodes also present a certificate; revocation adds a CRL",
)
@click.option(
    "--aggregator-port",
    default=8884,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="the aggregator's own TLS listener (loopback-only with client certs)",
)
@click.option(
    "--broker-dir", help="where broker/ is installed on the broker host (default: this folder)"
)
@click.option(
    "--aggregator-dir", help="where aggregator/ is installed on its host (default: this folder)"
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, file_okay=False),
    help="the fleet's model bundle: its classes go into aggregator.yaml and every node.yaml",
)
@click.option("--classes", help="instead of --bundle: 4, 6 or a comma-separated list of names")
@click.option(
    "--context",
    "deployment_context",
    required=True,
    help="where the kiosks stand: public_space, retail, research or other (node.yaml "
    "deployment.context; a live camera needs it). "
    "workplace and education are refused: EU AI Act Art. 5(1)(f), see docs/deployment.md",
)
def init_fleet(
    fleet: Path,
    bundle: Path | None,
    classes: str | None,
    deployment_context: str | None,
    **kw: object,
) -> None:
    """Create a fleet: CA, broker certificate and config, aggregator credentials, signing key."""
    from provisioning.fleet import init_fleet as run

    s = run(  # type: ignore[misc]
        fleet,
        classes=fleet_classes(bundle, classes),
        deployment_context=lawful_context(deployment_context),
        **kw,  # type: ignore[arg-type]
    )
    click.echo(f"fleet ready in {fleet}: broker {s.broker_url}")
    click.echo(f"  broker files:     {fleet}/broker/ (mosquitto.conf is a conf.d drop-in)")
    click.echo(f"  aggregator files: {fleet}/aggregator/ (aggregator.yaml)")


@cli.command("add-node")
@click.argument("name")
@FLEET_DIR
@click.option("--camera", default="picamera2", show_default=True, help="camera.source in node.yaml")
@click.option("--kiosk/--no-kiosk", default=True, show_default=True)
@click.option("--kiosk-port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--retention-days", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True)
)
@click.option(
    "--window",
    default="02:00-05:00",
    show_default=True,
    help="nightly adaptation window HH:MM-HH:MM",
)
@click.option(
    "--files-at",
    default="/etc/fedvfer",
    show_default=True,
    help="where the node's files live on the node",
)
@click.option(
    "--context",
    "deployment_context",
    help="where this kiosk stands (default: the fleet's init-fleet --context)",
)
@click.option(
    "--min-central-version",
    type=click.IntRange(1, 2**53),
    default=None,
    help="the node installs no central older than this (default: the highest given before, "
    "else 1); give the aggregator's current version so a replayed old central is refused",
)
def add_node(
    name: str,
    fleet: Path,
    camera: str,
    kiosk: bool,
    kiosk_port: int,
    retention_days: float,
    window: str,
    files_at: str,
    deployment_context: str | None,
    min_central_version: int | None,
) -> None:
    """New credentials and a node.yaml for node NAME; the broker files are updated."""
    from provisioning.fleet import add_node as run

    start, sep, end = window.partition("-")
    if not sep:
        raise UserError(f"--window {window!r} must be HH:MM-HH:MM")
    folder = run(
        fleet,
        name,
        files_at=files_at,
        camera=camera,
        kiosk=kiosk,
        kiosk_port=kiosk_port,
        retention_days=retention_days,
        window=(start, end),
        context=lawful_context(deployment_context),
        min_central_version=min_central_version,
    )
    click.echo(f"node {name}: {folder} (reload the broker: systemctl reload mosquitto)")


@cli.command("revoke-node")
@click.argument("name")
@FLEET_DIR
def revoke_node(name: str, fleet: Path) -> None:
    """Take node NAME off the broker (password file, and CRL with client certificates)."""
    from provisioning.fleet import revoke_node as run

    run(fleet, name)
    click.echo(f"node {name} revoked; copy broker/ to the broker host and reload mosquitto")


def _read_keys(files: tuple[Path, ...]) -> tuple[str, ...]:
    keys: list[str] = []
    for f in files:
        keys += [
            line.strip()
            for line in f.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    return tuple(keys)


def _wifi(ssid: str | None, password_file: Path | None, country: str) -> Any:
    from provisioning import cloudinit as ci

    if not ssid:
        return None
    if password_file is None:
        raise UserError("--wifi-ssid needs --wifi-password-file")
    return ci.Wifi(ssid, ci.wpa_psk(ssid, password_file.read_text().strip()), country)


@cli.command("image")
@click.option(
    "--base",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Raspberry Pi OS .img or .img.xz",
)
@click.option("--node", required=True, help="node name (add-node it first)")
@FLEET_DIR
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="the node's image to write",
)
@click.option(
    "--route",
    type=click.Choice(["auto", "cloud-init", "firstrun"]),
    default="auto",
    show_default=True,
)
@click.option("--hostname", help="default: the node name")
@click.option("--user", default="kiosk", show_default=True, help="desktop/SSH user")
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="public key file (repeatable)",
)
@click.option(
    "--password-hash-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="crypt hash for the user (openssl passwd -6); default: locked",
)
@click.option("--wifi-ssid")
@click.option("--wifi-password-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--wifi-country", default="GB", show_default=True)
@click.option("--timezone")
@click.option(
    "--package",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="fedvfer wheel/sdist to install from the card",
)
@click.option(
    "--pip-spec",
    default="fedvfer[edge]",
    show_default=True,
    help="what pip installs without --package",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="model bundle folder to put on the card",
)
@click.option(
    "--face-model",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="face_detection_short_range.tflite to put on the card (default: the node downloads it)",
)
@click.option("--kiosk/--no-kiosk", default=True, show_default=True)
@click.option(
    "--boot-mount",
    default="/boot/firmware",
    show_default=True,
    help="where the image mounts its boot partition (/boot before Bookworm)",
)
def image(
    base: Path,
    node: str,
    fleet: Path,
    out: Path,
    route: str,
    hostname: str | None,
    user: str,
    ssh_keys: tuple[Path, ...],
    password_hash_file: Path | None,
    wifi_ssid: str | None,
    wifi_password_file: Path | None,
    wifi_country: str,
    timezone: str | None,
    package: Path | None,
    pip_spec: str,
    bundle: Path | None,
    face_model: Path | None,
    kiosk: bool,
    boot_mount: str,
) -> None:
    """Customize a Raspberry Pi OS image for one node (no root, no loop mounts)."""
    from provisioning import cloudinit as ci
    from provisioning.image import customize

    wifi = _wifi(wifi_ssid, wifi_password_file, wifi_country)
    spec = ci.ImageSpec(
        node=node,
        hostname=hostname or node.replace("_", "-"),
        instance_id=f"fedvfer-{node}-{secrets.token_hex(4)}",
        user=user,
        ssh_keys=_read_keys(ssh_keys),
        password_hash=password_hash_file.read_text().strip() if password_hash_file else None,
        wifi=wifi,
        timezone=timezone,
        pip_spec=pip_spec,
        package_file=package.name if package else None,
        kiosk=kiosk,
        boot_mount=boot_mount,
    )
    files = {"package": package, "bundle": bundle, "face_model": face_model}
    result = customize(base, out, fleet, spec, route=route, **files)  # type: ignore[arg-type]
    click.echo(f"{out}: {result.route} route, {len(result.written)} files on the boot partition")


@cli.command("flash")
@click.option(
    "--image",
    "image_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
)
@click.option(
    "--device", required=True, type=click.Path(path_type=Path), help="the SD card, e.g. /dev/sdb"
)
@click.option("--yes", is_flag=True, help="do not ask before writing")
@click.option("--progress/--no-progress", default=True, show_default=True)
def flash_cmd(image_path: Path, device: Path, yes: bool, progress: bool) -> None:
    """Write an image to a removable card, then read it back and compare SHA-256."""
    from provisioning.flash import DeviceFacts, check_target, flash

    facts = DeviceFacts.from_system()
    check_target(device, facts)  # refuse before asking
    if not yes:
        click.confirm(f"Overwrite everything on {device}?", abort=True)
    digest = flash(image_path, device, facts=facts, progress=progress)
    click.echo(f"{device}: written and verified (sha256 {digest})")


@cli.command("pi-check")
@click.option("--release", "releases", multiple=True, type=click.Choice(["bookworm", "trixie"]))
@click.option("--cache", type=click.Path(path_type=Path), help="default: /var/cache/fedvfer")
@click.option("--shared", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--fresh", is_flag=True, help="install into a new root (debootstrap stays cached)")
@click.option("--video-seconds", type=click.FloatRange(min=1), help="run on the video's start only")
def pi_check(
    releases: tuple[str, ...],
    cache: Path | None,
    shared: Path | None,
    fresh: bool,
    video_seconds: float | None,
) -> None:
    """The node in arm64 Debian roots under qemu (root only); see docs/deployment.md."""
    from provisioning.picheck import run_pi_check
    from provisioning.piroot import default_cache

    data = shared or Path(__file__).resolve().parents[2] / "shared"
    chosen = list(releases or ("bookworm", "trixie"))
    cache = cache or default_cache()
    if not run_pi_check(chosen, cache, data, fresh=fresh, video_seconds=video_seconds):
        raise SystemExit(1)


def main() -> None:
    run_cli(cli, prog_name="python -m provisioning")
