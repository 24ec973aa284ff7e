"""An aggregator worker: stores checked updates on receipt, acknowledges them, sums on request.

Several workers can share the update stream (MQTT 5 ``$share``); each keeps the bodies it
received in its own SQLite file and, when the leader closes the round, answers with the float64
sum of the nodes assigned to it. The worker inside the leader's process is the same class.
All methods run on the service loop's thread (it owns the SQLite connection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from broker_aggregator.policy import Admission, admit
from broker_aggregator.store import State
from broker_aggregator.validate import CheckedUpdate, Expectations, update_factor
from vfer import weights as wcodec
from vfer.fedavg import RunningSum
from vfer.messages import (
    AckMsg,
    CloseMsg,
    PartialHeader,
    ProgressMsg,
    RoundMsg,
    UpdateHeader,
    to_json,
)
from vfer.topics import Topics

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int, bool], object]


class Worker:
    def __init__(
        self,
        worker_id: str,
        state: State,
        topics: Topics,
        publish: Publish,
        expectations: Expectations,
        weighting: str,
        report_progress: Callable[[ProgressMsg], None],
    ) -> None:
        self.worker_id = worker_id
        self.state = state
        self.topics = topics
        self._publish = publish
        #: Read by paho's thread to check updates; replaced whole, never mutated.
        self.expect = expectations
        self.weighting = weighting
        self._report = report_progress
        self._central_version: int | None = None
        self._central: Mapping[str, np.ndarray] = {}
        self._round: RoundMsg | None = None
        self.stored = 0
        self._held: list[AckMsg | ProgressMsg] | None = None

    # what the round and central topics tell us ----------------------------------------
    def on_round(self, msg: RoundMsg) -> None:
        cur = self._round
        order = {"open": 0, "closing": 1, "finished": 2}
        if cur is not None and (msg.round_id, order[msg.state]) < (cur.round_id, order[cur.state]):
            return  # an older retained round arriving late
        self._round = msg
        self._refresh()
        if msg.state == "open":
            self.announce(msg.round_id)

    def on_central(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        if self._central_version is not None and version <= self._central_version:
            return
        self._central_version, self._central = version, weights
        self._refresh()

    def _refresh(self) -> None:
        r, exp = self._round, self.expect
        ready = r is not None and r.base_version == self._central_version
        self.expect = Expectations(
            spec=exp.spec,
            classes=exp.classes,
            max_payload_bytes=exp.max_payload_bytes,
            max_abs_weight=exp.max_abs_weight,
            max_update_norm=exp.max_update_norm,
            dtypes=exp.dtypes,
            round_id=r.round_id if ready and r is not None else None,
            round_open=ready and r is not None and r.state == "open",
            base_version=self._central_version,
            base_weights=self._central,
        )

    # updates ----------------------------------------------------------------------------
    def handle_update(self, checked: CheckedUpdate) -> None:
        h = checked.header
        exp = self.expect
        if h.round_id != exp.round_id or not exp.round_open:
            self.reject(h.node_id, "round_closed", f"round {h.round_id} closed before storing", h)
            return
        verdict = admit(self.state.stored_seq(h.round_id, h.node_id), h.seq, h.update_id)
        if verdict is Admission.REPLAY:
            self.reject(h.node_id, "replay", f"seq {h.seq} is older than the stored update", h)
            return
        if verdict in (Admission.STORE, Admission.REPLACE):
            self.state.store_submission(
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
            log.info("duplicate update %s from %s acknowledged again", h.update_id, h.node_id)
        self._ack(
            AckMsg(node_id=h.node_id, round_id=h.round_id, update_id=h.update_id, status="stored")
        )
        progress = ProgressMsg(
            node_id=h.node_id, worker_id=self.worker_id, round_id=h.round_id, seq=h.seq
        )
        if self._held is not None:
            self._held.append(progress)
        else:
            self._report(progress)

    def reject(self, node_id: str, reason: str, detail: str, header: object | None) -> None:
        """Log and count a rejection; tell the node when its own envelope was readable and final."""
        log.warning("rejected update from node %s: reason=%s (%s)", node_id, reason, detail)
        round_id = self.expect.round_id or 0
        self.state.count_rejection(round_id, reason)
        if isinstance(header, UpdateHeader) and reason != "ahead":
            self._ack(
                AckMsg(
                    node_id=header.node_id,
                    round_id=header.round_id,
                    update_id=header.update_id,
                    status="rejected",
                    reason=reason,
                )
            )

    def hold(self) -> None:
        """Keep acks and progress reports until :meth:`release` (after the commit)."""
        self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for msg in held:
            if isinstance(msg, AckMsg):
                self._ack(msg)
            else:
                self._report(msg)

    def _ack(self, ack: AckMsg) -> None:
        if self._held is not None:
            self._held.append(ack)
            return
        self._publish(self.topics.node_ack(ack.node_id), to_json(ack), 1, False)

    def announce(self, round_id: int) -> None:
        """Tell the leader again about every update stored for ``round_id`` (after restarts)."""
        for node, seq in self.state.submitted_nodes(round_id):
            self._report(
                ProgressMsg(node_id=node, worker_id=self.worker_id, round_id=round_id, seq=seq)
            )

    # closing ----------------------------------------------------------------------------
    def partial(self, close: CloseMsg) -> tuple[PartialHeader, RunningSum] | None:
        """The sum over the nodes the leader assigned to this worker, or None if none."""
        nodes = close.assignments.get(self.worker_id)
        if nodes is None:
            return None
        if self._round is not None and self._round.round_id == close.round_id:
            self._round = self._round.model_copy(update={"state": "closing"})
            self._refresh()
        acc = RunningSum()
        summed: dict[str, int] = {}
        for node, seq, factor, body in self.state.submissions(close.round_id, nodes):
            weights = wcodec.from_bytes(body)
            acc.add({n: a.astype(np.float32) for n, a in weights.items()}, factor)
            summed[node] = seq
        missing = sorted(set(nodes) - set(summed))
        if missing:
            log.warning(
                "round %d: no stored update for assigned nodes %s", close.round_id, missing[:10]
            )
        header = PartialHeader(
            worker_id=self.worker_id,
            round_id=close.round_id,
            nodes=summed,
            total_weight=acc.total_weight,
        )
        return header, acc
