"""What arrives from the broker, turned into typed events for the service loop.

Two threads work here and never raise: paho's (decode small messages, verify the central,
hand updates on) and the checker (sha256, safetensors layout, values: the pure checks of
:mod:`broker_aggregator.validate`), so receiving the next update overlaps checking this one.
Both put events on one queue, which only the loop thread reads. At most
:data:`MAX_WAITING_UPDATES` updates wait in memory: paho's thread then stops reading and the
broker queues the rest (memory flat in N).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker_aggregator.validate import CheckedUpdate, Expectations, inspect_update
from vfer import weights as wcodec
from vfer.fedavg import RunningSum
from vfer.heads_spec import WeightSpec
from vfer.messages import (
    AckMsg,
    CloseMsg,
    MessageError,
    PartialHeader,
    ProgressMsg,
    UpdateHeader,
    from_json,
    open_central,
    open_round,
    unpack,
    verify_message,
)
from vfer.topics import Topics

log = logging.getLogger(__name__)

MAX_WAITING_UPDATES = 32
M = TypeVar("M", ProgressMsg, CloseMsg, PartialHeader)


@dataclass(frozen=True)
class Rejected:
    """An update the checks refused (``header`` when its envelope was readable)."""

    node_id: str
    reason: str
    detail: str
    header: object | None


@dataclass(frozen=True)
class Poison:
    """The checker raised on this update: record it, answer it if its envelope is readable."""

    topic: str
    header: UpdateHeader | None
    detail: str


@dataclass(frozen=True)
class CentralEvent:
    version: int
    weights: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class PartialEvent:
    header: PartialHeader
    sums: RunningSum


@dataclass(frozen=True)
class SecAggEvent:
    """A message on ``<prefix>/nodes/<node>/secagg`` (checked by the leader's secure round)."""

    node_id: str
    payload: bytes


class Connected:
    """The link (re)connected."""


class Intake:
    def __init__(
        self,
        topics: Topics,
        control: dict[str, str],
        spec: Mapping[str, WeightSpec],
        public_key: Ed25519PublicKey | None,
        allow_unsigned: bool,
        expect: Callable[[], Expectations],
    ) -> None:
        self.topics = topics
        self.control = control
        self.spec = spec
        self.public_key = public_key
        self.allow_unsigned = allow_unsigned
        self.expect = expect
        self.events: queue.Queue[object] = queue.Queue()
        self.slots = threading.BoundedSemaphore(MAX_WAITING_UPDATES)
        #: The same bound for secure-aggregation messages (a masked input is as large as an
        #: update); the loop releases one per :class:`SecAggEvent` it handled.
        self.secagg_slots = threading.BoundedSemaphore(MAX_WAITING_UPDATES)
        self._unchecked: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self.stopping = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, name="check-updates", daemon=True)

    def start(self) -> None:
        self._checker.start()

    def stop(self) -> None:
        self.stopping.set()
        self._unchecked.put(None)
        self._checker.join(timeout=5.0)

    # paho's thread: decode, enqueue; never raise --------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        t = self.topics
        try:
            if topic.endswith("/update"):
                self._on_update(topic, payload)
            elif topic.endswith("/secagg"):
                self._on_secagg(topic, payload)
            elif topic == t.round:
                key, unsigned = self.public_key, self.allow_unsigned
                self.events.put(open_round(payload, key, allow_unsigned=unsigned))
            elif topic == t.central_bundle:
                header, body = open_central(
                    payload, self.public_key, allow_unsigned=self.allow_unsigned
                )
                self.events.put(CentralEvent(header.version, wcodec.from_bytes(body)))
            elif topic == self.control["progress"]:
                p = from_json(payload, ProgressMsg)
                self.events.put(self._verified(p, f"progress from worker {p.worker_id!r}"))
            elif topic == self.control["close"]:
                close = from_json(payload, CloseMsg)
                self.events.put(self._verified(close, f"close of round {close.round_id}"))
            elif topic == self.control["partial"]:
                self.events.put(self._partial(payload))
        except (MessageError, wcodec.WeightsError) as exc:
            log.warning("ignored message on %s: %s", topic, exc)

    def _on_update(self, topic: str, payload: bytes) -> None:
        """Hand the update to the checker thread; block (paho stops reading) while 32 wait."""
        while not self.slots.acquire(timeout=0.5):
            if self.stopping.is_set():
                return  # never acked, so the node's outbox sends it again
        self._unchecked.put((topic, payload))

    def _on_secagg(self, topic: str, payload: bytes) -> None:
        """Hand a secure-aggregation message to the loop; block while 32 wait (as updates)."""
        node = self.topics.node_of(topic)
        if node is None:
            return
        while not self.secagg_slots.acquire(timeout=0.5):
            if self.stopping.is_set():
                return
        self.events.put(SecAggEvent(node, payload))

    def _verified(self, msg: M, what: str) -> M:
        """An aggregator-internal message signed with the fleet key (as every aggregator process
        holds it), so a stolen broker login alone cannot speak for a worker or the leader."""
        return verify_message(msg, self.public_key, what, allow_unsigned=self.allow_unsigned)

    def _partial(self, payload: bytes) -> PartialEvent:
        """A worker's signed partial sums: exactly the trainable layout in float64, all finite."""
        header, body = unpack(payload, PartialHeader)
        self._verified(header, f"partial sums of worker {header.worker_id!r}")
        sums = RunningSum()
        if header.nodes:
            arrays = wcodec.from_bytes(body)
            wcodec.check(arrays, self.spec, trainable_only=True, dtypes=("float64",))
            sums = RunningSum(dict(arrays), header.total_weight, len(header.nodes))
        return PartialEvent(header, sums)

    # the checker thread: sha256, safetensors layout, values ---------------------------------
    def _check_loop(self) -> None:
        while (item := self._unchecked.get()) is not None:
            topic, payload = item
            node = self.topics.node_of(topic)
            try:
                self.events.put(inspect_update(payload, node, self.expect()))
            except MessageError as exc:
                self.slots.release()
                self.events.put(Rejected(node or topic, exc.reason, exc.detail, exc.header))
            except Exception as exc:  # a checker bug must not stop the stream
                self.slots.release()
                log.exception("checking an update on %s failed", topic)
                self.events.put(Poison(topic, peek_header(payload), f"{type(exc).__name__}: {exc}"))


def peek_header(payload: bytes) -> UpdateHeader | None:
    """The update's header when it parses (no body checks), else None; never raises."""
    try:
        return unpack(payload, UpdateHeader)[0]
    except Exception:
        return None


class PoisonError(RuntimeError):
    """Raised inside the loop for an update the checker thread could not handle."""


def update_header(ev: object) -> UpdateHeader | None:
    if isinstance(ev, CheckedUpdate):
        return ev.header
    if isinstance(ev, (Rejected, Poison)) and isinstance(ev.header, UpdateHeader):
        return ev.header
    return None


def outcome(ev: object, out: object) -> str:
    if isinstance(out, AckMsg):
        return out.reason or "stored"
    if isinstance(out, ProgressMsg):
        return "reported"
    if isinstance(ev, Rejected):
        return ev.reason
    return "no_answer"


def rejection(h: UpdateHeader, reason: str) -> AckMsg:
    return AckMsg(
        node_id=h.node_id,
        round_id=h.round_id,
        update_id=h.update_id,
        status="rejected",
        reason=reason,
    )
