"""The leader: opens rounds, applies the round policy, closes them into a signed central v.

State lives in SQLite before anything is published, so a restart at any point republishes
what was decided and carries on: an open round keeps collecting, a closing round asks the
workers for their sums again, a finished round's central is republished (retained).
All methods run on the service loop's thread and return typed effects
(:mod:`broker_aggregator.effects`) instead of acting. Its rooms: :mod:`~broker_aggregator.policy`
decides when a round closes, :mod:`~broker_aggregator.answers` what a node hears,
:mod:`~broker_aggregator.closing` gathers the counted updates' contributions, and
:func:`broker_aggregator.rules.combine` applies the rule to them. With ``secure_aggregation``
on, :mod:`~broker_aggregator.secure_round` takes the place of the close: joins count as
submissions, groups run SecAgg+, and the rule applies to the group means.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_aggregator.answers import answer_progress, counted_acks
from broker_aggregator.closing import Closing, Contributions, Gather, close_request
from broker_aggregator.config import AggregatorConfig
from broker_aggregator.effects import Effect, NewCentral, NewRound, Publish
from broker_aggregator.policy import Decision, RoundPolicy
from broker_aggregator.rules import (
    Combined,
    central_weighting,
    close_factors,
    combine,
    combine_private,
    gather_for,
)
from broker_aggregator.secure_round import SecureRound, SecureRounds
from broker_aggregator.store import RoundRow, State
from vfer import weights as wcodec
from vfer.fedavg import AggregationError, RunningSum, central_problem
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.messages import (
    AckMsg,
    CentralHeader,
    CentralPrivacy,
    PartialHeader,
    ProgressMsg,
    RoundMsg,
    sign_central,
    sign_message,
    sign_round,
    to_json,
    unpack,
)
from vfer.topics import Topics

log = logging.getLogger(__name__)


def load_initial_weights(path: str, num_classes: int) -> dict[str, np.ndarray]:
    """The trainable v arrays from a safetensors file (a bundle's full head is fine)."""
    spec = vfer_spec(num_classes)
    raw = wcodec.load(path)
    names = trainable_names(spec)
    weights = {n: raw[n].astype(np.float32) for n in names if n in raw}
    wcodec.check(weights, spec, trainable_only=True)
    return weights


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
        self.spec = spec = vfer_spec(len(cfg.classes))
        shapes = {n: spec[n].shape for n in trainable_names(spec)}
        #: How the counted updates reach the rule when a round closes (the seam before it).
        self.gather: Gather = gather_for(
            cfg.rule, state, cfg.worker_id, shapes, every_update=cfg.central_privacy is not None
        )
        self._closing: Closing | None = None
        self.done = False
        sa = cfg.secure_aggregation
        self.secure = SecureRounds(sa, state.db, topics, key, spec) if sa is not None else None

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
            secure = self._secure_for(row)
            if secure is not None and row.state == "closing":
                self._out += secure.republish()
        if self._closing is not None:
            self._publish(self._control["close"], to_json(self._closing.close))
        for ack in self.counted_acks():
            self._publish(self.topics.node_ack(ack.node_id), to_json(sign_message(ack, self._key)))
        return self._drain()

    # events --------------------------------------------------------------------------------
    def on_progress(self, p: ProgressMsg) -> AckMsg | None:
        """A worker stored (or could not store) an update; the node's exactly-once answer
        (:func:`broker_aggregator.answers.answer_progress`)."""
        return answer_progress(self.state, p)

    def counted_acks(self) -> list[AckMsg]:
        """``stored`` for every update counted in a round that is closing (sent after a restart)."""
        return counted_acks(self.state)

    def on_secagg(self, node: str, payload: bytes) -> list[Effect]:
        """A message on ``<prefix>/nodes/<node>/secagg`` (refused and counted when no secure
        round is open or closing); the stages advance on :meth:`tick`."""
        row = self.state.current_round()
        secure = self._secure_for(row) if row is not None and row.state != "finished" else None
        if secure is None:
            log.warning("ignored a secure-aggregation message from %s: no secure round", node)
            return []
        secure.on_message(node, payload)
        return []

    def _secure_for(self, row: RoundRow) -> SecureRound | None:
        """The secure state of ``row``'s round (read back after a restart), or None when off."""
        return self.secure.for_round(row.round_id) if self.secure is not None else None

    def on_partial(self, header: PartialHeader, sums: RunningSum) -> list[Effect]:
        if self._closing is None or not self._closing.take(header, sums):
            return []
        return self.tick(time.time())

    def tick(self, now: float) -> list[Effect]:
        self._tick(now)
        return self._drain()

    def _tick(self, now: float) -> None:
        row = self.state.current_round()
        if row is None or self.done:
            return
        if row.state == "open":
            secure = self._secure_for(row)
            n = len(secure.joined) if secure else self.state.accepted_count(row.round_id)
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
        secure = self._secure_for(row)
        if secure is not None:
            self._out += secure.draw()
            return
        cfg = self.cfg
        factors = close_factors(
            cfg.weighting, cfg.max_weight_share, self.state.accepted_factors(row.round_id)
        )
        close = close_request(row.round_id, self.state.accepted(row.round_id), factors)
        # workers refuse an unsigned close
        self._closing = Closing(sign_message(close, self._key))
        self._out += self._closing.send(self._control["close"], cfg.worker_id, time.monotonic())

    def _try_finish(self, row: RoundRow, now: float) -> None:
        secure = self._secure_for(row)
        if secure is not None:
            self._out += secure.step(time.monotonic())
            if secure.done:
                combined = secure.combine(
                    self._base(row), self.spec, self.cfg.rule, self.cfg.robust_fraction
                )
                log.info("round %d: %s over group means: %s", row.round_id, self.cfg.rule,
                         dict(combined.info))  # fmt: skip
                if combined.central is None and self.secure is not None:
                    self.secure.reset(row.round_id)  # a reopened round draws a new seed
                self._finish(row, now, combined)
            return
        closing = self._closing
        if closing is None:
            self._start_closing(row)
            return
        contributions = self.gather.contributions(closing)
        if contributions is None:
            if closing.due(time.monotonic()):
                log.info(
                    "round %d: waiting for partial sums from %s", row.round_id, closing.waiting()
                )
                self._out += closing.send(
                    self._control["close"], self.cfg.worker_id, time.monotonic()
                )
            return
        if self.cfg.central_privacy is not None:
            combined = self._combine_private(row, contributions)
        else:
            combined = combine(self.cfg.rule, contributions, fraction=self.cfg.robust_fraction)
        if combined.info:
            log.info(
                "round %d: %s over %d updates: %s",
                row.round_id,
                self.cfg.rule,
                combined.count,
                dict(combined.info),
            )
        self._finish(row, now, combined)

    def _combine_private(self, row: RoundRow, contributions: Contributions) -> Combined:
        """Central DP against the round's base central, composed with what it already spent."""
        assert self.cfg.central_privacy is not None
        header, base = self._base_central(row)
        return combine_private(contributions, base, self.cfg.central_privacy, header.privacy)

    def _base_central(self, row: RoundRow) -> tuple[CentralHeader, dict[str, np.ndarray]]:
        frame = self.state.central_frame(row.base_version)
        if frame is None:
            raise AggregationError(
                f"round {row.round_id}: base central v{row.base_version} is gone"
            )
        header, body = unpack(frame, CentralHeader)
        return header, wcodec.from_bytes(body)

    def _base(self, row: RoundRow) -> dict[str, np.ndarray]:
        return self._base_central(row)[1]

    def _finish(self, row: RoundRow, now: float, combined: Combined) -> None:
        self._closing = None
        if combined.central is None:
            log.error("round %d: no usable submissions; reopening it", row.round_id)
            self.state.open_round(
                row.round_id, row.base_version, now, self.policy.next_deadline(now)
            )
            self._announce_round(self.state.current_round() or row)
            return
        problem = central_problem(combined.central, self.cfg.max_abs_weight)
        if problem is not None:
            latest = self.state.latest_central()
            assert latest is not None
            log.error(
                "round %d: refusing to sign its central (%s); keeping central v%d",
                row.round_id,
                problem,
                latest[0],
            )
            self.state.finish_round(row.round_id, latest[0], time.time(), combined.count, None)
            self._open_next()
            return
        version = self._store_central(
            row.round_id, combined.central, combined.count, combined.privacy
        )
        log.info(
            "round %d finished: central v%d from %d submissions",
            row.round_id,
            version,
            combined.count,
        )
        self._install_latest_central()
        self._open_next()

    def _store_central(
        self,
        round_id: int,
        weights: Mapping[str, np.ndarray],
        n: int,
        privacy: CentralPrivacy | None = None,
    ) -> int:
        latest = self.state.latest_central()
        version = (latest[0] if latest else 0) + 1
        header = CentralHeader(
            version=version,
            round_id=round_id,
            classes=list(self.cfg.classes),
            created_at=time.time(),
            num_submissions=n,
            weighting=central_weighting(self.cfg.rule, self.cfg.weighting),
            privacy=privacy,
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
        secure = self._secure_for(row)
        if secure is not None:
            msg = msg.model_copy(update={"secure_aggregation": secure.round_info()})
        return sign_round(msg, self._key)  # nodes refuse unsigned rounds, as centrals

    def _announce_round(self, row: RoundRow) -> None:
        msg = self._round_msg(row)
        self._out.append(NewRound(msg))
        self._publish(self.topics.round, to_json(msg), retain=True)
