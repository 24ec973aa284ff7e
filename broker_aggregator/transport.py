"""The aggregator's MQTT link: paho-mqtt 2 (callback API v2, MQTT 5), moves bytes and nothing else.

Subscriptions are made in ``on_connect`` so a reconnect re-subscribes; the session is
persistent (``clean_start=False`` with a session expiry) so QoS 1 updates that arrive while
the aggregator restarts wait in the broker. ``on_message`` hands (topic, payload) to a callable
that must not raise; the loop never runs inside paho's thread.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600


@dataclass(frozen=True)
class BrokerSettings:
    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    keepalive_s: int = 30


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
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[str, bytes], None],
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.host, self.port, tls = parse_broker_url(settings.url)
        self._subs = subscriptions
        self._handler = on_message
        self._on_connected = on_connected
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5
        )
        if settings.username:
            c.username_pw_set(settings.username, settings.password)
        if tls:
            c.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.client = c
        self._pending: deque[mqtt.MQTTMessageInfo] = deque(maxlen=1000)

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            self.host, self.port, self.settings.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
        self._pending.append(info)

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
            "connected to %s:%s (session present: %s)", self.host, self.port, flags.session_present
        )
        client.subscribe([(t, SubscribeOptions(qos=q)) for t, q in self._subs])
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
        for (topic, _), rc in zip(self._subs, reason_codes, strict=False):
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
            self._handler(msg.topic, bytes(msg.payload))
        except Exception:  # a handler bug must not kill paho's network thread
            log.exception("message handler failed on %s", msg.topic)
