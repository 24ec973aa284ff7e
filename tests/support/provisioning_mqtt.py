"""A small MQTT 5 test client over TLS for the provisioning tests: connect, publish with QoS 1
and wait for the broker's answer, subscribe and collect messages in a queue."""

from __future__ import annotations

import queue
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 10.0


@dataclass
class Client:
    """One connected (or refused) client; ``connect_rc`` is the CONNACK reason code value."""

    client: mqtt.Client
    connect_rc: int | None = None
    connected: threading.Event = field(default_factory=threading.Event)
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    acks: dict[int, int] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)
    granted: queue.Queue[list[int]] = field(default_factory=queue.Queue)

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """Publish at QoS 1; the PUBACK reason code (0 ok, 135 not authorized, ...)."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            if not self.acked.wait_for(lambda: info.mid in self.acks, timeout=TIMEOUT):
                raise TimeoutError(f"no PUBACK for {topic}")
            return self.acks.pop(info.mid)

    def subscribe(self, *topics: str) -> list[int]:
        self.client.subscribe([(t, 1) for t in topics])
        return self.granted.get(timeout=TIMEOUT)

    def next_message(self, timeout: float = TIMEOUT) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int,
    username: str | None,
    password: str | None,
    ca_file: Path,
    *,
    host: str = "localhost",
    client_id: str = "",
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> Client:
    """Connect over TLS and wait for CONNACK (or a TLS/connection failure: connect_rc None)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set(
        ca_certs=str(ca_file),
        certfile=str(cert_file) if cert_file else None,
        keyfile=str(key_file) if key_file else None,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    if username is not None:
        c.username_pw_set(username, password)
    wrapper = Client(c)

    def on_connect(
        _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        wrapper.connect_rc = rc.value
        wrapper.connected.set()

    def on_publish(
        _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with wrapper.acked:
            wrapper.acks[mid] = rc.value
            wrapper.acked.notify_all()

    def on_subscribe(
        _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        wrapper.granted.put([r.value for r in rcs])

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        wrapper.messages.put((msg.topic, bytes(msg.payload)))

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        wrapper.connected.set()

    c.on_connect = on_connect
    c.on_publish = on_publish
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_disconnect = on_disconnect
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError):
        return wrapper
    c.loop_start()
    if not wrapper.connected.wait(TIMEOUT):
        c.loop_stop()
        raise TimeoutError("no CONNACK")
    if wrapper.connect_rc != 0:
        c.loop_stop()
    return wrapper
