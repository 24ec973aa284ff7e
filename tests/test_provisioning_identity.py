"""The broker binds identities (issue 14, items 3 and 4), live on a real mosquitto running the
config ``provisioning`` generates, with the real aggregator process and real node clients.

* A node login that joins the aggregators' shared subscription starves nobody: every node's
  update is counted.
* A node login that reuses another client's id disconnects nobody, cannot log in on the
  aggregator's listener, and leaves the aggregator's persistent session (and the updates queued
  in it while the aggregator was down) intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_node.config import load_node_config
from edge_node.federation import FederationClient, NodeUpdate
from tests.support.aggregator import AggregatorProcess, personalized, random_v
from tests.support.federation import wait_acked
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Fleet, connect, start_fleet
from vfer import weights as wcodec

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    pytest.mark.slow,
]
NOT_AUTHORIZED = 135
NO_MATCHING_SUBSCRIBERS = 16
#: The aggregators' group name before it became a per-fleet secret: what a thief would try.
PUBLIC_GROUP = "fedvfer-aggregators"
#: The leader's client id (``fedvfer-<worker_id>``): predictable, so a thief would try it.
LEADER_ID = "fedvfer-agg-1"
TIMEOUT = 30.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(tmp_path, nodes=("node-1", "node-2", "node-3", "node-4", "victim", "mallory"))
    try:
        yield f
    finally:
        f.broker.stop()


def start_aggregator(fleet: Fleet, tmp: Path, submissions: int) -> AggregatorProcess:
    """The real aggregator with the generated aggregator.yaml, plus a state db and a v head."""
    initial = tmp / "vfer_head.safetensors"
    if not initial.exists():
        wcodec.save(initial, random_v(6, np.random.default_rng(0), trainable_only=False))
    data = yaml.safe_load((fleet.dir / "aggregator" / "aggregator.yaml").read_text())
    data |= {
        "state_db": str(tmp / "agg.db"),
        "initial_weights": str(initial),
        "round": {
            "min_submissions": submissions,
            "max_submissions": submissions,
            "rounds": 1,
            "deadline_s": 600,
        },
    }
    cfg = tmp / "aggregator-test.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return AggregatorProcess(["--config", str(cfg)], tmp / "agg.log").start()


def node_client(fleet: Fleet, name: str, tmp: Path) -> FederationClient:
    """The node program's federation client with the generated node.yaml. It resends only
    every 10 minutes, so an update the broker drops stays dropped for the test's length."""
    settings = load_node_config(fleet.dir / "nodes" / name / "node.yaml").federation
    return FederationClient(name, settings, tmp / f"outbox-{name}.db", resend_s=600).start()


def submit(node: FederationClient, rng: np.random.Generator) -> str:
    rnd = node.wait_round(timeout=TIMEOUT)
    central = node.wait_central(timeout=TIMEOUT)
    assert rnd is not None and central is not None, f"{node.node_id} saw no round or central"
    weights = personalized(central.weights, rng)
    return node.submit(NodeUpdate(rnd.round_id, rnd.base_version, weights, {"anger": 2}))


def test_a_node_in_the_share_group_starves_nobody(fleet: Fleet, tmp_path: Path) -> None:
    agg = start_aggregator(fleet, tmp_path, submissions=4)
    names = ["node-1", "node-2", "node-3", "node-4"]
    nodes = [node_client(fleet, n, tmp_path) for n in names]
    mallory = fleet.node("mallory")
    rng = np.random.default_rng(1)
    try:
        assert mallory.connect_rc == 0
        # A stolen node login joins the group name it can know (the public default) and a
        # catch-all; mosquitto's acl_file does not check subscriptions, so both are granted.
        mallory.subscribe(
            f"$share/{PUBLIC_GROUP}/fedvfer/nodes/+/update", f"$share/{PUBLIC_GROUP}/#"
        )
        # Every node sees the round only after the aggregator subscribed (same connection).
        ids = {node.node_id: submit(node, rng) for node in nodes}
        for node in nodes:
            got = wait_acked(node, ids[node.node_id], timeout=TIMEOUT)
            assert got == "stored", f"{node.node_id}: {got}\n{agg.log()[-3000:]}"
        central = nodes[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert central is not None and central.version == 2
        assert "round 1 finished: central v2 from 4 submissions" in agg.log()
    finally:
        mallory.stop()
        for node in nodes:
            node.stop()
        agg.stop()


def test_a_node_reusing_client_ids_disconnects_nobody(fleet: Fleet, tmp_path: Path) -> None:
    agg = start_aggregator(fleet, tmp_path, submissions=2)
    victim = fleet.node("victim", client_id="fedvfer-node-victim", clean_start=False)
    try:
        assert agg.wait_for_log("connected to", TIMEOUT), agg.log()
        assert victim.connect_rc == 0
        password = fleet.secret("nodes", "mallory", "broker_password")
        # Mallory's own login with the victim's id (as the node program sets it and as the
        # broker names it) and with the aggregator leader's id.
        for stolen in ("fedvfer-node-victim", "victim", LEADER_ID):
            thief = fleet.node("mallory", password, client_id=stolen)
            assert thief.connect_rc == 0, stolen
            thief.stop()
            # A round trip through the broker after the thief's CONNACK: still the same link.
            rc = victim.publish("fedvfer/nodes/victim/ping", b"still here")
            assert rc == NO_MATCHING_SUBSCRIBERS  # accepted (reason codes < 128 are success)
            assert not victim.disconnected.is_set(), f"the victim was disconnected by {stolen!r}"
        # The aggregator's listener does not know node logins at all (nor the nodes' the
        # aggregator's, whose ids are not bound to its login).
        thief = connect(fleet.aggregator_port, "mallory", password, fleet.ca, client_id=LEADER_ID)
        assert thief.connect_rc == NOT_AUTHORIZED
        agg_password = fleet.secret("aggregator", "password")
        assert connect(fleet.broker.port, "aggregator", agg_password, fleet.ca).connect_rc == (
            NOT_AUTHORIZED
        )
        assert "disconnected from" not in agg.log(), agg.log()[-3000:]
    finally:
        victim.stop()
        agg.stop()


def test_the_aggregators_session_survives_a_thief_with_its_id(fleet: Fleet, tmp_path: Path) -> None:
    """Updates sent while the aggregator is down wait in its persistent session; a node
    login's clean start under the aggregator's client id must not throw them away."""
    agg = start_aggregator(fleet, tmp_path, submissions=2)
    nodes = [node_client(fleet, n, tmp_path) for n in ("node-1", "node-2")]
    rng = np.random.default_rng(2)
    try:
        for node in nodes:
            assert node.wait_round(timeout=TIMEOUT) is not None
        agg.stop()
        ids = {node.node_id: submit(node, rng) for node in nodes}
        thief = fleet.node("mallory", client_id=LEADER_ID)
        assert thief.connect_rc == 0
        thief.stop()
        agg = start_aggregator(fleet, tmp_path, submissions=2)
        assert agg.wait_for_log("session present: True", TIMEOUT), agg.log()[-3000:]
        for node in nodes:
            got = wait_acked(node, ids[node.node_id], timeout=TIMEOUT)
            assert got == "stored", f"{node.node_id}: {got}\n{agg.log()[-3000:]}"
        central = nodes[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert central is not None and central.version == 2
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
