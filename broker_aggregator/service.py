"""The aggregator process: one MQTT link, one loop thread, a worker and (usually) the leader.

Three threads: paho's and the checker's turn what arrives into typed events
(:mod:`broker_aggregator.intake`); the loop thread owns SQLite, stores updates in group commits
(:mod:`broker_aggregator.group_commit`), drives :class:`~broker_aggregator.worker.Worker` and
:class:`~broker_aggregator.leader.Leader`, and carries out the leader's effects.
A process started with ``leader=False`` is an extra worker: it shares the update stream
through ``$share/<group>/...`` and answers the leader's close requests with partial sums.
"""

from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_aggregator.config import AggregatorConfig
from broker_aggregator.confirm import FinalConfirmation
from broker_aggregator.effects import Effect, LocalClose, NewCentral, NewRound, Publish
from broker_aggregator.fleet_view import FleetView
from broker_aggregator.group_commit import BATCHED, Committed, GroupCommit
from broker_aggregator.intake import CentralEvent, Connected, Intake, PartialEvent, SecAggEvent
from broker_aggregator.leader import Leader
from broker_aggregator.store import State
from broker_aggregator.validate import CheckedUpdate, Expectations
from broker_aggregator.worker import Worker
from vfer import signing
from vfer import weights as wcodec
from vfer.config_io import read_secret
from vfer.heads_spec import vfer_spec
from vfer.messages import CloseMsg, ProgressMsg, RoundMsg, pack_signed, sign_message, to_json
from vfer.mqtt import BrokerSettings, MqttLink
from vfer.topics import Topics

log = logging.getLogger(__name__)

TICK_S = 0.2
SWITCH_INTERVAL_S = 0.0005
BATCH = 64


def fleet_view(cfg: AggregatorConfig, topics: Topics) -> FleetView | None:
    """The operator endpoint (``metrics:``), or None when it is off."""
    m = cfg.metrics
    if not m.enabled:
        return None
    password = read_secret(m.password_file, "FEDVFER_METRICS_PASSWORD")
    budget = cfg.central_privacy.epsilon if cfg.central_privacy is not None else None
    return FleetView(cfg.state_db, topics, m.host, m.port, password, epsilon_budget=budget)


def control_topics(topics: Topics) -> dict[str, str]:
    """Aggregator-internal topics (worker <-> leader)."""
    base = f"{topics.prefix}/aggregator"
    return {"progress": f"{base}/progress", "close": f"{base}/close", "partial": f"{base}/partial"}


class AggregatorService:
    def __init__(self, cfg: AggregatorConfig, *, leader: bool = True) -> None:
        self.cfg = cfg
        self.is_leader = leader
        self.topics = Topics(cfg.topic_prefix)
        self.control = control_topics(self.topics)
        self.stop_event = threading.Event()
        self.key: Ed25519PrivateKey | None = (
            signing.load_private_key(cfg.signing_key_file) if cfg.signing_key_file else None
        )
        if self.key is None:
            log.warning("INSECURE: the central v is published UNSIGNED (insecure_unsigned: true)")
        self.public_key = self.key.public_key() if self.key else None
        self.spec = vfer_spec(len(cfg.classes))
        self.intake = Intake(
            self.topics,
            self.control,
            self.spec,
            self.public_key,
            cfg.insecure_unsigned,
            lambda: self.worker.expect,
        )
        self.events = self.intake.events
        self.fleet_view = fleet_view(cfg, self.topics) if leader else None
        #: What became of each message the loop handled (:class:`~broker_aggregator.group_commit.Committed`).
        self.outcomes: collections.Counter[str] = collections.Counter()
        #: Set once all rounds are done: what must be read back from the broker before exit.
        self.final: FinalConfirmation | None = None
        self._warned_311 = False
        #: Why the service stopped on its own with an error (the CLI exits non-zero with it).
        self.fatal: str | None = None

    @property
    def poisoned(self) -> int:
        """Messages whose handling raised (recorded in the ``poison`` table)."""
        return self.outcomes["poison"]

    # the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Run until :attr:`stop_event` is set or, on the leader, the configured rounds are done."""
        cfg = self.cfg
        # Two busy threads share the GIL: paho's (decode, check) and this loop (write, commit,
        # ack). Each system call this loop makes gives the GIL away, and getting it back waits
        # for the switch interval (5 ms by default): measured, that alone capped the service
        # near 100 updates/s. A shorter interval hands it back sooner.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.state = state = State(cfg.state_db, fsync=cfg.fsync_updates)
        self.link = self._link()
        self.worker = Worker(
            cfg.worker_id,
            state,
            self.topics,
            self._expectations(),
            cfg.weighting,
            cfg.max_replacements_per_round,
        )
        self.leader = (
            Leader(cfg, state, self.topics, self.key, self.control) if self.is_leader else None
        )
        self.commits = GroupCommit(state, self.worker, self.leader)
        self.intake.start()
        if self.fleet_view is not None:
            self.fleet_view.start()
        try:
            if self.leader is not None:
                self._apply(
                    self.leader.start(str(cfg.initial_weights) if cfg.initial_weights else None)
                )
            self.link.start()
            self._loop(state)
        finally:
            self._shut_down(state)

    def _link(self) -> MqttLink:
        cfg = self.cfg
        password = read_secret(cfg.password_file, "FEDVFER_BROKER_PASSWORD")
        settings = BrokerSettings(
            cfg.broker_url,
            f"fedvfer-{cfg.worker_id}",
            cfg.username,
            password,
            cfg.ca_file,
            cfg.keepalive_s,
            mqtt_version=cfg.mqtt_version,
            max_inflight=100,
            reconnect_max_delay_s=5,
        )
        return MqttLink(
            settings, self._subscriptions, self._on_message, lambda: self.events.put(Connected())
        )

    def _shut_down(self, state: State) -> None:
        self.intake.stopping.set()
        self.link.flush(timeout=5.0)
        self.link.stop()
        self.intake.stop()
        if self.fleet_view is not None:
            self.fleet_view.stop()
        state.close()

    def _subscriptions(self, protocol: str) -> list[tuple[str, int]]:
        """What to subscribe to on a connection that speaks ``protocol`` (paho's thread)."""
        t = self.topics
        if protocol == "5":
            updates = t.shared_updates(self.cfg.share_group)
        elif self.is_leader:
            updates = t.all_updates
            if not self._warned_311:
                self._warned_311 = True
                log.warning(
                    "MQTT 3.1.1: no shared subscription; this aggregator reads %s directly and "
                    "must be the ONLY worker (extra workers need MQTT 5 $share)",
                    updates,
                )
        else:
            self.fatal = (
                "this broker connection speaks MQTT 3.1.1, and an extra worker needs MQTT 5 "
                "shared subscriptions ($share): run the leader alone, or use an MQTT 5 broker"
            )
            log.error("%s; stopping", self.fatal)
            self.stop_event.set()
            return []
        subs = [(updates, 1), (t.round, 1), (t.central_bundle, 1), (self.control["close"], 1)]
        if self.is_leader:
            subs += [(self.control["progress"], 1), (self.control["partial"], 1)]
            if self.cfg.secure_aggregation is not None:
                subs.append((t.all_secagg, 1))
        if self.fleet_view is not None:
            subs += self.fleet_view.subscriptions()
        return subs

    def _on_message(self, topic: str, payload: bytes) -> None:
        """paho's thread: node statuses feed the fleet view, everything else the intake."""
        if self.fleet_view is None or not self.fleet_view.offer(topic, payload):
            self.intake.on_message(topic, payload)

    def _loop(self, state: State) -> None:
        last_tick = 0.0
        while not self.stop_event.is_set():
            try:
                ev: object | None = self.events.get(timeout=TICK_S)
            except queue.Empty:
                ev = None
            if isinstance(ev, BATCHED):
                self._group_commit(ev, state)
            elif ev is not None:
                self._dispatch(ev)
            now = time.monotonic()
            if self.leader is not None and now - last_tick >= TICK_S:
                last_tick = now
                self._apply(self.leader.tick(time.time()))
            if self.leader is not None and self.leader.done and self._published(now):
                return
        if (
            self.leader is not None
            and self.leader.done
            and not (self.final and self.final.confirmed)
        ):
            self.fatal = (
                "stopped before the final round and central were confirmed on the broker; "
                "start the service again to publish them"
            )

    # the end: confirmed on the broker, never merely handed to paho ------------------------
    def _published(self, now: float) -> bool:
        """True once the broker holds the final retained round and central (read back).

        Until then, at each step of :data:`~broker_aggregator.confirm.RETRY_S` while
        connected: publish both again and subscribe to their topics once more, which makes
        the broker send its retained copies back; :meth:`_dispatch` shows them to the tracker.
        """
        assert self.leader is not None
        if self.final is None:
            row, latest = self.state.current_round(), self.state.latest_central()
            assert row is not None and latest is not None
            self.final = FinalConfirmation(row.round_id, latest[0], next_try=now)
            log.info(
                "all rounds done: confirming round %d and central v%d on the broker",
                row.round_id,
                latest[0],
            )
        if self.final.confirmed:
            log.info(
                "round %d and central v%d are on the broker",
                self.final.round_id,
                self.final.central_version,
            )
            return True
        if self.final.due(now):
            if self.link.connected():
                self._apply(self.leader.republish())
                t = self.topics
                self.link.client.subscribe([(t.round, 1), (t.central_bundle, 1)])
            else:
                log.warning("broker not reachable: the final central is not published yet")
        return False

    def _group_commit(self, first: object, state: State) -> None:
        """Store a run of queued updates in one transaction (:mod:`~broker_aggregator.group_commit`),
        then send the acks and progress it produced."""
        batch, other = [first], None
        while len(batch) < BATCH:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                break
            if not isinstance(ev, BATCHED):
                other = ev
                break
            batch.append(ev)
        try:
            done = self.commits.run(batch)
        finally:
            for ev in batch:
                if isinstance(ev, CheckedUpdate):
                    self.intake.slots.release()
        self._send(done)
        if self.leader is not None:
            self._apply(self.leader.tick(time.time()))
        if other is not None:
            self._dispatch(other)

    def _send(self, done: Committed) -> None:
        self.outcomes.update(done.outcomes)
        for ack in done.acks:
            signed = to_json(sign_message(ack, self.key))  # a node drops its update on it
            self.link.publish(self.topics.node_ack(ack.node_id), signed, 1, False)
        for p in done.progress:
            self._publish_progress(p)

    def _requeue(self, progress: list[ProgressMsg]) -> None:
        for p in progress:
            self.events.put(p)

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out what the leader decided, in order."""
        for e in effects:
            if isinstance(e, Publish):
                self.link.publish(e.topic, e.payload, 1, e.retain)
            elif isinstance(e, LocalClose):
                self.events.put(e)
            elif isinstance(e, NewCentral):
                self.worker.on_central(e.version, e.weights)
            elif isinstance(e, NewRound):
                self._requeue(self.worker.on_round(e.round))

    def _dispatch(self, ev: object) -> None:
        """A control event; one that raises is logged and recorded as poison, never fatal."""
        if self.final is not None and isinstance(ev, RoundMsg):
            self.final.saw_round(ev.round_id, ev.state)
        elif self.final is not None and isinstance(ev, CentralEvent):
            self.final.saw_central(ev.version)
        try:
            self._dispatch_one(ev)
        except Exception as exc:
            log.exception("handling %s failed", type(ev).__name__)
            self.state.rollback()
            self.outcomes.update(self.commits.poison(ev, f"{type(exc).__name__}: {exc}").outcomes)

    def _dispatch_one(self, ev: object) -> None:
        """Route a control event. The leader's process ignores the broker's echo of its own
        round, central and close: its worker got them directly (:meth:`_apply`)."""
        w, lead = self.worker, self.leader
        if isinstance(ev, LocalClose) or (isinstance(ev, CloseMsg) and lead is None):
            result = w.partial(ev.close if isinstance(ev, LocalClose) else ev)
            if result is not None and lead is not None:
                self._apply(lead.on_partial(*result))
            elif result is not None:
                header, sums = result
                body = wcodec.to_bytes(sums.sums) if sums.count else b""
                self.link.publish(
                    self.control["partial"], pack_signed(header, body, self.key), 1, False
                )
        elif isinstance(ev, SecAggEvent):
            self.intake.secagg_slots.release()
            if lead is not None:
                self._apply(lead.on_secagg(ev.node_id, ev.payload))
        elif isinstance(ev, PartialEvent) and lead is not None:
            self._apply(lead.on_partial(ev.header, ev.sums))
        elif isinstance(ev, RoundMsg) and lead is None:
            for p in w.on_round(ev):
                self._publish_progress(p)
        elif isinstance(ev, CentralEvent) and lead is None:
            w.on_central(ev.version, ev.weights)
        elif isinstance(ev, Connected) and lead is not None:
            self._apply(lead.republish())

    def _publish_progress(self, p: ProgressMsg) -> None:
        """To the leader, signed with the fleet key (the leader refuses it otherwise)."""
        self.link.publish(self.control["progress"], to_json(sign_message(p, self.key)), 1, False)

    def _expectations(self) -> Expectations:
        cfg = self.cfg
        return Expectations(
            spec=self.spec,
            classes=tuple(cfg.classes),
            max_payload_bytes=cfg.max_payload_bytes,
            max_abs_weight=cfg.max_abs_weight,
            max_update_norm=cfg.max_update_norm,
            dtypes=("float32", "float16") if cfg.float16_transport else ("float32",),
            max_clips_per_class=cfg.max_clips_per_class,
            weighting=cfg.weighting,
        )
