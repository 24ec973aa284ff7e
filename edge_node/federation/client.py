"""The node's federation client: rounds in, personalized v out, verified central v in.

Usable on its own (the edge node's service and the fleet simulator both drive it)::

    from edge_node.config import FederationConfig
    from edge_node.federation import FederationClient, NodeUpdate

    settings = FederationConfig(enabled=True, broker_url="mqtt://127.0.0.1:1883",
                                fleet_public_key="FLEET/fleet_public_key.pem")
    with FederationClient("pi-7", settings, "outbox.db") as fed:
        rnd = fed.wait_round(timeout=60)            # RoundMsg: id, base version, P, lr, ...
        central = fed.latest_central()              # CentralModel: version, weights, classes
        ...                                         # personalize from central.weights
        fed.submit(NodeUpdate(round_id=rnd.round_id, base_version=rnd.base_version,
                              weights=trainable_v, clips_per_class={"happiness": 12, ...}))
        new = fed.wait_central(newer_than=central.version, timeout=600)

Nothing calls back into your code from paho's thread: wait with :meth:`wait_round` /
:meth:`wait_central` (a condition variable) or poll. Updates go through a persistent SQLite
outbox, resent after reconnects (and every ``resend_s``) until acknowledged. A central v is
accepted only when its Ed25519 signature verifies against the fleet public key, it is newer than
the one held and not older than the freshness floor: the larger of ``min_central_version``
(node.yaml) and the newest ``base_version`` a verified round announced, so a validly signed old
central replayed as the retained message is refused even by a brand-new node. Rounds are signed
with the same key; a round older than the current one is refused. Everything refused is logged
and ignored. The status topic is retained, with a last will that says ``offline``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_node.config import FederationConfig
from edge_node.federation.models import CentralModel, NodeUpdate, fleet_key
from edge_node.federation.outbox import Outbox, ReceivedCentral
from edge_node.federation.secure import Identity, SecureParticipant
from vfer import weights as wcodec
from vfer.config_io import read_secret
from vfer.heads_spec import WeightSpec, vfer_spec
from vfer.messages import (
    AckMsg,
    MessageError,
    NodePrivacy,
    RoundMsg,
    StatusMsg,
    UpdateHeader,
    from_json,
    open_central,
    open_round,
    pack,
    to_json,
    verify_message,
)
from vfer.mqtt import BrokerSettings, MqttLink
from vfer.topics import Topics, check_node_id

log = logging.getLogger(__name__)


class FederationClient:
    def __init__(
        self,
        node_id: str,
        settings: FederationConfig,
        outbox_db: str | os.PathLike[str],
        *,
        public_key: Ed25519PublicKey | str | os.PathLike[str] | None = None,
        allow_unsigned: bool = False,
        resend_s: float = 30.0,
        installed: Callable[[], int] | None = None,
    ) -> None:
        """``installed``: the central version the node runs (default: the newest verified)."""
        self.node_id = check_node_id(node_id)
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self._key = fleet_key(public_key if public_key is not None else settings.fleet_public_key)
        if self._key is None and not allow_unsigned:
            raise ValueError("a fleet public key is required (or allow_unsigned=True for dev)")
        if self._key is None:
            log.warning("INSECURE: node %s accepts UNSIGNED central models", node_id)
        self.allow_unsigned = allow_unsigned
        self.resend_s = resend_s
        self._installed = installed
        self.privacy: Callable[[], NodePrivacy | None] = lambda: None  # the status's epsilon
        self.outbox = Outbox(outbox_db)
        self.received = ReceivedCentral(outbox_db)
        self._cond = threading.Condition()
        self._round: RoundMsg | None = None
        self._central: CentralModel | None = None
        self._events: queue.Queue[tuple[str, object]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rejected_centrals = 0
        self.rejected_rounds = 0
        #: No central older than this is installed (node.yaml, raised by verified rounds).
        self._floor = settings.min_central_version
        self._submit_lock = threading.Lock()
        saved = self.received.load()
        if saved is not None:
            self._central = self._verify_central(saved[1], installed=None)
        identity = Identity.load(settings)
        self.secure = None if identity is None else SecureParticipant(
            node_id, identity, self.topics, self._key,
            lambda topic, payload: self.link.publish(topic, payload, 1, False),
            allow_unsigned=allow_unsigned,
        )  # fmt: skip
        self.link = self._link()

    def _link(self) -> MqttLink:
        s = self.settings
        password = read_secret(s.password_file, "FEDVFER_BROKER_PASSWORD")
        offline = StatusMsg(node_id=self.node_id, state="offline")
        broker = BrokerSettings(
            url=s.broker_url,
            client_id=f"fedvfer-node-{self.node_id}",
            username=s.username or (self.node_id if password else None),
            password=password,
            ca_file=s.ca_file,
            cert_file=s.cert_file,
            key_file=s.key_file,
            keepalive_s=s.keepalive_s,
            will=(self.topics.node_status(self.node_id), to_json(offline)),
            mqtt_version=s.mqtt_version,
        )
        topics = [self.topics.round, self.topics.central_bundle, self.topics.node_ack(self.node_id)]
        topics += self.secure.subscriptions() if self.secure else []
        return MqttLink(
            broker,
            [(t, 1) for t in topics],
            self._on_message,
            lambda: self._events.put(("link_up", None)),
        )

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> FederationClient:
        self._thread = threading.Thread(
            target=self._outbox_loop, name=f"outbox-{self.node_id}", daemon=True
        )
        self._thread.start()
        self.link.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._events.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.link.connected():
            offline = StatusMsg(node_id=self.node_id, state="offline", ts=time.time())
            self.link.publish(self.topics.node_status(self.node_id), to_json(offline), 1, True)
            self.link.flush(timeout=2.0)
        self.link.stop()
        self.outbox.close()
        self.received.close()

    def __enter__(self) -> FederationClient:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # rounds and centrals ---------------------------------------------------------------------
    def current_round(self) -> RoundMsg | None:
        """The latest round announcement (open, closing or finished), or None yet."""
        with self._cond:
            return self._round

    def wait_round(self, timeout: float, after: int = 0) -> RoundMsg | None:
        """Block until an OPEN round with id > ``after`` is announced; None on timeout."""

        def ready() -> bool:
            r = self._round
            return r is not None and r.state == "open" and r.round_id > after

        with self._cond:
            self._cond.wait_for(ready, timeout)
            return self._round if ready() else None

    def latest_central(self) -> CentralModel | None:
        """The newest central v that verified against the fleet key, or None yet."""
        with self._cond:
            return self._central

    def wait_central(self, timeout: float, newer_than: int = 0) -> CentralModel | None:
        """Block until a verified central with version > ``newer_than`` is installed."""

        def ready() -> bool:
            return self._central is not None and self._central.version > newer_than

        with self._cond:
            self._cond.wait_for(ready, timeout)
            return self._central if ready() else None

    # updates --------------------------------------------------------------------------------
    def submit(self, update: NodeUpdate) -> str:
        """Store ``update`` in the outbox (durably) and send it; returns its update id. In a
        secure round it joins with the masked update instead (:mod:`.secure`)."""
        spec = vfer_spec(len(self._classes_hint()))
        dtype = "float32"
        r = self.current_round()
        if r is not None and r.round_id == update.round_id and r.secure_aggregation:
            return self._submit_secure(update, r, spec)
        if r is not None and r.round_id == update.round_id and r.weight_dtype == "float16":
            dtype = "float16"
        arrays = {n: np.asarray(a, dtype=np.float32) for n, a in update.weights.items()}
        wcodec.check(arrays, spec, trainable_only=True)
        body = wcodec.to_bytes({n: a.astype(dtype) for n, a in arrays.items()})
        update_id = uuid.uuid4().hex
        with self._submit_lock:
            seq = self.outbox.next_seq()
            header = UpdateHeader(
                node_id=self.node_id,
                round_id=update.round_id,
                base_version=update.base_version,
                update_id=update_id,
                seq=seq,
                created_at=time.time(),
                clips_per_class=dict(update.clips_per_class),
                metrics=dict(update.metrics),
                dtype=dtype,  # type: ignore[arg-type]
            )
            topic = self.topics.node_update(self.node_id)
            self.outbox.add(seq, update_id, update.round_id, topic, pack(header, body))
        self._events.put(("submitted", update_id))
        return update_id

    def _submit_secure(self, update: NodeUpdate, r: RoundMsg, spec: dict[str, WeightSpec]) -> str:
        """Join the secure round; "" (and nothing sent) without an identity or the base."""
        base = self.latest_central()
        if self.secure is None or base is None or base.version != update.base_version:
            log.warning("round %d is secure: no identity key or base central; sat out", r.round_id)
            return ""
        clips = sum(update.clips_per_class.values())
        self.secure.start(r, update.weights, base.weights, spec, clips)
        return f"secagg-{r.round_id}"

    def pending(self) -> int:
        return self.outbox.pending_count()

    def _classes_hint(self) -> tuple[str, ...]:
        r, c = self.current_round(), self.latest_central()
        if c is not None:
            return c.classes
        if r is not None:
            return tuple(r.classes)
        raise ValueError("no round or central v known yet: wait_round() before submit()")

    # the outbox thread: sends, resends, settles acks --------------------------------------------
    def _outbox_loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, data = self._events.get(timeout=min(self.resend_s, 1.0))
            except queue.Empty:
                kind, data = "tick", None
            try:
                if kind == "ack":
                    assert isinstance(data, AckMsg)
                    if self.outbox.mark_done(data.update_id, data.status, data.reason):
                        why = f" ({data.reason})" if data.reason else ""
                        log.info("update %s %s%s", data.update_id, data.status, why)
                elif kind == "central":
                    assert isinstance(data, tuple)
                    self.received.save(*data)
                elif kind == "secagg" and self.secure:
                    self.secure.on_message(*data)  # type: ignore[misc]
                elif kind == "secagg_round" and self.secure:
                    self.secure.on_round(data)  # type: ignore[arg-type]
                elif kind in ("connected", "link_up"):
                    self._publish_status()
                    self._send_due(0.0)
                    if kind == "link_up" and self.secure:
                        self.secure.resend()
                elif kind == "stop":
                    return
                else:
                    self._send_due(self.resend_s)
            except Exception:  # the outbox thread must survive a bad moment
                log.exception("outbox step %s failed", kind)

    def _send_due(self, older_than_s: float) -> None:
        if not self.link.connected():
            return
        for item in self.outbox.due(older_than_s):
            if self.link.publish(item.topic, item.payload, 1, False):
                self.outbox.mark_sent(item.update_id)

    def publish_status(self) -> None:
        """Publish the status topic again (soon, from the outbox thread): after an install."""
        self._events.put(("connected", None))

    def _publish_status(self) -> None:
        c, r = self.latest_central(), self.current_round()
        version = self._installed() if self._installed is not None else (c.version if c else 0)
        msg = StatusMsg(
            node_id=self.node_id,
            state="online",
            central_version=version or None,
            round_id=r.round_id if r else None,
            ts=time.time(),
            privacy=self.privacy(),
        )
        self.link.publish(self.topics.node_status(self.node_id), to_json(msg), 1, True)

    # paho's thread: decode, verify, hand over; never raise -------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.topics.round:
                self._on_round(payload)
            elif topic == self.topics.central_bundle:
                central = self._verify_central(payload, installed=self.latest_central())
                if central is not None:
                    with self._cond:
                        self._central = central
                        self._cond.notify_all()
                    self._events.put(("central", (central.version, payload)))
                    self._events.put(("connected", None))  # refresh the status topic
            elif topic.startswith(f"{self.topics.prefix}/secagg/"):
                self._events.put(("secagg", (topic, payload)))
            elif topic == self.topics.node_ack(self.node_id):
                ack = from_json(payload, AckMsg)
                what = f"ack for update {ack.update_id}"
                verify_message(ack, self._key, what, allow_unsigned=self.allow_unsigned)
                if ack.node_id == self.node_id:
                    self._events.put(("ack", ack))
        except MessageError as exc:
            log.warning("ignored message on %s: reason=%s (%s)", topic, exc.reason, exc.detail)

    def _on_round(self, payload: bytes) -> None:
        """Install a signed round no older than the current one; its base raises the floor."""
        try:
            msg = open_round(payload, self._key, allow_unsigned=self.allow_unsigned)
            current = self.current_round()
            if current is not None and msg.round_id < current.round_id:
                raise MessageError(
                    "stale_round", f"round {msg.round_id} < current round {current.round_id}"
                )
        except MessageError as exc:
            log.warning("rejected round: reason=%s (%s)", exc.reason, exc.detail)
            self.rejected_rounds += 1  # after the log line: tests wait on this counter
            return
        with self._cond:
            self._round = msg
            self._floor = max(self._floor, msg.base_version)
            installed = self._central
            self._cond.notify_all()
        if self.secure is not None:
            self._events.put(("secagg_round", msg))
        if installed is not None and installed.version < msg.base_version:
            log.warning(
                "held central v%d is older than round %d's base v%d; waiting for it",
                installed.version,
                msg.round_id,
                msg.base_version,
            )

    def _verify_central(
        self, payload: bytes, installed: CentralModel | None
    ) -> CentralModel | None:
        try:
            header, body = open_central(payload, self._key, allow_unsigned=self.allow_unsigned)
            with self._cond:
                floor = self._floor
            if header.version < floor:
                raise MessageError(
                    "stale", f"v{header.version} is older than the newest known v{floor}"
                )
            if installed is not None and header.version <= installed.version:
                if header.version < installed.version:
                    raise MessageError(
                        "not_newer", f"v{header.version} <= installed v{installed.version}"
                    )
                return None  # the same central again (retained redelivery)
            weights = wcodec.from_bytes(body)
            wcodec.check(weights, vfer_spec(len(header.classes)), trainable_only=True)
        except (MessageError, wcodec.WeightsError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, MessageError) else "bad_weights"
            log.warning("rejected central: reason=%s (%s)", reason, exc)
            self.rejected_centrals += 1  # after the log line: tests wait on this counter
            return None
        log.info("accepted central v%d (round %d)", header.version, header.round_id)
        return CentralModel(
            header.version,
            header.round_id,
            tuple(header.classes),
            {n: a.astype(np.float32) for n, a in weights.items()},
            header.body_sha256,
        )
