"""Updates stored in group commits: a run of queued events handled in one SQLite transaction.

Nodes hear ``stored`` only after the commit and only from the leader, once the update counts in
the round; a worker's own rejections are answered after the commit too. When handling raises,
the batch is rolled back and handled again one message at a time, so the one that raises goes
to the ``poison`` table (answered ``rejected``/``poison``, and never handled again, even after a
restart) and the others count. Runs on the service loop's thread, which owns the connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from broker_aggregator.intake import (
    Poison,
    PoisonError,
    Rejected,
    outcome,
    rejection,
    update_header,
)
from broker_aggregator.leader import Leader
from broker_aggregator.store import State
from broker_aggregator.validate import CheckedUpdate
from broker_aggregator.worker import Worker
from vfer.messages import AckMsg, ProgressMsg

log = logging.getLogger(__name__)

#: The events a group commit takes; anything else is a control event for the loop.
BATCHED = (CheckedUpdate, Rejected, ProgressMsg, Poison)


@dataclass
class Committed:
    """What a committed batch asks the service to send, and what became of each message."""

    acks: list[AckMsg] = field(default_factory=list)
    progress: list[ProgressMsg] = field(default_factory=list)
    #: Per message: "stored", a reason code, "reported" (progress for the leader),
    #: "no_answer" (not final: the node sends again) or "poison".
    outcomes: list[str] = field(default_factory=list)

    def extend(self, other: Committed) -> None:
        self.acks += other.acks
        self.progress += other.progress
        self.outcomes += other.outcomes


class GroupCommit:
    def __init__(self, state: State, worker: Worker, leader: Leader | None) -> None:
        self.state = state
        self.worker = worker
        self.leader = leader
        #: (node, update_id) of every poisoned update: answered from here, never handled again.
        self._poisoned = state.poisoned()

    def run(self, batch: list[object]) -> Committed:
        """Handle ``batch`` in one transaction; on an exception, one message at a time."""
        try:
            return self._commit(batch)
        except Exception:
            self.state.rollback()
            log.warning("a batch of %d failed; handling its messages one by one", len(batch))
        done = Committed()
        for ev in batch:
            try:
                one = self._commit([ev])
            except Exception as exc:
                self.state.rollback()
                one = self.poison(ev, f"{type(exc).__name__}: {exc}")
            done.extend(one)
        return done

    def _commit(self, batch: list[object]) -> Committed:
        done = Committed()
        self.state.begin()
        for ev in batch:
            out = self._handle(ev)
            if isinstance(out, ProgressMsg) and self.leader is not None:
                out = self.leader.on_progress(out)
            if isinstance(out, AckMsg):
                done.acks.append(out)
            elif isinstance(out, ProgressMsg):
                done.progress.append(out)
            done.outcomes.append(outcome(ev, out))
        self.state.commit()
        return done

    def _handle(self, ev: object) -> object:
        header = update_header(ev)
        if header is not None and (header.node_id, header.update_id) in self._poisoned:
            log.warning(
                "poison update %s from %s again: rejected", header.update_id, header.node_id
            )
            return rejection(header, "poison")
        if isinstance(ev, Poison):
            raise PoisonError(ev.detail)
        if isinstance(ev, CheckedUpdate):
            return self.worker.handle_update(ev)
        if isinstance(ev, Rejected):
            return self.worker.reject(ev.node_id, ev.reason, ev.detail, ev.header)
        return ev  # progress: from a remote worker, or re-announced after a (re)open

    def poison(self, ev: object, detail: str) -> Committed:
        """Record a message whose handling raised; answer ``rejected``/``poison`` when we can."""
        header = update_header(ev)
        node = header.node_id if header else getattr(ev, "node_id", None)
        uid = header.update_id if header else getattr(ev, "update_id", None)
        topic = ev.topic if isinstance(ev, Poison) else type(ev).__name__
        log.error("poison message (%s) from %s: %s", topic, node, detail)
        state = self.state
        state.begin()
        state.add_poison(topic, node, uid, "poison", detail)
        if header is not None:
            state.count_rejection(self.worker.expect.round_id or 0, "poison")
        state.commit()
        if header is None:
            return Committed(outcomes=["poison"])
        self._poisoned.add((header.node_id, header.update_id))
        return Committed(acks=[rejection(header, "poison")], outcomes=["poison"])
