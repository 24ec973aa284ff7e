"""The one MQTT link both roles use (aggregator and node): paho-mqtt 2, callback API v2, bytes only.

* ``mqtt_version`` picks the protocol: ``"5"``, ``"3.1.1"`` or ``"auto"`` (the default: a
  throwaway MQTT 5 connection asks first, see :func:`probe_protocol`; when the broker answers
  CONNACK "Unsupported protocol version" the link connects with 3.1.1 and says so once in the
  log). Mosquitto speaks both; amqtt 0.12, the broker the demo embeds
  (:mod:`training.sim.embedded_broker`), speaks only 3.1.1. Publishes before the first connection are
  not guaranteed to go out: both roles publish again on every connect.
* Sessions are persistent (MQTT 5: ``clean_start=False`` with a 24 h session expiry; 3.1.1:
  ``clean_session=False``), so QoS 1 messages sent while a client is away wait in the broker.
* Subscriptions are made in ``on_connect``, so a reconnect re-subscribes. They may depend on
  the protocol the connection ended up with (pass a callable): the aggregator needs MQTT 5 for
  ``$share`` on amqtt.
* ``on_message`` hands (topic, payload) to a callable; an exception there is logged, never
  raised into paho's network thread.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600
#: CONNACK reason code of an MQTT 5 CONNECT refused by a 3.1.1-only broker (3.1.1's return code
#: 1, "unacceptable protocol version", reads as 0x84 to an MQTT 5 client).
UNSUPPORTED_PROTOCOL_VERSION = 0x84

PROBE_TIMEOUT_S = 5.0

MqttVersion = Literal["5", "3.1.1", "auto"]
Subscriptions = Sequence[tuple[str, int]] | Callable[[str], Sequence[tuple[str, int]]]


@dataclass(frozen=True)
class BrokerSettings:
    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    keepalive_s: int = 30
    cert_file: Path | None = None
    key_file: Path | None = None
    will: tuple[str, bytes] | None = None
    mqtt_version: MqttVersion = "auto"
    max_inflight: int = 20
    reconnect_max_delay_s: int = 30


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` to (host, port, tls)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


class MqttLink:
    def __init__(
        self,
        settings: BrokerSettings,
        subscriptions: Subscriptions,
        on_message: Callable[[str, bytes], None],
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.host, self.port, self._tls = parse_broker_url(settings.url)
        self._subs = subscriptions
        self._current_subs: list[tuple[str, int]] = []
        self._handler = on_message
        self._on_connected = on_connected
        self._stopping = threading.Event()
        self._prober: threading.Thread | None = None
        self.client = self._make_client("3.1.1" if settings.mqtt_version == "3.1.1" else "5")
        self._pending: deque[mqtt.MQTTMessageInfo] = deque(maxlen=1000)

    def _make_client(self, protocol: str) -> mqtt.Client:
        s = self.settings
        v5 = protocol == "5"
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        _configure(c, s, self._tls)
        if s.will is not None:
            c.will_set(s.will[0], s.will[1], qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=s.reconnect_max_delay_s)
        c.max_inflight_messages_set(s.max_inflight)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    @property
    def protocol(self) -> str:
        """The protocol of the (next) connection: ``"5"`` or ``"3.1.1"``."""
        return "5" if self.client.protocol == mqtt.MQTTv5 else "3.1.1"

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself); ``auto`` probes first."""
        if self.settings.mqtt_version == "auto":
            self._prober = threading.Thread(
                target=self._probe_then_connect, name=f"mqtt-probe-{self.port}", daemon=True
            )
            self._prober.start()
        else:
            self._connect()

    def _connect(self) -> None:
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self.client.connect_async(
                self.host, self.port, self.settings.keepalive_s, clean_start=False, properties=props
            )
        else:
            self.client.connect_async(self.host, self.port, self.settings.keepalive_s)
        self.client.loop_start()

    def _probe_then_connect(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            answer = probe_protocol(self.settings, self.host, self.port, self._tls)
            if answer is not None:
                break
            log.info("broker %s:%s did not answer; trying again", self.host, self.port)
            self._stopping.wait(delay)
            delay = min(delay * 2, float(self.settings.reconnect_max_delay_s))
        else:
            return
        if answer == "3.1.1":
            log.warning(
                "broker %s:%s does not speak MQTT 5 (CONNACK: Unsupported protocol version): "
                "using MQTT 3.1.1",
                self.host,
                self.port,
            )
            self.client = self._make_client("3.1.1")
        if not self._stopping.is_set():
            self._connect()

    def stop(self) -> None:
        self._stopping.set()
        if self._prober is not None:
            self._prober.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def connected(self) -> bool:
        return bool(self.client.is_connected())

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Hand a message to paho; False when paho refused it (not merely not yet connected)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        self._pending.append(info)
        return True

    def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until recent QoS 1 publishes reached the broker."""
        deadline = time.monotonic() + timeout
        while self._pending:
            info = self._pending.popleft()
            left = deadline - time.monotonic()
            if left <= 0 or not self.client.is_connected():
                return
            if info.rc != mqtt.MQTT_ERR_SUCCESS or info.is_published():
                continue
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError):
                continue

    # paho's thread ------------------------------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.host, self.port, reason_code)
            return
        log.info(
            "connected to %s:%s with MQTT %s (session present: %s)",
            self.host,
            self.port,
            self.protocol,
            flags.session_present,
        )
        subs = self._subs(self.protocol) if callable(self._subs) else self._subs
        self._current_subs = list(subs)
        if self._current_subs:
            client.subscribe(self._current_subs)
        if self._on_connected is not None:
            self._on_connected()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        for (topic, _), rc in zip(self._current_subs, reason_codes, strict=False):
            if rc.is_failure:
                log.error("subscription to %s refused: %s", topic, rc)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code != 0:
            log.warning(
                "disconnected from %s:%s: %s; reconnecting", self.host, self.port, reason_code
            )

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handler(msg.topic, bytes(msg.payload))  # bytes already: no copy
        except Exception:  # a handler bug must not kill paho's network thread
            log.exception("message handler failed on %s", msg.topic)


def _configure(c: mqtt.Client, s: BrokerSettings, tls: bool) -> None:
    if s.username:
        c.username_pw_set(s.username, s.password)
    if tls:
        c.tls_set(
            ca_certs=str(s.ca_file) if s.ca_file else None,
            certfile=str(s.cert_file) if s.cert_file else None,
            keyfile=str(s.key_file) if s.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )


def probe_protocol(
    settings: BrokerSettings, host: str, port: int, tls: bool, timeout: float = PROBE_TIMEOUT_S
) -> str | None:
    """Which protocol the broker speaks: ``"5"``, ``"3.1.1"``, or None when it did not answer.

    A throwaway MQTT 5 connection (client id ``<id>-probe``, clean start, no CONNECT
    properties: a 3.1.1 broker can parse that and refuse it with "unacceptable protocol
    version", where amqtt 0.12 stalls on a CONNECT that carries properties). Any MQTT 5 answer,
    even "not authorized", means the broker speaks 5. The real session is never touched.
    """
    answer: list[ReasonCode] = []
    done = threading.Event()

    def on_connect(
        c: mqtt.Client, u: object, f: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None
    ) -> None:
        answer.append(rc)
        done.set()

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{settings.client_id}-probe", protocol=mqtt.MQTTv5
    )
    _configure(c, settings, tls)
    c.on_connect = on_connect
    try:
        c.connect(host, port, keepalive=max(5, int(timeout) * 2), clean_start=True)
    except (OSError, ValueError) as exc:
        log.debug("probe of %s:%s failed: %s", host, port, exc)
        return None
    c.loop_start()
    try:
        if not done.wait(timeout):
            return None
    finally:
        c.disconnect()
        c.loop_stop()
    return "3.1.1" if answer[0].value == UNSUPPORTED_PROTOCOL_VERSION else "5"
