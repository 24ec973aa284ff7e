"""A small MQTT 5 test client over TLS for the provisioning tests: connect, publish with QoS 1
and wait for the broker's answer, subscribe and collect messages in a queue; and a fleet made
by ``provisioning`` served by a real mosquitto with the generated config."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from provisioning.fleet import add_node, init_fleet
from tests.support.mosquitto import Broker, free_port, start_mosquitto

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
    #: Set when the broker closed this client's connection (or it disconnected itself).
    disconnected: threading.Event = field(default_factory=threading.Event)

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK reason code (0 ok, 135 not authorized, ...)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
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
    clean_start: bool = True,
) -> Client:
    """Connect over TLS and wait for CONNACK (or a TLS/connection failure: connect_rc None).

    With ``clean_start`` False the session persists for an hour after the client goes away."""
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
        wrapper.disconnected.set()
        wrapper.connected.set()

    c.on_connect = on_connect
    c.on_publish = on_publish
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_disconnect = on_disconnect
    props = None
    if not clean_start:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
    try:
        c.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
    except (OSError, ssl.SSLError):
        return wrapper
    c.loop_start()
    if not wrapper.connected.wait(TIMEOUT):
        c.loop_stop()
        raise TimeoutError("no CONNACK")
    if wrapper.connect_rc != 0:
        c.loop_stop()
    return wrapper


@dataclass
class Fleet:
    """A fleet folder from ``provisioning`` and a mosquitto running its generated config."""

    dir: Path
    broker: Broker
    aggregator_port: int

    @property
    def ca(self) -> Path:
        return self.dir / "ca" / "ca.crt"

    def secret(self, *parts: str) -> str:
        return self.dir.joinpath(*parts).read_text().strip()

    def node(
        self,
        name: str,
        password: str | None = None,
        *,
        certs: bool = False,
        client_id: str | None = None,
        clean_start: bool = True,
    ) -> Client:
        folder = self.dir / "nodes" / name
        return connect(
            self.broker.port,
            name,
            password if password is not None else self.secret("nodes", name, "broker_password"),
            self.ca,
            client_id=f"test-{name}" if client_id is None else client_id,
            cert_file=folder / "client.crt" if certs else None,
            key_file=folder / "client.key" if certs else None,
            clean_start=clean_start,
        )

    def aggregator(self, port: int | None = None, client_id: str = "test-aggregator") -> Client:
        """The aggregator's login, on its own listener (or on ``port``)."""
        return connect(
            port or self.aggregator_port,
            "aggregator",
            self.secret("aggregator", "password"),
            self.ca,
            client_id=client_id,
        )


def start_fleet(
    tmp_path: Path,
    *,
    client_certs: bool = False,
    nodes: tuple[str, ...] = ("node-a", "node-b"),
    min_central_version: dict[str, int] | None = None,
    classes: tuple[str, ...] | None = None,
) -> Fleet:
    """``init-fleet`` (broker host localhost, free ports), ``add-node`` for each of ``nodes``
    (their files where they are, so node.yaml loads here; ``--min-central-version`` from
    ``min_central_version`` by name) and mosquitto with the generated ``mosquitto.conf``; stop
    it with ``fleet.broker.stop()``."""
    port, agg_port = free_port(), free_port()
    d = tmp_path / "fleet"
    init_fleet(
        d,
        broker_host="localhost",
        port=port,
        client_certs=client_certs,
        aggregator_port=agg_port,
        **({"classes": classes} if classes else {}),
    )
    for name in nodes:
        floor = (min_central_version or {}).get(name)
        add_node(d, name, files_at=str(d / "nodes" / name), min_central_version=floor)
    # As root, mosquitto would drop to its own user, which cannot read pytest's tmp folders.
    conf = "user root\n" + (d / "broker" / "mosquitto.conf").read_text()
    broker = start_mosquitto(tmp_path / "mosquitto", conf, port)
    if f"listener {agg_port}" in conf:
        _wait_listening(agg_port)
    return Fleet(d, broker, agg_port)


def _wait_listening(port: int, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
