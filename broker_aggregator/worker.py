"""An aggregator worker: stores checked updates on receipt, reports them, sums on request.

Several workers can share the update stream (MQTT 5 ``$share``); each keeps the bodies it
received in its own state (SQLite index, append-only body files) and reports each stored
update to the leader, which alone tells the node ``stored`` once the update counts in the round.
A worker answers a node itself only with a final rejection. When the leader closes the round,
the worker answers with the float64 sum of exactly the (node, seq) it was assigned, in node-id
order. The worker inside the leader's process is the same class. All methods run on the
service loop's thread (it owns the SQLite connection), inside the loop's transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

import numpy as np

from broker_aggregator.policy import Admission, admit
from broker_aggregator.store import State
from broker_aggregator.validate import (
    ROUND_REASONS,
    CheckedUpdate,
    Expectations,
    update_factor,
    weights_view,
)
from vfer.fedavg import RunningSum
from vfer.messages import (
    AckMsg,
    CloseMsg,
    PartialHeader,
    ProgressMsg,
    RoundMsg,
    UpdateHeader,
)
from vfer.topics import Topics

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        worker_id: str,
        state: State,
        topics: Topics,
        expectations: Expectations,
        weighting: str,
        max_replacements: int = 5,
    ) -> None:
        self.worker_id = worker_id
        self.state = state
        self.topics = topics
        #: Read by paho's thread to check updates; replaced whole, never mutated.
        self.expect = expectations
        self.weighting = weighting
        self.max_replacements = max_replacements
        self._central_version: int | None = None
        self._central: Mapping[str, np.ndarray] = {}
        self._round: RoundMsg | None = None
        self.stored = 0

    # what the round and central topics tell us ----------------------------------------
    def on_round(self, msg: RoundMsg) -> list[ProgressMsg]:
        """A round announcement; returns progress to re-report when a round (re)opens."""
        cur = self._round
        order = {"open": 0, "closing": 1, "finished": 2}
        if cur is not None and (msg.round_id, order[msg.state]) < (cur.round_id, order[cur.state]):
            return []  # an older retained round arriving late
        self._round = msg
        self._refresh()
        done_through = msg.round_id if msg.state == "finished" else msg.round_id - 1
        if done_through > 0:
            self.state.drop_bodies_through(done_through)
        return self.announce(msg.round_id) if msg.state == "open" else []

    def on_central(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        if self._central_version is not None and version <= self._central_version:
            return
        self._central_version, self._central = version, weights
        self._refresh()

    def _refresh(self) -> None:
        r = self._round
        ready = r is not None and r.base_version == self._central_version
        self.expect = dataclasses.replace(
            self.expect,
            round_id=r.round_id if ready and r is not None else None,
            round_open=ready and r is not None and r.state == "open",
            base_version=self._central_version,
            base_weights=self._central,
            secure=r is not None and r.secure_aggregation is not None,
        )

    # updates ----------------------------------------------------------------------------
    def handle_update(self, checked: CheckedUpdate) -> ProgressMsg | AckMsg | None:
        """Store a checked update; progress for the leader, or the node's rejection ack.

        An update whose round is no longer open here is not stored: it goes to the leader as
        progress with a ``reason``, and the leader answers ``stored`` again when that very
        update already counts (a resend whose first ack was lost), else ``rejected``.
        """
        h = checked.header
        exp = self.expect
        if h.round_id != exp.round_id or not exp.round_open:
            return self.defer(h, "round_closed" if h.round_id == exp.round_id else "wrong_round")
        verdict = admit(self.state.stored_seq(h.round_id, h.node_id), h.seq, h.update_id)
        if verdict is Admission.REPLAY:
            return self.reject(h.node_id, "replay", f"seq {h.seq} is older than the stored one", h)
        if (
            verdict is Admission.REPLACE
            and self.state.stored_copies(h.round_id, h.node_id) > self.max_replacements
        ):
            detail = f"more than {self.max_replacements} replacements in round {h.round_id}"
            return self.reject(h.node_id, "rate_limited", detail, h)
        if verdict in (Admission.STORE, Admission.REPLACE):
            self.state.store_update(
                h.round_id,
                h.node_id,
                h.seq,
                h.update_id,
                update_factor(h, self.weighting),
                time.time(),
                h.dtype,
                checked.body,
            )
            self.stored += 1
            log.debug("stored %s from %s (%s)", h.update_id, h.node_id, verdict.value)
        else:
            log.info("duplicate update %s from %s reported again", h.update_id, h.node_id)
        return self._progress(h, None)

    def defer(self, h: UpdateHeader, reason: str) -> ProgressMsg:
        """A round check failed: the leader decides between ``stored`` (it counts) and ``reason``."""
        log.debug("update %s from %s: %s, asking the leader", h.update_id, h.node_id, reason)
        return self._progress(h, reason)

    def _progress(self, h: UpdateHeader, reason: str | None) -> ProgressMsg:
        return ProgressMsg(
            node_id=h.node_id,
            worker_id=self.worker_id,
            round_id=h.round_id,
            seq=h.seq,
            update_id=h.update_id,
            reason=reason,
            factor=None if reason else update_factor(h, self.weighting),
        )

    def reject(
        self, node_id: str, reason: str, detail: str, header: object | None
    ) -> AckMsg | ProgressMsg | None:
        """Log and count a rejection; the node's ack when its own envelope was readable and final.

        A round reason with a readable envelope goes to the leader instead (:meth:`defer`).
        """
        if isinstance(header, UpdateHeader) and reason in ROUND_REASONS:
            return self.defer(header, reason)
        log.warning("rejected update from node %s: reason=%s (%s)", node_id, reason, detail)
        round_id = self.expect.round_id or 0
        self.state.count_rejection(round_id, reason)
        if isinstance(header, UpdateHeader):
            return AckMsg(
                node_id=header.node_id,
                round_id=header.round_id,
                update_id=header.update_id,
                status="rejected",
                reason=reason,
            )
        return None

    def announce(self, round_id: int) -> list[ProgressMsg]:
        """Progress for every update stored for ``round_id`` (after restarts)."""
        return [
            ProgressMsg(
                node_id=node,
                worker_id=self.worker_id,
                round_id=round_id,
                seq=seq,
                update_id=uid,
                factor=factor,
            )
            for node, seq, uid, factor in self.state.latest_updates(round_id)
        ]

    # closing ----------------------------------------------------------------------------
    def partial(self, close: CloseMsg) -> tuple[PartialHeader, RunningSum] | None:
        """The sum over exactly the (node, seq) the leader assigned to this worker, or None."""
        wanted = close.assignments.get(self.worker_id)
        if wanted is None:
            return None
        if self._round is not None and self._round.round_id == close.round_id:
            self._round = self._round.model_copy(update={"state": "closing"})
            self._refresh()
        acc = RunningSum()
        summed: dict[str, int] = {}
        for node, seq, factor, body in self.state.bodies(close.round_id, wanted):
            # checked on receipt; read without a copy; a capped factor from the leader wins
            acc.add(weights_view(body), close.factors.get(node, factor))
            summed[node] = seq
        missing = sorted(set(wanted) - set(summed))
        if missing:
            log.error(
                "round %d: no stored body for assigned updates of %s", close.round_id, missing[:10]
            )
        header = PartialHeader(
            worker_id=self.worker_id,
            round_id=close.round_id,
            nodes=summed,
            total_weight=acc.total_weight,
        )
        return header, acc
