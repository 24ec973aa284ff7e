"""A real mosquitto started with the generated files: TLS, passwords, the ACL and revocation."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning import mosquitto as mq
from provisioning.fleet import revoke_node
from tests.support.mosquitto import Broker, mosquitto_binary
from tests.support.provisioning_mqtt import Client, Fleet, connect, start_fleet

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto not installed (apt-get install mosquitto)"
)
NOT_AUTHORIZED = 135
NO_MATCHING_SUBSCRIBERS = 16


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(tmp_path, client_certs=False)
    try:
        yield f
    finally:
        f.broker.stop()


@pytest.fixture
def cert_fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(tmp_path, client_certs=True)
    try:
        yield f
    finally:
        f.broker.stop()


def _nothing(c: Client) -> None:
    with pytest.raises(queue.Empty):
        c.next_message(timeout=0.3)


def test_node_acl_over_tls(fleet: Fleet) -> None:
    a, b, agg = fleet.node("node-a"), fleet.node("node-b"), fleet.aggregator()
    try:
        assert (a.connect_rc, b.connect_rc, agg.connect_rc) == (0, 0, 0)
        assert agg.subscribe(
            "$share/aggregators/fedvfer/nodes/+/update", "fedvfer/nodes/+/status"
        ) == [1, 1]
        assert b.subscribe("fedvfer/round", "fedvfer/central/#", "fedvfer/nodes/node-b/#") == [
            1,
            1,
            1,
        ]
        # A may not write B's topics, nor the round or central ones: refused, and never delivered.
        assert a.publish("fedvfer/nodes/node-b/update", b"forged") == NOT_AUTHORIZED
        assert a.publish("fedvfer/nodes/node-b/ack", b"forged") == NOT_AUTHORIZED
        assert a.publish("fedvfer/round", b"forged") == NOT_AUTHORIZED
        assert a.publish("fedvfer/central/bundle", b"forged") == NOT_AUTHORIZED
        # Its own update reaches the aggregator (through the shared subscription) ...
        assert a.publish("fedvfer/nodes/node-a/update", b"mine") == 0
        assert agg.next_message() == ("fedvfer/nodes/node-a/update", b"mine")
        # ... and only the aggregator's round and central messages reach the nodes.
        assert agg.publish("fedvfer/round", b"round-1") == 0
        assert agg.publish("fedvfer/central/bundle", b"central") == 0
        assert agg.publish("fedvfer/nodes/node-b/ack", b"ack") == 0
        got = {b.next_message(), b.next_message(), b.next_message()}
        assert got == {
            ("fedvfer/round", b"round-1"),
            ("fedvfer/central/bundle", b"central"),
            ("fedvfer/nodes/node-b/ack", b"ack"),
        }
        _nothing(b)
        _nothing(agg)
        # Nodes cannot read each other's updates.
        assert a.subscribe("fedvfer/nodes/+/update") == [1]
        assert b.publish("fedvfer/nodes/node-b/update", b"b") == 0
        assert agg.next_message() == ("fedvfer/nodes/node-b/update", b"b")
        _nothing(a)
        # Nor may a node speak on the aggregators' own control topics.
        assert a.publish("fedvfer/aggregator/close", b"forged") == NOT_AUTHORIZED
        assert agg.publish("fedvfer/aggregator/close", b"{}") == NO_MATCHING_SUBSCRIBERS  # allowed
        # The aggregator cannot pose as a node.
        assert agg.publish("fedvfer/nodes/node-a/update", b"forged") == NOT_AUTHORIZED
    finally:
        for c in (a, b, agg):
            c.stop()


def test_anonymous_and_wrong_password_refused(fleet: Fleet) -> None:
    assert connect(fleet.broker.port, None, None, fleet.ca).connect_rc == NOT_AUTHORIZED
    assert fleet.node("node-a", "wrong-password").connect_rc == NOT_AUTHORIZED
    assert fleet.node("node-z", "anything").connect_rc == NOT_AUTHORIZED
    # Node B's password does not open node A's account.
    assert (
        fleet.node("node-a", fleet.secret("nodes", "node-b", "broker_password")).connect_rc
        == NOT_AUTHORIZED
    )


def test_revoked_node_refused_after_reload(fleet: Fleet) -> None:
    password = fleet.secret("nodes", "node-a", "broker_password")
    before = fleet.node("node-a", password)
    assert before.connect_rc == 0
    before.stop()
    revoke_node(fleet.dir, "node-a")
    fleet.broker.reload()
    # Wait for the reload through the log rather than sleeping a fixed time.
    _wait_for_log(fleet.broker, "Reloading config")
    assert fleet.node("node-a", password).connect_rc == NOT_AUTHORIZED
    assert fleet.node("node-b").connect_rc == 0  # the others stay in


def test_client_certificates_and_crl(cert_fleet: Fleet) -> None:
    f = cert_fleet
    with_cert = f.node("node-b", certs=True)
    assert with_cert.connect_rc == 0
    with_cert.stop()
    assert f.node("node-b", certs=False).connect_rc is None  # TLS handshake refused: no certificate
    agg = f.aggregator(port=f.aggregator_port)  # loopback listener, password only
    assert agg.connect_rc == 0
    agg.stop()
    # A thief kept node-b's key and password; only the CRL can refuse it now.
    key = (f.dir / "nodes/node-b/client.key").read_bytes()
    password = f.secret("nodes", "node-b", "broker_password")
    revoke_node(f.dir, "node-b")
    stolen_key = f.dir / "stolen.key"
    stolen_key.write_bytes(key)
    passwd = f.dir / "broker" / "passwd"
    passwd.write_text(passwd.read_text() + f"node-b:{mq.hash_password(password)}\n")
    f.broker.reload()
    _wait_for_log(f.broker, "Reloading config")
    stolen = connect(
        f.broker.port, "node-b", password, f.ca,
        cert_file=f.dir / "nodes/node-b/client.crt", key_file=stolen_key,
    )  # fmt: skip
    assert stolen.connect_rc is None  # the TLS handshake fails: certificate revoked
    assert "certificate verify failed" in f.broker.log_text()
    assert f.node("node-a", certs=True).connect_rc == 0


def _wait_for_log(broker: Broker, text: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while text not in broker.log_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in the broker log")
        time.sleep(0.02)
