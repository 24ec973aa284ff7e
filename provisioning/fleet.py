"""A fleet folder: its CA and keys, the broker's files, the aggregator's and every node's files.

::

    FLEET/fleet.json                 settings and the node registry (password hashes, no secrets)
    FLEET/ca/                        ca.crt, ca.key (0600), crl.pem
    FLEET/fleet_public_key.pem       Ed25519 public key that verifies central bundles
    FLEET/vouching/                  vouching_key.pem (0600; never leaves this machine),
                                     revocations.json (signed list of revoked identity keys)
    FLEET/vouching_public_key.pem    Ed25519 public key that vouches for node identity keys
    FLEET/broker/                    mosquitto.conf, passwd, acl, ca.crt, server.crt/.key, crl.pem
    FLEET/aggregator/                aggregator.yaml, password, signing_key.pem, ca.crt,
                                     vouching_public_key.pem (revocations.json once one exists)
    FLEET/nodes/NAME/                node.yaml, broker_password, ca.crt, fleet_public_key.pem,
                                     identity_key.pem (0600), identity_voucher.json,
                                     vouching_public_key.pem
                                     (client.crt, client.key with client certificates)

The broker files are regenerated from ``fleet.json`` after every change, so that revoking a node
is: mark it, rewrite ``passwd`` (and the CRL), and make the broker reload (SIGHUP).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edge_node.config import NodeConfig
from provisioning import mosquitto as mq
from provisioning import pki
from provisioning.identity import (
    IDENTITY_KEY,
    IDENTITY_VOUCHER,
    VOUCHING_PUBLIC,
    give_identity,
    revoke_identity,
    vouching_key,
)
from vfer import signing
from vfer.atomic import atomic_write_text
from vfer.classes import EMOTIONS_6, validate_classes
from vfer.cli import UserError
from vfer.config_io import validate_model
from vfer.topics import DEFAULT_PREFIX, Topics, check_node_id

log = logging.getLogger(__name__)

FLEET_FILE = "fleet.json"
PUBLIC_KEY = signing.PUBLIC_KEY_NAME
NODE_FILES_AT = "/etc/fedvfer"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeRecord(_Model):
    password_hash: str = Field(description="mosquitto $7$ hash of the node's broker password")
    revoked: bool = Field(False, description="revoked nodes are left out of the password file")
    cert_serial: int | None = Field(None, description="serial of the node's client certificate")
    identity_fingerprint: str | None = Field(
        None, description="SHA-256 of the node's identity public key (secure aggregation)"
    )
    created: str = Field(description="UTC time the credentials were made")


class FleetSettings(_Model):
    broker_host: str = Field(description="host name or address nodes use to reach the broker")
    broker_names: list[str] = Field(description="names and addresses in the server certificate")
    port: int = Field(8883, ge=1, le=65535, description="TLS listener for the fleet")
    topic_prefix: str = Field(DEFAULT_PREFIX, description="topic prefix shared by the fleet")
    fleet_size: int = Field(100, ge=1, description="expected nodes; sizes the broker's queues")
    client_certs: bool = Field(False, description="nodes also present a certificate (with a CRL)")
    aggregator_port: int = Field(8884, ge=1, le=65535, description="loopback listener (certs)")
    broker_dir: str = Field(description="where the broker files live on the broker host")
    aggregator_dir: str = Field(description="where the aggregator files live on its host")
    aggregator_password_hash: str = Field(description="mosquitto hash of the aggregator password")
    classes: list[str] = Field(
        default_factory=lambda: list(EMOTIONS_6),
        description="the fleet's classes in the heads' output order (aggregator.yaml, node.yaml)",
    )
    deployment_context: Literal["public_space", "retail", "research", "other"] | None = Field(
        None, description="where the fleet's kiosks stand (node.yaml deployment.context)"
    )
    share_group: str | None = Field(
        None,
        description="secret $share group of the aggregator workers, as written into "
        "aggregator.yaml (None: a fleet made before it existed, which uses the public default)",
    )
    min_central_version: int = Field(
        1,
        ge=1,
        le=2**53,
        description="oldest central version a newly added node may install (node.yaml)",
    )
    nodes: dict[str, NodeRecord] = Field(default_factory=dict, description="node registry")

    @property
    def broker_url(self) -> str:
        return f"mqtts://{self.broker_host}:{self.port}"


def _utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_fleet(fleet: Path) -> FleetSettings:
    path = fleet / FLEET_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{fleet} is not a fleet folder (no {FLEET_FILE}; run init-fleet)"
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    return validate_model(FleetSettings, data, source=str(path))


def save_fleet(fleet: Path, settings: FleetSettings) -> None:
    atomic_write_text(fleet / FLEET_FILE, settings.model_dump_json(indent=2) + "\n")


def _ca(fleet: Path) -> pki.KeyPair:
    return pki.KeyPair((fleet / "ca/ca.crt").read_bytes(), (fleet / "ca/ca.key").read_bytes())


def init_fleet(
    fleet: Path,
    *,
    broker_host: str,
    extra_names: tuple[str, ...] = (),
    port: int = 8883,
    topic_prefix: str = DEFAULT_PREFIX,
    fleet_size: int = 100,
    client_certs: bool = False,
    aggregator_port: int = 8884,
    broker_dir: str | None = None,
    aggregator_dir: str | None = None,
    classes: tuple[str, ...] | list[str] = EMOTIONS_6,
    deployment_context: str | None = None,
) -> FleetSettings:
    """Create a new fleet folder; refuses one that already holds a fleet."""
    Topics(topic_prefix)  # validates
    classes = list(validate_classes(list(classes)))
    if (fleet / FLEET_FILE).exists():
        raise UserError(f"{fleet} already holds a fleet; refusing to overwrite its keys")
    fleet = fleet.resolve()
    names = list(
        dict.fromkeys([broker_host, *extra_names, *(["127.0.0.1"] if client_certs else [])])
    )
    ca = _write_keys(fleet, broker_host, names)
    password = mq.new_password()
    pki.write_private(fleet / "aggregator/password", (password + "\n").encode())
    settings = FleetSettings(
        broker_host=broker_host,
        broker_names=names,
        port=port,
        topic_prefix=topic_prefix,
        fleet_size=fleet_size,
        client_certs=client_certs,
        aggregator_port=aggregator_port,
        broker_dir=broker_dir or str(fleet / "broker"),
        aggregator_dir=aggregator_dir or str(fleet / "aggregator"),
        aggregator_password_hash=mq.hash_password(password),
        classes=classes,
        deployment_context=deployment_context,  # type: ignore[arg-type]
        share_group=mq.new_share_group(),
    )
    save_fleet(fleet, settings)
    pki.write_public(fleet / "aggregator/ca.crt", ca.cert_pem)
    vouching_key(fleet)
    atomic_write_text(fleet / "aggregator/aggregator.yaml", aggregator_yaml(settings))
    write_broker_files(fleet, settings)
    log.info("fleet created in %s (broker %s)", fleet, settings.broker_url)
    return settings


def _write_keys(fleet: Path, broker_host: str, names: list[str]) -> pki.KeyPair:
    """A new CA, the broker's server certificate and the fleet's Ed25519 key; returns the CA."""
    ca = pki.make_ca()
    pki.write_public(fleet / "ca/ca.crt", ca.cert_pem)
    pki.write_private(fleet / "ca/ca.key", ca.key_pem)
    server = pki.issue_leaf(ca, broker_host, server_names=names)
    pki.write_public(fleet / "broker/server.crt", server.cert_pem)
    pki.write_private(fleet / "broker/server.key", server.key_pem)
    private, public = signing.new_signing_key()
    pki.write_private(fleet / "aggregator" / signing.PRIVATE_KEY_NAME, private)
    pki.write_public(fleet / PUBLIC_KEY, public)
    return ca


def aggregator_yaml(s: FleetSettings) -> str:
    """The aggregator's config: its own listener, credentials, signing key and the fleet's
    secret share group (never given to nodes)."""
    host = "127.0.0.1" if s.client_certs else s.broker_host
    d = s.aggregator_dir.rstrip("/")
    data: dict[str, Any] = {
        "broker_url": f"mqtts://{host}:{s.aggregator_port}",
        "username": mq.AGGREGATOR_USER,
        "password_file": f"{d}/password",
        "ca_file": f"{d}/ca.crt",
        "signing_key_file": f"{d}/{signing.PRIVATE_KEY_NAME}",
        "topic_prefix": s.topic_prefix,
        "classes": list(s.classes),
        "mqtt_version": "5",
    }
    if s.share_group is not None:
        data["share_group"] = s.share_group
    return (
        "# The aggregator's broker credentials, written by `python -m provisioning init-fleet`.\n"
        + (yaml.safe_dump(data, sort_keys=False))
    )


def write_broker_files(fleet: Path, s: FleetSettings) -> None:
    """Regenerate passwd, acl, mosquitto.conf and the CRL from the registry."""
    nodes = {name: n.password_hash for name, n in s.nodes.items() if not n.revoked}
    aggregator = {mq.AGGREGATOR_USER: s.aggregator_password_hash}
    broker = fleet / "broker"
    pki.write_private(broker / "passwd", mq.password_file(nodes).encode())
    pki.write_private(broker / "aggregator_passwd", mq.password_file(aggregator).encode())
    atomic_write_text(broker / "acl", mq.acl_file(s.topic_prefix))
    conf = mq.mosquitto_conf(
        mq.BrokerFiles(s.broker_dir),
        port=s.port,
        fleet_size=s.fleet_size,
        client_certs=s.client_certs,
        aggregator_port=s.aggregator_port,
    )
    atomic_write_text(broker / "mosquitto.conf", conf)
    ca = _ca(fleet)
    revoked = [n.cert_serial for n in s.nodes.values() if n.revoked and n.cert_serial is not None]
    crl = pki.make_crl(ca, revoked)
    pki.write_public(fleet / "ca/crl.pem", crl)
    pki.write_public(broker / "crl.pem", crl)
    pki.write_public(broker / "ca.crt", ca.cert_pem)


def check_node_name(name: str) -> str:
    try:
        check_node_id(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if name == mq.AGGREGATOR_USER:
        raise UserError(f"{name!r} is the aggregator's user name; pick another node name")
    if name.startswith(mq.RESERVED_CLIENT_PREFIX):
        raise UserError(
            f"{name!r}: names starting with {mq.RESERVED_CLIENT_PREFIX!r} are the aggregator's "
            "client ids (a node's client id is its name); pick another node name"
        )
    return name


def node_config(
    s: FleetSettings,
    name: str,
    *,
    files_at: str = NODE_FILES_AT,
    camera: str = "picamera2",
    kiosk: bool = True,
    kiosk_port: int = 8080,
    retention_days: float = 30.0,
    window: tuple[str, str] = ("02:00", "05:00"),
    data_dir: str = "/var/lib/fedvfer",
    context: str | None = None,
) -> dict[str, Any]:
    """The node's ``node.yaml`` as a dict, validated by the node's own model."""
    d = files_at.rstrip("/")
    federation: dict[str, Any] = {
        "enabled": True,
        "broker_url": s.broker_url,
        "username": name,
        "password_file": f"{d}/broker_password",
        "ca_file": f"{d}/ca.crt",
        "fleet_public_key": f"{d}/{PUBLIC_KEY}",
        "topic_prefix": s.topic_prefix,
        # The broker speaks 5; "auto" would first probe with a clean session, and the broker
        # gives every node login its user name as client id, so the probe would end the
        # node's own persistent session.
        "mqtt_version": "5",
        "min_central_version": s.min_central_version,
        "identity_key_file": f"{d}/{IDENTITY_KEY}",
        "identity_voucher_file": f"{d}/{IDENTITY_VOUCHER}",
        "vouching_public_key": f"{d}/{VOUCHING_PUBLIC}",
    }
    if s.client_certs:
        federation |= {"cert_file": f"{d}/client.crt", "key_file": f"{d}/client.key"}
    data: dict[str, Any] = {
        "node_id": name,
        "bundle": f"{data_dir}/bundle",
        "db": f"{data_dir}/fedvfer.db",
        "camera": {"source": camera},
        "kiosk": {"enabled": kiosk, "host": "127.0.0.1", "port": kiosk_port},
        "retention": {"max_age_days": retention_days},
        "federation": federation,
        "adaptation": {"enabled": True, "window_start": window[0], "window_end": window[1]},
        "classes": list(s.classes),
    }
    where = context or s.deployment_context
    if where is not None:
        data["deployment"] = {"context": where}
    validate_model(NodeConfig, data, source=f"node.yaml for {name}")
    return data


def add_node(
    fleet: Path, name: str, *, min_central_version: int | None = None, **config: Any
) -> Path:
    """New credentials and a ``node.yaml`` for ``name``; returns the node's folder.

    ``min_central_version`` raises the fleet's floor (kept in fleet.json for later nodes): the
    node refuses any central older than it, even a validly signed one replayed from the past.
    """
    fleet = fleet.resolve()
    s = load_fleet(fleet)
    check_node_name(name)
    if min_central_version is not None:
        if min_central_version < 1:
            raise UserError(f"--min-central-version must be at least 1, got {min_central_version}")
        s.min_central_version = max(s.min_central_version, min_central_version)
    if name in s.nodes and not s.nodes[name].revoked:
        raise UserError(f"node {name!r} is already in the fleet (revoke-node it first)")
    data = node_config(s, name, **config)
    folder = fleet / "nodes" / name
    if folder.exists():
        shutil.rmtree(folder)
    password = mq.new_password()
    pki.write_private(folder / "broker_password", (password + "\n").encode())
    pki.write_public(folder / "ca.crt", (fleet / "ca/ca.crt").read_bytes())
    pki.write_public(folder / PUBLIC_KEY, (fleet / PUBLIC_KEY).read_bytes())
    fingerprint = give_identity(fleet, folder, name)
    serial = None
    if s.client_certs:
        leaf = pki.issue_leaf(_ca(fleet), name)
        pki.write_public(folder / "client.crt", leaf.cert_pem)
        pki.write_private(folder / "client.key", leaf.key_pem)
        serial = leaf.cert.serial_number
    header = f"# Node {name}, written by `python -m provisioning add-node`; see docs/config.md.\n"
    atomic_write_text(folder / "node.yaml", header + yaml.safe_dump(data, sort_keys=False))
    s.nodes[name] = NodeRecord(
        password_hash=mq.hash_password(password),
        cert_serial=serial,
        identity_fingerprint=fingerprint,
        created=_utc(),
    )
    save_fleet(fleet, s)
    write_broker_files(fleet, s)
    log.info("node %s added", name)
    return folder


def revoke_node(fleet: Path, name: str) -> None:
    """Take ``name`` out of the password file (and put its certificate on the CRL); its secret
    files are deleted. The broker refuses it once it reloads (SIGHUP)."""
    fleet = fleet.resolve()
    s = load_fleet(fleet)
    if name not in s.nodes:
        raise UserError(f"node {name!r} is not in the fleet")
    if s.nodes[name].revoked:
        raise UserError(f"node {name!r} is already revoked")
    s.nodes[name] = s.nodes[name].model_copy(update={"revoked": True})
    save_fleet(fleet, s)
    write_broker_files(fleet, s)
    revoke_identity(fleet, fleet / "nodes" / name)
    for secret in ("broker_password", "client.key", IDENTITY_KEY):
        (fleet / "nodes" / name / secret).unlink(missing_ok=True)
    log.info("node %s revoked; reload the broker (systemctl reload mosquitto)", name)
