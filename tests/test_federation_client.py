"""The node client against a real mosquitto: only verified, newer centrals are installed;
the outbox keeps an update until its ack, across a client restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_node.config import FederationConfig
from edge_node.federation import FederationClient, NodeUpdate
from tests.support.aggregator import personalized, random_v
from tests.support.federation import wait_acked
from tests.support.mosquitto import Broker
from vfer import signing
from vfer import weights as wcodec
from vfer.messages import (
    AckMsg,
    CentralHeader,
    Personalization,
    RoundMsg,
    StatusMsg,
    from_json,
    sign_central,
    sign_message,
    sign_round,
    to_json,
)

CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]


def wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if cond():
            return True
        ev.wait(0.02)
    return cond()


def central(version: int, weights: dict[str, np.ndarray], key: object) -> bytes:
    header = CentralHeader(version=version, round_id=version - 1, classes=CLASSES, created_at=0.0)
    return sign_central(header, wcodec.to_bytes(weights), key)  # type: ignore[arg-type]


@pytest.fixture
def publisher(mosquitto: Broker) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    yield c  # type: ignore[misc]
    c.loop_stop()
    c.disconnect()


def pub(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def test_node_installs_only_verified_newer_centrals(
    mosquitto: Broker, publisher: mqtt.Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    priv, pub_key = signing.generate_keypair(tmp_path / "fleet")
    key = signing.load_private_key(priv)
    evil = signing.load_private_key(signing.generate_keypair(tmp_path / "evil")[0])
    w = random_v(6, np.random.default_rng(0))
    settings = FederationConfig(broker_url=mosquitto.url, fleet_public_key=pub_key)
    pub(publisher, "fedvfer/central/bundle", central(2, w, key), retain=True)
    caplog.set_level(logging.WARNING)
    with FederationClient("pi-1", settings, tmp_path / "o.db") as node:
        got = node.wait_central(timeout=10)
        assert got is not None and got.version == 2
        np.testing.assert_array_equal(got.weights["v_out.bias"], w["v_out.bias"])
        tampered = bytearray(central(5, w, key))
        tampered[-3] ^= 1
        bad_shape = {**w, "v_out.bias": np.zeros(7, np.float32)}
        hostile = {
            "unsigned": central(3, w, None),
            "bad_signature": central(3, w, evil),
            "checksum": bytes(tampered),
            "not_newer": central(1, w, key),
            "not_a_frame": b"\x00garbage",
            "bad_weights": central(4, bad_shape, key),
        }
        for n, (reason, payload) in enumerate(hostile.items(), start=1):
            pub(publisher, "fedvfer/central/bundle", payload)
            assert wait(lambda n=n: node.rejected_centrals == n), reason
            assert f"reason={reason}" in caplog.text
        pub(publisher, "fedvfer/round", b"{not json")
        assert wait(lambda: node.rejected_rounds == 1)
        assert "rejected round: reason=bad_header" in caplog.text
        assert node.latest_central().version == 2  # type: ignore[union-attr]
        assert node.current_round() is None
        pub(publisher, "fedvfer/central/bundle", central(3, w, key))
        assert node.wait_central(timeout=10, newer_than=2) is not None


def test_outbox_resends_until_acked_and_survives_a_restart(
    mosquitto: Broker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    priv, pub_key = signing.generate_keypair(tmp_path / "fleet")
    w = random_v(6, np.random.default_rng(1))
    settings = FederationConfig(broker_url=mosquitto.url, fleet_public_key=pub_key)
    received: list[bytes] = []
    statuses: list[StatusMsg] = []
    got_update = threading.Event()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        if m.topic.endswith("/update"):
            received.append(m.payload)
            got_update.set()
        elif m.topic.endswith("/status"):
            statuses.append(from_json(m.payload, StatusMsg))

    publisher.on_message = on_message
    publisher.subscribe([("fedvfer/nodes/+/update", 1), ("fedvfer/nodes/+/status", 1)])
    rnd = RoundMsg(
        round_id=1,
        base_version=2,
        opened_at=0,
        deadline=1e12,
        min_submissions=1,
        max_submissions=9,
        classes=CLASSES,
        personalization=Personalization(),
    )
    pub(
        publisher,
        "fedvfer/central/bundle",
        central(2, w, signing.load_private_key(priv)),
        retain=True,
    )
    key = signing.load_private_key(priv)
    pub(publisher, "fedvfer/round", to_json(sign_round(rnd, key)), retain=True)
    node = FederationClient("pi-2", settings, tmp_path / "o.db", resend_s=0.3).start()
    assert node.wait_round(timeout=10) is not None and node.wait_central(timeout=10) is not None
    update_id = node.submit(
        NodeUpdate(1, 2, personalized(w, np.random.default_rng(2)), {"fear": 3})
    )
    assert wait(lambda: len(received) >= 2)  # no ack: it is sent again
    node.stop()
    assert wait(lambda: statuses and statuses[-1].state == "offline")
    node = FederationClient("pi-2", settings, tmp_path / "o.db", resend_s=0.3)
    assert node.latest_central() is not None  # remembered without the broker
    node.start()
    try:
        n = len(received)
        assert wait(lambda: len(received) > n)  # resent after the restart
        assert node.pending() == 1
        ack = AckMsg(node_id="pi-2", round_id=1, update_id=update_id, status="stored")
        # a forged ack (the aggregator's broker login without the fleet key) is not heard: the
        # update stays in the outbox and is sent again
        pub(publisher, "fedvfer/nodes/pi-2/ack", to_json(ack))
        n = len(received)
        assert wait(lambda: len(received) > n) and node.pending() == 1
        pub(publisher, "fedvfer/nodes/pi-2/ack", to_json(sign_message(ack, key)))
        assert wait_acked(node, update_id, timeout=10) == "stored"
        assert node.pending() == 0
        assert wait(lambda: any(s.state == "online" for s in statuses))
    finally:
        node.stop()
