"""What a node hears about its update: the leader's exactly-once answers.

A worker stores an update and reports it (:class:`~vfer.messages.ProgressMsg`); only the leader
answers the node, and only once the update counts in the round. Exactly once: an update that
already counts (same ``update_id``, or same node and ``seq``) is answered ``stored`` again,
whatever the round's state and before any round check; the ``accepted`` table keeps these
answers for the last :data:`~broker_aggregator.store.ANSWER_ROUNDS` rounds. Runs inside the
service loop's transaction; the caller publishes the ack after the commit.
"""

from __future__ import annotations

import logging

from broker_aggregator.store import State
from vfer.messages import AckMsg, ProgressMsg

log = logging.getLogger(__name__)


def answer_progress(state: State, p: ProgressMsg) -> AckMsg | None:
    """A worker stored (or, with ``p.reason``, could not store) an update; the node's answer.

    ``stored`` only for an update that now counts (it is in ``accepted``, so the close assigns
    it); one a worker stored after the leader decided to close is ``rejected``/``round_closed``,
    so its node knows it was left out. None: no answer yet (the node sends again).
    """
    counted = state.counted(p.round_id, p.node_id)
    if counted is not None and (counted[1] == p.update_id or counted[0] == p.seq):
        if p.reason is not None:
            log.info("round %d: %s's update counts already: stored, again", p.round_id, p.node_id)
        return _ack(p, None)  # already counts (a resend or a re-announce)
    row = state.current_round()
    if p.reason is not None:
        stale_view = row is not None and row.state == "open" and row.round_id == p.round_id
        if stale_view and p.reason != "stale_base":
            return None  # the worker's view of the round lagged: not stored, it comes again
        return _reject(state, p, p.reason)
    if row is None or p.round_id > row.round_id:
        return None  # not known here yet (a worker ahead of a restarting leader)
    if row.round_id != p.round_id or row.state != "open":
        return _reject(state, p, "round_closed")
    if counted is not None and counted[0] > p.seq:
        return _reject(state, p, "replay")
    state.record_accepted(p.round_id, p.node_id, p.worker_id, p.seq, p.update_id, p.factor)
    log.info("round %d: %s submitted (via %s)", p.round_id, p.node_id, p.worker_id)
    return _ack(p, None)


def counted_acks(state: State) -> list[AckMsg]:
    """``stored`` for every update counted in a round that is closing (sent after a restart)."""
    row = state.current_round()
    if row is None or row.state != "closing":
        return []
    return [
        AckMsg(node_id=n, round_id=row.round_id, update_id=uid, status="stored")
        for n, _seq, uid in state.counted_updates(row.round_id)
    ]


def _reject(state: State, p: ProgressMsg, reason: str) -> AckMsg | None:
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
    row = state.current_round()
    state.count_rejection(row.round_id if row else 0, reason)
    return _ack(p, reason)


def _ack(p: ProgressMsg, reason: str | None) -> AckMsg:
    return AckMsg(
        node_id=p.node_id,
        round_id=p.round_id,
        update_id=p.update_id,
        status="rejected" if reason else "stored",
        reason=reason,
    )
