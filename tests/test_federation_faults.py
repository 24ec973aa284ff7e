"""Rounds that survive faults: kill -9 of the aggregator, a broker restart, both mid-round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_node.federation import FederationClient, NodeUpdate
from tests.support.aggregator import AggregatorProcess, personalized
from tests.support.mosquitto import start_mosquitto
from tests.test_federation_e2e import BROKER_CONF, aggregator_args, clients, fleet  # noqa: F401
from vfer.fedavg import aggregate

pytestmark = pytest.mark.slow


def submit_all(
    nodes: list[FederationClient], rng: np.random.Generator
) -> dict[str, dict[str, np.ndarray]]:
    sent = {}
    for node in nodes:
        rnd = node.wait_round(timeout=20)
        central = node.wait_central(timeout=20)
        assert rnd is not None and central is not None
        w = personalized(central.weights, rng)
        node.submit(NodeUpdate(rnd.round_id, rnd.base_version, w, {"fear": 4}))
        sent[node.node_id] = w
    return sent


def no_crash_central(sent: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """What an uninterrupted aggregator computes: the mean, summed in node-id order."""
    return aggregate([(sent[n], 1) for n in sorted(sent)])


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_kill9_of_the_aggregator_mid_round_gives_the_same_central(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = start_mosquitto(tmp_path / "mosquitto", BROKER_CONF)
    args = aggregator_args(broker, fleet, tmp_path, rounds=1, min_submissions=5, max_submissions=5)
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    nodes = clients(broker, fleet, tmp_path, 5)
    rng = np.random.default_rng(7)
    try:
        first = submit_all(nodes[:3], rng)
        assert agg.wait_for_log("pi-2 submitted", 20), agg.log()[-2000:]
        agg.kill9()
        rest = submit_all(nodes[3:], rng)  # while the aggregator is dead
        agg2 = AggregatorProcess(args, tmp_path / "agg2.log").start()
        try:
            for node in nodes:
                central = node.wait_central(timeout=30, newer_than=1)
                assert central is not None, agg2.log()[-3000:]
                assert_same(central.weights, no_crash_central({**first, **rest}))
            assert agg2.wait(timeout=20) == 0
        finally:
            agg2.stop()
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
        broker.stop()


def test_broker_restart_mid_round_loses_nothing(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    store = tmp_path / "mosquitto-data"
    store.mkdir()
    conf = BROKER_CONF + f"persistence true\npersistence_location {store}/\nautosave_interval 1\n"
    broker = start_mosquitto(tmp_path / "mosquitto", conf)
    args = aggregator_args(broker, fleet, tmp_path, rounds=1, min_submissions=5, max_submissions=5)
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    nodes = clients(broker, fleet, tmp_path, 5)
    rng = np.random.default_rng(8)
    try:
        first = submit_all(nodes[:3], rng)
        assert agg.wait_for_log("pi-2 submitted", 20), agg.log()[-2000:]
        broker.stop()
        # the broker could write its log and its persistence file (tests/support/mosquitto.py)
        assert "mosquitto version" in broker.log_text() and (store / "mosquitto.db").exists()
        rest = submit_all(nodes[3:], rng)  # into the outbox while the broker is down
        assert all(n.pending() == 1 for n in nodes[3:])
        broker = start_mosquitto(tmp_path / "mosquitto", conf, port=broker.port)
        for node in nodes:
            central = node.wait_central(timeout=40, newer_than=1)
            assert central is not None, agg.log()[-3000:]
            assert_same(central.weights, no_crash_central({**first, **rest}))
        for node in nodes:
            assert node.pending() == 0
        assert agg.wait(timeout=20) == 0
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
        broker.stop()
