"""The leader: opens rounds, applies the round policy, combines partial sums, signs the central v.

State lives in SQLite before anything is published, so a restart at any point republishes
what was decided and carries on: an open round keeps collecting, a closing round asks the
workers for their sums again, a finished round's central is republished (retained).
All methods run on the service loop's thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_aggregator.columns import column_reader
from broker_aggregator.config import AggregatorConfig
from broker_aggregator.policy import Decision, RoundPolicy
from broker_aggregator.store import RoundRow, State
from vfer import weights as wcodec
from vfer.fedavg import EmptyAggregationError, RunningSum, central_problem
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.messages import (
    AckMsg,
    CentralHeader,
    CloseMsg,
    PartialHeader,
    ProgressMsg,
    RoundMsg,
    sign_central,
    sign_message,
    sign_round,
    to_json,
    unpack,
)
from vfer.robust import aggregate_blocks, capped_factors
from vfer.topics import Topics

log = logging.getLogger(__name__)

RESEND_CLOSE_S = 2.0


def load_initial_weights(path: str, num_classes: int) -> dict[str, np.ndarray]:
    """The trainable v arrays from a safetensors file (a bundle's full head is fine)."""
    spec = vfer_spec(num_classes)
    raw = wcodec.load(path)
    names = trainable_names(spec)
    weights = {n: raw[n].astype(np.float32) for n in names if n in raw}
    wcodec.check(weights, spec, trainable_only=True)
    return weights


@dataclass(frozen=True)
class Publish:
    """Send ``payload`` on ``topic`` (QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True)
class LocalClose:
    """Ask this process's own worker for its partial sum."""

    close: CloseMsg


@dataclass(frozen=True)
class NewCentral:
    """This process's worker now checks updates against this central."""

    version: int
    weights: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class NewRound:
    """This process's worker now follows this round."""

    round: RoundMsg


Effect = Publish | LocalClose | NewCentral | NewRound


class Leader:
    """The round's decisions. Public methods return the :data:`Effect` list the service applies
    in order (publish, hand a close or a new round or central to the local worker); no
    callbacks, no MQTT. ``on_progress`` returns the node's answer directly."""

    def __init__(
        self,
        cfg: AggregatorConfig,
        state: State,
        topics: Topics,
        key: Ed25519PrivateKey | None,
        control_topics: dict[str, str],
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.topics = topics
        self._key = key
        self._control = control_topics
        self._out: list[Effect] = []
        r = cfg.round
        self.policy = RoundPolicy(r.min_submissions, r.max_submissions, r.deadline_s)
        self._partials: dict[str, tuple[PartialHeader, RunningSum]] = {}
        self._close: CloseMsg | None = None
        self._close_sent = 0.0
        self.done = False

    def _drain(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._out.append(Publish(topic, payload, retain))

    # start and reconnect ------------------------------------------------------------------
    def start(self, initial_weights: str | None) -> list[Effect]:
        if self.state.latest_central() is None:
            if initial_weights is None:
                raise ValueError("the state db has no central v yet: give initial_weights")
            weights = load_initial_weights(initial_weights, len(self.cfg.classes))
            self._store_central(0, weights, 0)
        self._install_latest_central()
        row = self.state.current_round()
        if row is None or row.state == "finished":
            self._open_next()
        else:
            self._announce_round(row)
            if row.state == "closing":
                self._start_closing(row)
        return self._drain()

    def republish(self) -> list[Effect]:
        """After a (re)connect: the retained central and round, and a pending close."""
        latest = self.state.latest_central()
        if latest is not None:
            self._publish(self.topics.central_bundle, latest[1], retain=True)
        row = self.state.current_round()
        if row is not None:
            self._publish(self.topics.round, to_json(self._round_msg(row)), retain=True)
        if self._close is not None:
            self._publish(self._control["close"], to_json(self._close))
        for ack in self.counted_acks():
            self._publish(self.topics.node_ack(ack.node_id), to_json(sign_message(ack, self._key)))
        return self._drain()

    # events --------------------------------------------------------------------------------
    def on_progress(self, p: ProgressMsg) -> AckMsg | None:
        """A worker stored (or, with ``p.reason``, could not store) an update; the node's answer.

        Exactly-once answers: an update that already counts in its round (same ``update_id``,
        or same node and ``seq``) is answered ``stored`` again, whatever the round's state and
        before any round check; ``accepted`` keeps these answers for the last
        :data:`~broker_aggregator.store.ANSWER_ROUNDS` rounds. Otherwise ``stored`` only for an
        update that now counts (it is in ``accepted``, so the close assigns it); one a worker
        stored after this leader decided to close is ``rejected``/``round_closed``, so its node
        knows it was left out. Runs inside the loop's transaction; the caller publishes the
        ack after the commit.
        """
        counted = self.state.counted(p.round_id, p.node_id)
        if counted is not None and (counted[1] == p.update_id or counted[0] == p.seq):
            if p.reason is not None:
                log.info(
                    "round %d: %s's update counts already: stored, again", p.round_id, p.node_id
                )
            return self._ack(p, None)  # already counts (a resend or a re-announce)
        row = self.state.current_round()
        if p.reason is not None:
            stale_view = row is not None and row.state == "open" and row.round_id == p.round_id
            if stale_view and p.reason != "stale_base":
                return None  # the worker's view of the round lagged: not stored, it comes again
            return self._reject(p, p.reason)
        if row is None or p.round_id > row.round_id:
            return None  # not known here yet (a worker ahead of a restarting leader)
        if row.round_id != p.round_id or row.state != "open":
            return self._reject(p, "round_closed")
        if counted is not None and counted[0] > p.seq:
            return self._reject(p, "replay")
        self.state.record_accepted(p.round_id, p.node_id, p.worker_id, p.seq, p.update_id, p.factor)
        log.info("round %d: %s submitted (via %s)", p.round_id, p.node_id, p.worker_id)
        return self._ack(p, None)

    def _reject(self, p: ProgressMsg, reason: str) -> AckMsg | None:
        """A final rejection, logged and counted; ``ahead`` is no verdict (no ack, not counted)."""
        if reason == "ahead":
            log.info(
                "no answer yet for node %s: reason=ahead (round %d not known yet)",
                p.node_id,
                p.round_id,
            )
            return None
        log.warning(
            "rejected update from node %s: reason=%s (round %d, seq %d)",
            p.node_id,
            reason,
            p.round_id,
            p.seq,
        )
        row = self.state.current_round()
        self.state.count_rejection(row.round_id if row else 0, reason)
        return self._ack(p, reason)

    def counted_acks(self) -> list[AckMsg]:
        """``stored`` for every update counted in a round that is closing (sent after a restart)."""
        row = self.state.current_round()
        if row is None or row.state != "closing":
            return []
        return [
            AckMsg(node_id=n, round_id=row.round_id, update_id=uid, status="stored")
            for n, _seq, uid in self.state.counted_updates(row.round_id)
        ]

    @staticmethod
    def _ack(p: ProgressMsg, reason: str | None) -> AckMsg:
        return AckMsg(
            node_id=p.node_id,
            round_id=p.round_id,
            update_id=p.update_id,
            status="rejected" if reason else "stored",
            reason=reason,
        )

    def on_partial(self, header: PartialHeader, sums: RunningSum) -> list[Effect]:
        if self._close is None or header.round_id != self._close.round_id:
            return []
        if header.worker_id not in self._close.assignments:  # it was asked for nothing
            log.warning(
                "round %d: ignored partial sums from %r, which has no assigned updates",
                header.round_id,
                header.worker_id,
            )
            return []
        self._partials[header.worker_id] = (header, sums)
        return self.tick(time.time())

    def tick(self, now: float) -> list[Effect]:
        self._tick(now)
        return self._drain()

    def _tick(self, now: float) -> None:
        row = self.state.current_round()
        if row is None or self.done:
            return
        if row.state == "open":
            n = self.state.accepted_count(row.round_id)
            decision = self.policy.decide(n, now, row.deadline)
            if decision is Decision.EXTEND:
                deadline = self.policy.next_deadline(now)
                self.state.extend_round(row.round_id, deadline)
                log.warning(
                    "round %d: deadline passed with %d of at least %d submissions; extended to %s",
                    row.round_id,
                    n,
                    self.policy.min_submissions,
                    time.ctime(deadline),
                )
                self._announce_round(self.state.current_round() or row)
            elif decision is Decision.CLOSE:
                self.state.set_closing(row.round_id)
                log.info("round %d closing with %d submissions", row.round_id, n)
                self._start_closing(self.state.current_round() or row)
        elif row.state == "closing":
            self._try_finish(row, now)

    # closing -------------------------------------------------------------------------------
    def _start_closing(self, row: RoundRow) -> None:
        self._announce_round(row)
        assignments: dict[str, dict[str, int]] = {}
        for node, (worker, seq) in sorted(self.state.accepted(row.round_id).items()):
            assignments.setdefault(worker, {})[node] = seq
        factors: dict[str, float] = {}
        if self.cfg.weighting == "samples" and self.cfg.max_weight_share < 1:
            raw = self.state.accepted_factors(row.round_id)
            factors = capped_factors(raw, self.cfg.max_weight_share) if raw else {}
        close = CloseMsg(round_id=row.round_id, assignments=assignments, factors=factors)
        self._close = sign_message(close, self._key)  # workers refuse an unsigned close
        self._partials = {}
        self._send_close()

    def _send_close(self) -> None:
        assert self._close is not None
        self._close_sent = time.monotonic()
        if set(self._close.assignments) - {self.cfg.worker_id}:
            self._publish(self._control["close"], to_json(self._close))
        self._out.append(LocalClose(self._close))

    def _try_finish(self, row: RoundRow, now: float) -> None:
        if self._close is None:
            self._start_closing(row)
            return
        if self.cfg.rule != "mean":
            self._finish(row, now, *self._robust_central(row))
            return
        waiting = sorted(set(self._close.assignments) - set(self._partials))
        if waiting:
            if time.monotonic() - self._close_sent > RESEND_CLOSE_S:
                log.info("round %d: waiting for partial sums from %s", row.round_id, waiting)
                self._send_close()
            return
        total = RunningSum()
        for worker in sorted(self._partials):
            header, sums = self._partials[worker]
            if header.nodes != self._close.assignments[worker]:
                lost = sorted(set(self._close.assignments[worker]) - set(header.nodes))
                log.error("round %d: %s could not sum %s", row.round_id, worker, lost[:10])
            total.merge(sums)
        try:
            mean: dict[str, np.ndarray] | None = total.mean()
        except EmptyAggregationError:
            mean = None
        self._finish(row, now, mean, total.count)

    def _robust_central(self, row: RoundRow) -> tuple[dict[str, np.ndarray] | None, int]:
        """The central under a robust rule, read column block by block from the round file.

        Robust rules need every counted body in this process (one worker; docs/mqtt.md).
        """
        assert self._close is not None
        elsewhere = sorted(set(self._close.assignments) - {self.cfg.worker_id})
        if elsewhere:
            log.error(
                "round %d: rule %s ignores updates held by %s",
                row.round_id,
                self.cfg.rule,
                elsewhere,
            )
        wanted = self._close.assignments.get(self.cfg.worker_id, {})
        spans = self.state.body_spans(row.round_id, wanted)
        if not spans:
            return None, 0
        spec = vfer_spec(len(self.cfg.classes))
        shapes = {n: spec[n].shape for n in trainable_names(spec)}
        with column_reader(self.state.payloads.path(row.round_id), spans) as read:
            central, info = aggregate_blocks(
                self.cfg.rule,  # type: ignore[arg-type]
                shapes,
                len(spans),
                read,
                fraction=self.cfg.robust_fraction,
            )
        if "selected" in info:
            info["selected"] = spans[int(info["selected"])][0]  # type: ignore[call-overload]
        log.info("round %d: %s over %d updates: %s", row.round_id, self.cfg.rule, len(spans), info)
        return central, len(spans)

    def _finish(
        self, row: RoundRow, now: float, mean: dict[str, np.ndarray] | None, count: int
    ) -> None:
        if mean is None:
            log.error("round %d: no usable submissions; reopening it", row.round_id)
            self._close = None
            self.state.open_round(
                row.round_id, row.base_version, now, self.policy.next_deadline(now)
            )
            self._announce_round(self.state.current_round() or row)
            return
        self._close = None
        problem = central_problem(mean, self.cfg.max_abs_weight)
        if problem is not None:
            latest = self.state.latest_central()
            assert latest is not None
            log.error(
                "round %d: refusing to sign its central (%s); keeping central v%d",
                row.round_id,
                problem,
                latest[0],
            )
            self.state.finish_round(row.round_id, latest[0], time.time(), count, None)
            self._open_next()
            return
        version = self._store_central(row.round_id, mean, count)
        log.info("round %d finished: central v%d from %d submissions", row.round_id, version, count)
        self._install_latest_central()
        self._open_next()

    def _store_central(self, round_id: int, weights: Mapping[str, np.ndarray], n: int) -> int:
        latest = self.state.latest_central()
        version = (latest[0] if latest else 0) + 1
        header = CentralHeader(
            version=version,
            round_id=round_id,
            classes=list(self.cfg.classes),
            created_at=time.time(),
            num_submissions=n,
            weighting=self.cfg.weighting if self.cfg.rule == "mean" else self.cfg.rule,
        )
        frame = sign_central(header, wcodec.to_bytes(weights), self._key)
        if round_id == 0:
            self.state.add_central(version, 0, header.created_at, 0, frame)
        else:
            self.state.finish_round(round_id, version, header.created_at, n, frame)
        return version

    def _install_latest_central(self) -> None:
        latest = self.state.latest_central()
        assert latest is not None
        version, frame = latest
        _header, body = unpack(frame, CentralHeader)
        self._out.append(NewCentral(version, wcodec.from_bytes(body)))
        self._publish(self.topics.central_bundle, frame, retain=True)

    def _open_next(self) -> None:
        finished = self.state.finished_rounds()
        if self.cfg.round.rounds and finished >= self.cfg.round.rounds:
            log.info("all %d rounds done", finished)
            row = self.state.current_round()
            if row is not None:
                self._announce_round(row)
            self.done = True
            return
        last = self.state.current_round()
        latest = self.state.latest_central()
        assert latest is not None
        now = time.time()
        round_id = (last.round_id if last else 0) + 1
        self.state.open_round(round_id, latest[0], now, self.policy.next_deadline(now))
        row = self.state.current_round()
        assert row is not None
        log.info(
            "round %d open from central v%d until %s", round_id, latest[0], time.ctime(row.deadline)
        )
        self._announce_round(row)

    def _round_msg(self, row: RoundRow) -> RoundMsg:
        r = self.cfg.round
        msg = RoundMsg(
            round_id=row.round_id,
            base_version=row.base_version,
            state=row.state,  # type: ignore[arg-type]
            opened_at=row.opened_at,
            deadline=row.deadline,
            min_submissions=r.min_submissions,
            max_submissions=r.max_submissions,
            classes=list(self.cfg.classes),
            weight_dtype="float16" if self.cfg.float16_transport else "float32",
            personalization=self.cfg.personalization,
        )
        return sign_round(msg, self._key)  # nodes refuse unsigned rounds, as centrals

    def _announce_round(self, row: RoundRow) -> None:
        msg = self._round_msg(row)
        self._out.append(NewRound(msg))
        self._publish(self.topics.round, to_json(msg), retain=True)
