"""End to end: a real mosquitto, the aggregator as a real process, node clients, whole rounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_node.config import FederationConfig
from edge_node.federation import FederationClient, NodeUpdate
from tests.support.aggregator import AggregatorProcess, personalized, random_v
from tests.support.mosquitto import Broker, mosquitto_binary, start_mosquitto
from vfer import signing
from vfer import weights as wcodec

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")

# Explicit limits (docs/mqtt.md): the default max_queued_messages (1000) silently drops QoS 1.
BROKER_CONF = "max_packet_size 4200000\nmax_queued_messages 10000\nmax_inflight_messages 100\n"
CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]


@pytest.fixture
def fleet(tmp_path: Path) -> dict[str, Path]:
    priv, pub = signing.generate_keypair(tmp_path / "fleet")
    initial = tmp_path / "vfer_head.safetensors"
    wcodec.save(initial, random_v(6, np.random.default_rng(0), trainable_only=False))
    return {"priv": priv, "pub": pub, "initial": initial}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_mosquitto(tmp_path / "mosquitto", BROKER_CONF)
    try:
        yield b
    finally:
        b.stop()


def aggregator_args(broker: Broker, fleet: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    args = [
        "--broker",
        broker.url,
        "--initial-weights",
        str(fleet["initial"]),
        "--classes",
        "6",
        "--state-db",
        str(tmp / "agg.db"),
        "--signing-key",
        str(fleet["priv"]),
    ]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def clients(broker: Broker, fleet: dict[str, Path], tmp: Path, n: int) -> list[FederationClient]:
    settings = FederationConfig(enabled=True, broker_url=broker.url, fleet_public_key=fleet["pub"])
    return [
        FederationClient(f"pi-{i}", settings, tmp / f"outbox-{i}.db", resend_s=2.0).start()
        for i in range(n)
    ]


def play_round(
    nodes: list[FederationClient], after: int, rng: np.random.Generator
) -> tuple[int, list[dict[str, np.ndarray]]]:
    """Every node waits for the next round, personalizes from its central, submits; returns what was sent."""
    sent = []
    round_id = 0
    for node in nodes:
        rnd = node.wait_round(timeout=20, after=after)
        assert rnd is not None, f"{node.node_id} saw no round after {after}"
        central = node.wait_central(timeout=20, newer_than=rnd.base_version - 1)
        assert central is not None and central.version == rnd.base_version
        weights = personalized(central.weights, rng)
        node.submit(
            NodeUpdate(rnd.round_id, rnd.base_version, weights, {"happiness": 3, "anger": 2})
        )
        sent.append(weights)
        round_id = rnd.round_id
    return round_id, sent


def assert_central_is_mean(
    central: dict[str, np.ndarray], sent: list[dict[str, np.ndarray]]
) -> None:
    for name, arr in central.items():
        expected = np.mean(np.stack([s[name].astype(np.float64) for s in sent]), axis=0)
        np.testing.assert_allclose(arr, expected, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_five_nodes_two_rounds_central_is_the_mean(
    broker: Broker, fleet: dict[str, Path], tmp_path: Path
) -> None:
    agg = AggregatorProcess(
        aggregator_args(broker, fleet, tmp_path, rounds=2, min_submissions=5, max_submissions=5),
        tmp_path / "agg.log",
    ).start()
    nodes = clients(broker, fleet, tmp_path, 5)
    rng = np.random.default_rng(1)
    try:
        after = 0
        for expected_version in (2, 3):
            round_id, sent = play_round(nodes, after, rng)
            for node in nodes:
                central = node.wait_central(timeout=30, newer_than=expected_version - 1)
                assert central is not None, agg.log()[-3000:]
                assert central.version == expected_version and central.round_id == round_id
                assert_central_is_mean(central.weights, sent)
            assert all(n.pending() == 0 for n in nodes)
            after = round_id
        assert agg.wait(timeout=20) == 0
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    log = agg.log()
    assert "round 2 finished: central v3 from 5 submissions" in log
