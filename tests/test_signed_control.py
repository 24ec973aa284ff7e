"""Signed control plane and freshness (issue 14, item 9), live: a real mosquitto with the config
``provisioning`` generates, real node clients with their generated node.yaml, and a thief who
holds the aggregator's broker login but not the fleet's signing key."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.config import load_node_config
from edge_node.federation import FederationClient
from tests.support.aggregator import random_v
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Client, Fleet, start_fleet
from vfer import signing
from vfer import weights as wcodec
from vfer.messages import (
    CentralHeader,
    Personalization,
    RoundMsg,
    sign_central,
    sign_round,
    to_json,
)

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")
CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]
TIMEOUT = 10.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    # node-1 is added with the default floor (1); "fresh" is added when the fleet is at v5.
    f = start_fleet(tmp_path, nodes=("node-1", "fresh"), min_central_version={"fresh": 5})
    try:
        yield f
    finally:
        f.broker.stop()


@pytest.fixture
def thief(fleet: Fleet) -> Iterator[Client]:
    """The aggregator's stolen broker login: it may publish the round and central topics."""
    c = fleet.aggregator(client_id="thief")
    assert c.connect_rc == 0
    try:
        yield c
    finally:
        c.stop()


def fleet_key(fleet: Fleet) -> Ed25519PrivateKey:
    return signing.load_private_key(fleet.dir / "aggregator" / "signing_key.pem")


def node_client(fleet: Fleet, name: str, tmp: Path) -> FederationClient:
    settings = load_node_config(fleet.dir / "nodes" / name / "node.yaml").federation
    return FederationClient(name, settings, tmp / f"outbox-{name}.db").start()


def round_msg(round_id: int, base: int, **personalization: float) -> RoundMsg:
    return RoundMsg(
        round_id=round_id,
        base_version=base,
        opened_at=1764130000.0,
        deadline=1764133600.0,
        min_submissions=1,
        max_submissions=10,
        classes=CLASSES,
        personalization=Personalization(**personalization),  # type: ignore[arg-type]
    )


def central(version: int, key: Ed25519PrivateKey) -> bytes:
    weights = random_v(6, np.random.default_rng(version))
    header = CentralHeader(version=version, round_id=version - 1, classes=CLASSES, created_at=0.0)
    return sign_central(header, wcodec.to_bytes(weights), key)


def wait(cond: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if cond():
            return True
        ev.wait(0.02)
    return cond()


def rejected_rounds(node: FederationClient) -> int:
    return int(getattr(node, "rejected_rounds", 0))


def test_unsigned_and_badly_signed_rounds_are_refused(
    fleet: Fleet, thief: Client, tmp_path: Path
) -> None:
    key = fleet_key(fleet)
    evil = round_msg(9, 1, epochs=100, lr=1.0)  # what a thief would like every node to run
    tampered = json.loads(to_json(sign_round(round_msg(9, 1), key)))
    tampered["personalization"]["lr"] = 1.0  # a genuine signature over other values
    hostile = [
        to_json(evil),  # unsigned
        to_json(sign_round(evil, Ed25519PrivateKey.generate())),  # signed, not by the fleet
        json.dumps(tampered).encode(),
    ]
    # The first one waits retained for the node, the others come live once it has answered.
    assert thief.publish("fedvfer/round", hostile[0], retain=True) < 128
    node = node_client(fleet, "node-1", tmp_path)
    try:
        for n, payload in enumerate(hostile, start=1):
            if n > 1:
                thief.publish("fedvfer/round", payload)
            seen = wait(lambda n=n: rejected_rounds(node) >= n or node.current_round() is not None)
            assert seen and node.current_round() is None, f"hostile round {n} was installed"
        # The genuine round is installed; an older genuine one replayed afterwards is not.
        thief.publish("fedvfer/round", to_json(sign_round(round_msg(9, 1), key)))
        got = node.wait_round(timeout=TIMEOUT)
        assert got is not None and got.personalization.lr == 1e-3 and got.round_id == 9
        thief.publish("fedvfer/round", to_json(sign_round(round_msg(4, 1), key)))
        assert wait(lambda: rejected_rounds(node) == 4)
        assert node.current_round() is not None and node.current_round().round_id == 9  # type: ignore[union-attr]
    finally:
        node.stop()


def test_a_fresh_node_refuses_a_replayed_old_central(
    fleet: Fleet, thief: Client, tmp_path: Path
) -> None:
    """The thief replays an old central, validly signed, as the retained message. A node added
    at v5 (node.yaml says so) refuses it before it has heard anything else; a node added
    earlier refuses it once a signed round says the fleet is at v7."""
    key = fleet_key(fleet)
    assert load_node_config(fleet.dir / "nodes/fresh/node.yaml").federation.min_central_version == 5
    assert thief.publish("fedvfer/central/bundle", central(2, key), retain=True) < 128
    fresh = node_client(fleet, "fresh", tmp_path)
    try:
        seen = wait(lambda: fresh.rejected_centrals >= 1 or fresh.latest_central() is not None)
        assert seen and fresh.latest_central() is None, "the fresh node installed central v2"
        thief.publish("fedvfer/central/bundle", central(5, key))
        got = fresh.wait_central(timeout=TIMEOUT)
        assert got is not None and got.version == 5
    finally:
        fresh.stop()

    # Clear the retained central, so node-1 hears the round before any central.
    assert thief.publish("fedvfer/central/bundle", b"", retain=True) < 128
    assert (
        thief.publish("fedvfer/round", to_json(sign_round(round_msg(7, 7), key)), retain=True) < 128
    )
    old = node_client(fleet, "node-1", tmp_path)
    try:
        assert old.wait_round(timeout=TIMEOUT) is not None
        thief.publish("fedvfer/central/bundle", central(3, key))
        seen = wait(lambda: old.rejected_centrals >= 1 or old.latest_central() is not None)
        assert seen and old.latest_central() is None, "central v3 installed after round base v7"
        thief.publish("fedvfer/central/bundle", central(7, key))
        got = old.wait_central(timeout=TIMEOUT)
        assert got is not None and got.version == 7
    finally:
        old.stop()
