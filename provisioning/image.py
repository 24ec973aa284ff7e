"""Customize a Raspberry Pi OS image for one node by editing its FAT boot partition in place.

Two routes, picked from the image (``--route auto``): Raspberry Pi OS images that ship
cloud-init (Trixie, 2025-11 and later) carry ``user-data`` on the boot partition and get our
``user-data``, ``network-config`` and ``meta-data``; older images get ``firstrun.sh`` run once
from ``cmdline.txt``. Either way ``fedvfer/`` on the boot partition holds the installer, the
systemd units, and the node's config and credentials, which the installer moves to /etc/fedvfer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from provisioning import cloudinit as ci
from provisioning.fatimage import FatPartition, prepare_image
from provisioning.fleet import PUBLIC_KEY, load_fleet
from provisioning.identity import IDENTITY_KEY, IDENTITY_VOUCHER, VOUCHING_PUBLIC
from provisioning.installer import FACE_MODEL, UNITS, install_sh
from vfer.cli import UserError

log = logging.getLogger(__name__)

Route = Literal["auto", "cloud-init", "firstrun"]
UNITS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
#: what the node gets from its fleet folder; the last five only where add-node made them (client
#: certificates with --client-certs; the identity for secure aggregation in fleets since it)
NODE_FILES = (
    "node.yaml", "broker_password", "ca.crt", PUBLIC_KEY, "client.crt", "client.key",
    IDENTITY_KEY, IDENTITY_VOUCHER, VOUCHING_PUBLIC,
)  # fmt: skip


@dataclass
class ImageResult:
    route: str
    written: list[str] = field(default_factory=list)


def node_files(fleet: Path, node: str) -> dict[str, bytes]:
    """The node's config and credentials from the fleet folder (refusing revoked nodes)."""
    s = load_fleet(fleet)
    record = s.nodes.get(node)
    if record is None:
        raise UserError(f"node {node!r} is not in the fleet (add-node it first)")
    if record.revoked:
        raise UserError(f"node {node!r} is revoked; add it again for new credentials")
    folder = fleet / "nodes" / node
    files = {name: (folder / name).read_bytes() for name in NODE_FILES if (folder / name).exists()}
    for needed in ("node.yaml", "broker_password", "ca.crt", PUBLIC_KEY):
        if needed not in files:
            raise UserError(f"{folder / needed} is missing; add the node again")
    return files


def detect_route(fat: FatPartition) -> Literal["cloud-init", "firstrun"]:
    """cloud-init images ship a ``user-data`` file on the boot partition; older ones do not."""
    return "cloud-init" if fat.exists("user-data") else "firstrun"


def customize(
    base: Path,
    out: Path,
    fleet: Path,
    spec: ci.ImageSpec,
    *,
    route: Route = "auto",
    package: Path | None = None,
    bundle: Path | None = None,
    units_dir: Path = UNITS_DIR,
    face_model: Path | None = None,
) -> ImageResult:
    """Write ``out``: ``base`` (``.img`` or ``.img.xz``) with the node's first boot on it."""
    files = node_files(fleet, spec.node)
    units = {name: units_dir / name for name in UNITS}
    missing = [str(p) for p in units.values() if not p.exists()]
    if missing:
        raise UserError(f"systemd units missing: {', '.join(missing)}")
    if package is not None and not package.is_file():
        raise UserError(f"--package {package} is not a file")
    if bundle is not None and not bundle.is_dir():
        raise UserError(f"--bundle {bundle} is not a folder")
    if face_model is not None and not face_model.is_file():
        raise UserError(f"--face-model {face_model} is not a file")
    # the node looks for its face detector in <state>/models/ beside its bundle; the installer
    # copies fedvfer/models/ there (or downloads the model when the card has none)
    models = {FACE_MODEL: face_model.read_bytes()} if face_model is not None else {}
    prepare_image(base, out)
    try:
        return _write(FatPartition.boot_of(out), files, units, spec, route, package, bundle, models)
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _write(
    fat: FatPartition,
    files: dict[str, bytes],
    units: dict[str, Path],
    spec: ci.ImageSpec,
    route: Route,
    package: Path | None,
    bundle: Path | None,
    models: dict[str, bytes],
) -> ImageResult:
    chosen = detect_route(fat) if route == "auto" else route
    result = ImageResult(chosen)

    def put(path: str, data: bytes) -> None:
        fat.write(path, data)
        result.written.append(path)

    d = ci.BOOT_DIR
    for name, data in files.items():
        put(f"{d}/etc/{name}", data)
    for name, path in units.items():
        put(f"{d}/systemd/{name}", path.read_bytes())
    for name, data in models.items():
        put(f"{d}/models/{name}", data)
    put(f"{d}/install.sh", install_sh(spec).encode())
    if package is not None:
        put(f"{d}/dist/{package.name}", package.read_bytes())
    if bundle is not None:
        for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
            put(f"{d}/bundle/{f.relative_to(bundle).as_posix()}", f.read_bytes())
    if chosen == "cloud-init":
        put("user-data", ci.user_data(spec).encode())
        put("network-config", ci.network_config(spec).encode())
        put("meta-data", ci.meta_data(spec).encode())
    else:
        put("firstrun.sh", ci.firstrun_sh(spec).encode())
    if fat.exists("cmdline.txt"):
        current = fat.read("cmdline.txt").decode()
        put("cmdline.txt", ci.cmdline(current, spec, firstrun=chosen == "firstrun").encode())
    elif chosen == "firstrun":
        raise UserError("the boot partition has no cmdline.txt; is this a Raspberry Pi OS image?")
    if spec.ssh_keys:
        put("ssh", b"")
    log.info("image for node %s: %s route, %d files", spec.node, chosen, len(result.written))
    return result
