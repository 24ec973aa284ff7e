"""MQTT 3.1.1 fallback: the shared link against a real 3.1.1-only broker (amqtt, in-process)
and a real mosquitto, then a whole federation round over amqtt."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.aggregator import AggregatorProcess
from tests.support.amqtt_broker import amqtt_broker  # noqa: F401
from tests.support.mosquitto import Broker, mosquitto_binary
from tests.test_federation_e2e import (  # noqa: F401
    aggregator_args,
    assert_central_is_mean,
    clients,
    fleet,
    play_round,
)
from training.sim.embedded_broker import EmbeddedBroker
from vfer.mqtt import BrokerSettings, MqttLink, MqttVersion

FALLBACK = "does not speak MQTT 5"


def wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if cond():
            return True
        ev.wait(0.02)
    return cond()


def link(
    url: str, name: str, version: MqttVersion, received: list[bytes] | None = None
) -> MqttLink:
    connected = threading.Event()
    subs = [("test/big", 1)] if received is not None else []
    lk = MqttLink(
        BrokerSettings(url, name, mqtt_version=version),
        subs,
        lambda topic, payload: received.append(payload) if received is not None else None,
        connected.set,
    )
    lk.start()
    lk.connected_event = connected  # type: ignore[attr-defined]
    return lk


def test_auto_falls_back_to_311_once_and_carries_a_full_head(
    amqtt_broker: EmbeddedBroker,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="vfer.mqtt")
    received: list[bytes] = []
    sub = link(amqtt_broker.url, "sub", "auto", received)
    pub = link(amqtt_broker.url, "pub", "3.1.1")
    try:
        assert sub.connected_event.wait(10) and pub.connected_event.wait(10)  # type: ignore[attr-defined]
        assert sub.protocol == "3.1.1" and pub.protocol == "3.1.1"
        assert caplog.text.count(FALLBACK) == 1  # the explicit 3.1.1 client never tried 5
        assert "with MQTT 3.1.1" in caplog.text
        payload = np.random.default_rng(0).bytes(834_400)  # one v head's size
        assert wait(lambda: bool(sub.client.is_connected()))
        for _ in range(20):  # the subscription is live once a message comes through
            pub.publish("test/big", payload, 1, False)
            if wait(lambda: bool(received), 0.5):
                break
        assert received and received[0] == payload
    finally:
        sub.stop()
        pub.stop()


def test_mqtt5_only_never_connects_to_a_311_broker(
    amqtt_broker: EmbeddedBroker,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="vfer.mqtt")
    lk = link(amqtt_broker.url, "v5only", "5")
    try:
        assert not lk.connected_event.wait(2)  # type: ignore[attr-defined]
        assert lk.protocol == "5" and FALLBACK not in caplog.text
    finally:
        lk.stop()


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")
def test_auto_stays_on_mqtt5_with_mosquitto(
    mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vfer.mqtt")
    lk = link(mosquitto.url, "auto5", "auto")
    try:
        assert lk.connected_event.wait(10)  # type: ignore[attr-defined]
        assert lk.protocol == "5" and "with MQTT 5" in caplog.text
        assert FALLBACK not in caplog.text
    finally:
        lk.stop()


@pytest.mark.slow
def test_two_nodes_one_round_over_amqtt(
    amqtt_broker: EmbeddedBroker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    args = aggregator_args(amqtt_broker, fleet, tmp_path, rounds=1, min_submissions=2)  # type: ignore[arg-type]
    agg = AggregatorProcess([*args, "--max-submissions", "2"], tmp_path / "agg.log").start()
    nodes = clients(amqtt_broker, fleet, tmp_path, 2)  # type: ignore[arg-type]
    try:
        _, sent = play_round(nodes, 0, np.random.default_rng(4))
        for node in nodes:
            central = node.wait_central(timeout=30, newer_than=1)
            assert central is not None, agg.log()[-3000:]
            assert central.version == 2
            assert_central_is_mean(central.weights, sent)
        assert wait(lambda: all(n.pending() == 0 for n in nodes))
        assert agg.wait(timeout=20) == 0, agg.log()[-3000:]
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    log = agg.log()
    assert log.count(FALLBACK) == 1, log[-3000:]
    assert "no shared subscription" in log and "must be the ONLY worker" in log
    assert "round 1 finished: central v2 from 2 submissions" in log


@pytest.mark.slow
def test_an_extra_worker_refuses_to_run_on_311(
    amqtt_broker: EmbeddedBroker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    args = ["--broker", amqtt_broker.url, "--classes", "6", "--state-db", str(tmp_path / "w.db")]
    args += ["--signing-key", str(fleet["priv"]), "--worker-id", "agg-2"]
    worker = AggregatorProcess(args, tmp_path / "w.log", command="worker").start()
    try:
        assert worker.wait(timeout=30) == 1
    finally:
        worker.stop()
    assert "Error: this broker connection speaks MQTT 3.1.1" in worker.log()
