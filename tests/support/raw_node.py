"""A raw MQTT node for aggregator tests: publishes any frame it is given and records its acks.

Unlike ``edge_node.federation.FederationClient`` it keeps no outbox and never resends by
itself, so a test decides exactly what the aggregator sees and when (a lost ack, a resend
after the close, a hostile header).
"""

from __future__ import annotations

import hashlib
import json
import queue
import struct
import threading
import uuid
from collections.abc import Mapping

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import Broker
from vfer import weights as wcodec
from vfer.messages import MAGIC, AckMsg, UpdateHeader, from_json, pack


def update_frame(
    node: str,
    round_id: int,
    base: int,
    seq: int,
    weights: Mapping[str, np.ndarray],
    update_id: str | None = None,
    **over: object,
) -> bytes:
    """A well-formed update frame (``over`` replaces header fields, unchecked)."""
    fields: dict[str, object] = {
        "node_id": node,
        "round_id": round_id,
        "base_version": base,
        "seq": seq,
        "update_id": update_id or uuid.uuid4().hex,
        "created_at": 1.0,
        "clips_per_class": {"anger": 2},
    }
    fields.update(over)
    return pack(UpdateHeader.model_construct(**fields), wcodec.to_bytes(dict(weights)))  # type: ignore[arg-type]


def raw_frame(
    header: Mapping[str, object], body: bytes, *, header_json: bytes | None = None
) -> bytes:
    """A frame with any header (size and checksum of ``body`` filled in), or raw header bytes."""
    if header_json is None:
        full = {**header, "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        header_json = json.dumps(full).encode()
    return MAGIC + struct.pack(">I", len(header_json)) + header_json + body


SHARED_UPDATES = "$share/fedvfer-aggregators/fedvfer/nodes/+/update"


def subscriptions(broker: Broker, topic: str = SHARED_UPDATES) -> int:
    """How many times the broker logged a SUBSCRIBE to ``topic`` (mosquitto ``log_type all``)."""
    return broker.log_text().count(f"{topic} (QoS")


def wait_subscribed(broker: Broker, before: int, timeout: float = 20.0) -> bool:
    """Wait until an aggregator (re)subscribed to the update stream since ``before`` was read."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subscriptions(broker) > before:
            return True
        threading.Event().wait(0.05)
    return False


class RawNode:
    """One paho client on ``<prefix>/nodes/<id>/...``; ``listen=False`` loses every ack."""

    def __init__(self, broker: Broker, node_id: str, *, listen: bool = True) -> None:
        self.node_id = node_id
        self.acks: queue.Queue[AckMsg] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"raw-{node_id}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, clean_start=True)
        self.client.loop_start()
        if listen:
            self.listen()

    def listen(self) -> None:
        info = self.client.subscribe(f"fedvfer/nodes/{self.node_id}/ack", qos=1)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS

    def publish(self, payload: bytes, node: str | None = None) -> None:
        topic = f"fedvfer/nodes/{node or self.node_id}/update"
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait_ack(self, update_id: str, timeout: float = 20.0) -> AckMsg | None:
        """The next ack for ``update_id`` (others are dropped), or None after ``timeout``."""
        import time

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                ack = self.acks.get(timeout=left)
            except queue.Empty:
                return None
            if ack.update_id == update_id:
                return ack
        return None

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.acks.put(from_json(bytes(msg.payload), AckMsg))
