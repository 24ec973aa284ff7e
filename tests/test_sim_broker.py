"""The demo's embedded broker: a private mosquitto when installed, else amqtt in-process."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from training.sim.broker import mosquitto_binary, start_embedded_broker
from vfer.mqtt import parse_broker_url


def roundtrip(url: str) -> bytes:
    host, port, _tls = parse_broker_url(url)
    got = threading.Event()
    seen: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, m: (seen.append(m.payload), got.set())
    c.connect(host, port)
    c.loop_start()
    try:
        c.publish("fedvfer/test", b"x" * 900_000, qos=1, retain=True).wait_for_publish(10)
        c.subscribe("fedvfer/test", qos=1)  # a retained message arrives on subscribe
        assert got.wait(10)
    finally:
        c.loop_stop()
        c.disconnect()
    return seen[0]


@pytest.mark.parametrize("prefer", ["mosquitto", "amqtt"])
def test_embedded_broker_carries_a_head_sized_retained_message(prefer: str) -> None:
    if prefer == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (make system-deps installs it)")
    handle = start_embedded_broker(2, prefer=prefer)
    try:
        assert handle.kind == prefer
        assert len(roundtrip(handle.url)) == 900_000
    finally:
        handle.stop()
    if handle._proc is not None:
        assert handle._proc.poll() is not None  # the private mosquitto is gone
