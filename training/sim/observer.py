"""Watches a fleet's retained topics: rounds, verified centrals, node status. Read-only."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vfer import signing
from vfer import weights as wcodec
from vfer.messages import MessageError, RoundMsg, StatusMsg, from_json, open_central
from vfer.mqtt import BrokerSettings, MqttLink
from vfer.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class Seen:
    rounds: dict[int, str] = field(default_factory=dict)  # round id -> state
    centrals: dict[int, tuple[int, dict[str, np.ndarray], int]] = field(default_factory=dict)
    # round id -> (version, trainable weights, submissions)
    status: dict[str, str] = field(default_factory=dict)  # node id -> online/offline


class FleetObserver:
    """Subscribes to the round, central and status topics and keeps what it saw (thread-safe)."""

    def __init__(
        self,
        broker: str,
        public_key: Path,
        prefix: str = "fedvfer",
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """Anonymous by default; a provisioned fleet's observer logs in with ``username`` and
        ``password`` over TLS (``ca_file``), see training.sim.tls_fleet."""
        self.topics = Topics(prefix)
        self.key = signing.load_public_key(public_key)
        self.seen = Seen()
        self.cond = threading.Condition()
        settings = BrokerSettings(
            url=broker,
            client_id=f"fedvfer-sim-observer-{int(time.time())}",
            username=username,
            password=password,
            ca_file=ca_file,
        )
        self.link = MqttLink(
            settings,
            [(self.topics.round, 1), (self.topics.central_bundle, 1), (self.topics.all_status, 1)],
            self._on_message,
        )

    def __enter__(self) -> FleetObserver:
        self.link.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.topics.round:
                r = from_json(payload, RoundMsg)
                with self.cond:
                    self.seen.rounds[r.round_id] = r.state
                    self.cond.notify_all()
            elif topic == self.topics.central_bundle:
                header, body = open_central(payload, self.key)  # other fleets' leftovers fail here
                w = wcodec.from_bytes(body)
                with self.cond:
                    self.seen.centrals[header.round_id] = (
                        header.version,
                        w,
                        header.num_submissions,
                    )
                    self.cond.notify_all()
            else:
                node = self.topics.node_of(topic)
                s = from_json(payload, StatusMsg)
                if node:
                    with self.cond:
                        self.seen.status[node] = s.state
                        self.cond.notify_all()
        except (MessageError, wcodec.WeightsError, ValueError) as exc:
            log.debug("observer ignored a message on %s: %s", topic, exc)

    def wait_round_central(self, round_id: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: round_id in self.seen.centrals, timeout)

    def snapshot(self) -> Seen:
        with self.cond:
            return Seen(dict(self.seen.rounds), dict(self.seen.centrals), dict(self.seen.status))
