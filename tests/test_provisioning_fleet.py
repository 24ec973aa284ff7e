"""The fleet folder: keys in the agreed formats, node.yaml loaded by the node's own loader,
aggregator.yaml, revocation, and the command line."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge_node.config import load_node_config
from provisioning.fleet import add_node, init_fleet, load_fleet, revoke_node
from tests.support.mosquitto import verify_password
from vfer.cli import UserError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    d = tmp_path / "fleet"
    init_fleet(d, broker_host="broker.lan", extra_names=("10.0.0.5",), fleet_size=50)
    return d


def test_layout_and_secret_modes(fleet: Path) -> None:
    for secret in ("ca/ca.key", "broker/server.key", "broker/passwd", "broker/aggregator_passwd",
                   "aggregator/password", "aggregator/signing_key.pem"):  # fmt: skip
        assert _mode(fleet / secret) == 0o600, secret
    for public in ("ca/ca.crt", "broker/ca.crt", "broker/crl.pem", "fleet_public_key.pem"):
        assert _mode(fleet / public) == 0o644, public
    conf = (fleet / "broker/mosquitto.conf").read_text()
    assert f"password_file {fleet.resolve()}/broker/passwd" in conf
    assert f"password_file {fleet.resolve()}/broker/aggregator_passwd" in conf
    assert "max_queued_messages 10000" in conf


def test_signing_key_formats(fleet: Path) -> None:
    private = serialization.load_pem_private_key(
        (fleet / "aggregator/signing_key.pem").read_bytes(), password=None
    )
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert b"BEGIN PRIVATE KEY" in (fleet / "aggregator/signing_key.pem").read_bytes()  # PKCS8
    public_pem = (fleet / "fleet_public_key.pem").read_bytes()
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(private.sign(b"bundle"), b"bundle")


def test_server_certificate_chain(fleet: Path) -> None:
    ca = x509.load_pem_x509_certificate((fleet / "ca/ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((fleet / "broker/server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.lan"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_aggregator_yaml_has_exactly_the_agreed_keys(fleet: Path) -> None:
    data = yaml.safe_load((fleet / "aggregator/aggregator.yaml").read_text())
    assert set(data) == {
        "broker_url",
        "username",
        "password_file",
        "ca_file",
        "signing_key_file",
        "topic_prefix",
        "classes",  # one source for the fleet's classes (init-fleet --bundle / --classes)
        "share_group",
        "mqtt_version",
    }
    assert data["username"] == "aggregator"
    assert data["broker_url"] == "mqtts://broker.lan:8884"  # the aggregator's own listener
    assert data["mqtt_version"] == "5"
    # A secret per fleet: the public default would let a node join the aggregators' group.
    assert data["share_group"] != "fedvfer-aggregators" and len(data["share_group"]) >= 32
    assert data["share_group"] == load_fleet(fleet).share_group
    other = init_fleet(fleet.parent / "other", broker_host="broker.lan")
    assert other.share_group != data["share_group"]
    assert Path(data["signing_key_file"]) == (fleet / "aggregator/signing_key.pem").resolve()
    assert Path(data["password_file"]).read_text().strip()
    assert data["topic_prefix"] == "fedvfer"


def test_colleagues_loaders_accept_the_files(fleet: Path) -> None:
    """The aggregator's own config loader and the bundle-signing module read what we wrote."""
    aggregator_config = pytest.importorskip("broker_aggregator.config")
    signing = pytest.importorskip("vfer.signing")
    cfg = aggregator_config.load_aggregator_config(fleet / "aggregator/aggregator.yaml")
    assert cfg.username == "aggregator" and cfg.broker_url == "mqtts://broker.lan:8884"
    assert cfg.share_group == load_fleet(fleet).share_group
    private = signing.load_private_key(cfg.signing_key_file)
    public = signing.load_public_key(fleet / "fleet_public_key.pem")
    assert public.public_bytes_raw() == private.public_key().public_bytes_raw()


def test_add_node_writes_a_config_the_node_loads(fleet: Path) -> None:
    folder = add_node(fleet, "kiosk-7", camera="0", window=("01:30", "04:00"), retention_days=14)
    cfg = load_node_config(folder / "node.yaml")
    assert cfg.node_id == "kiosk-7"
    assert cfg.camera.source == "0"
    assert cfg.retention.max_age_days == 14
    assert (cfg.adaptation.window_start, cfg.adaptation.window_end) == ("01:30", "04:00")
    fed = cfg.federation
    assert fed.enabled and fed.username == "kiosk-7" and fed.broker_url == "mqtts://broker.lan:8883"
    assert fed.password_file == Path("/etc/fedvfer/broker_password")
    assert fed.ca_file == Path("/etc/fedvfer/ca.crt")
    assert fed.fleet_public_key == Path("/etc/fedvfer/fleet_public_key.pem")
    assert fed.cert_file is None
    assert "password:" not in (folder / "node.yaml").read_text()  # secrets stay in files
    password = (folder / "broker_password").read_text().strip()
    assert _mode(folder / "broker_password") == 0o600
    assert (folder / "fleet_public_key.pem").read_bytes() == (
        fleet / "fleet_public_key.pem"
    ).read_bytes()
    assert fed.mqtt_version == "5" and fed.min_central_version == 1
    # The nodes' password file holds the node's hash; the aggregator has a file of its own.
    lines = dict(line.split(":", 1) for line in (fleet / "broker/passwd").read_text().splitlines())
    assert set(lines) == {"kiosk-7"}
    agg_lines = (fleet / "broker/aggregator_passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in agg_lines] == ["aggregator"]
    assert verify_password(password, lines["kiosk-7"])
    local = add_node(fleet, "kiosk-8", files_at=str(fleet / "nodes/kiosk-8"))
    assert (
        load_node_config(local / "node.yaml").federation.password_file == local / "broker_password"
    )


def test_revoke_and_re_add(fleet: Path) -> None:
    add_node(fleet, "pi-1")
    revoke_node(fleet, "pi-1")
    assert "pi-1" not in (fleet / "broker/passwd").read_text()
    assert not (fleet / "nodes/pi-1/broker_password").exists()
    assert load_fleet(fleet).nodes["pi-1"].revoked
    with pytest.raises(UserError, match="already revoked"):
        revoke_node(fleet, "pi-1")
    add_node(fleet, "pi-1")  # new credentials
    assert "pi-1:" in (fleet / "broker/passwd").read_text()


def test_client_cert_fleet_puts_revoked_certificates_on_the_crl(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    init_fleet(d, broker_host="broker.lan", client_certs=True)
    folder = add_node(d, "pi-1")
    add_node(d, "pi-2")
    cfg = load_node_config(folder / "node.yaml")
    assert cfg.federation.cert_file == Path("/etc/fedvfer/client.crt")
    cert = x509.load_pem_x509_certificate((folder / "client.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((d / "ca/ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (
        x509.load_pem_x509_crl(
            (d / "broker/crl.pem").read_bytes()
        ).get_revoked_certificate_by_serial_number(cert.serial_number)
        is None
    )
    revoke_node(d, "pi-1")
    crl = x509.load_pem_x509_crl((d / "broker/crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert len(list(crl)) == 1
    agg = yaml.safe_load((d / "aggregator/aggregator.yaml").read_text())
    assert agg["broker_url"] == "mqtts://127.0.0.1:8884"


def test_min_central_version_only_goes_up(fleet: Path) -> None:
    """A node added later never gets a lower floor than one added before it."""

    def floor(name: str) -> int:
        path = fleet / "nodes" / name / "node.yaml"
        return load_node_config(path).federation.min_central_version

    add_node(fleet, "pi-1")
    add_node(fleet, "pi-2", min_central_version=7)
    add_node(fleet, "pi-3")
    add_node(fleet, "pi-4", min_central_version=3)
    assert [floor(n) for n in ("pi-1", "pi-2", "pi-3", "pi-4")] == [1, 7, 7, 7]
    assert load_fleet(fleet).min_central_version == 7
    with pytest.raises(UserError, match="at least 1"):
        add_node(fleet, "pi-5", min_central_version=0)


def test_refusals(fleet: Path) -> None:
    with pytest.raises(UserError, match="already holds a fleet"):
        init_fleet(fleet, broker_host="x")
    with pytest.raises(UserError, match="aggregator"):
        add_node(fleet, "aggregator")
    with pytest.raises(UserError, match="not valid"):
        add_node(fleet, "a/b")
    with pytest.raises(UserError, match="client ids"):
        add_node(fleet, "fedvfer-agg-1")  # would take the aggregator leader's client id
    add_node(fleet, "pi-1")
    with pytest.raises(UserError, match="already in the fleet"):
        add_node(fleet, "pi-1")
    with pytest.raises(UserError, match="not in the fleet"):
        revoke_node(fleet, "pi-9")
    with pytest.raises(ValueError, match="window_start"):
        add_node(fleet, "pi-2", window=("25:00", "05:00"))
    assert "pi-2" not in load_fleet(fleet).nodes


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioning", *args], capture_output=True, text=True
    )


def test_cli_round_trip(tmp_path: Path) -> None:
    d = str(tmp_path / "fleet")
    res = _cli("init-fleet", "--dir", d, "--broker-host", "broker.lan", "--context", "retail")
    assert res.returncode == 0, res.stderr
    assert "mqtts://broker.lan:8883" in res.stdout
    res = _cli("add-node", "pi-1", "--dir", d, "--window", "03:00-06:00", "--no-kiosk")
    assert res.returncode == 0, res.stderr
    cfg = load_node_config(Path(d) / "nodes/pi-1/node.yaml")
    assert cfg.adaptation.window_start == "03:00" and not cfg.kiosk.enabled
    res = _cli("add-node", "pi-3", "--dir", d, "--min-central-version", "12")
    assert res.returncode == 0, res.stderr
    fed = load_node_config(Path(d) / "nodes/pi-3/node.yaml").federation
    assert fed.min_central_version == 12
    assert _cli("add-node", "pi-4", "--dir", d, "--min-central-version", "0").returncode != 0
    assert _cli("revoke-node", "pi-1", "--dir", d).returncode == 0
    for args, message in [
        (("init-fleet", "--dir", d, "--broker-host", "b", "--context", "other"), "already holds"),
        (("add-node", "pi-2", "--dir", d, "--window", "3"), "--window '3' must be HH:MM-HH:MM"),
        (("revoke-node", "pi-1", "--dir", d), "already revoked"),
        (("add-node", "x", "--dir", str(tmp_path / "none")), "is not a fleet folder"),
    ]:
        res = _cli(*args)
        assert res.returncode == 1, args
        assert res.stderr.startswith("Error: ") and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
