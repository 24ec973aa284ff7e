"""A closing round: the close request, the workers' answers, and what the counted updates contribute.

Once the policy closes a round, the leader asks every worker that holds counted updates for the
float64 sum of exactly those (node, seq) (:func:`close_request`, signed by the leader) and sends
it again until each worker answered (:class:`Closing`). What arrived reaches the rule through one
seam, a :class:`Gather`: it returns the round's :data:`Contributions` (or None while waiting),
and :func:`broker_aggregator.rules.combine` turns them into the central. Two gathers exist:
:class:`WorkerSums` (the workers' merged sums: the mean) and :class:`LocalColumns` (the counted
bodies in this process's round file, column block by column block: the robust rules). Another
way of gathering (say, unmasked group sums under secure aggregation) is one more :class:`Gather`
that returns the same :data:`Contributions`; the leader and the rule stay as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from broker_aggregator.columns import column_reader
from broker_aggregator.effects import Effect, LocalClose, Publish
from broker_aggregator.robust import Reader
from broker_aggregator.store import State
from vfer.fedavg import RunningSum
from vfer.messages import CloseMsg, PartialHeader, to_json

log = logging.getLogger(__name__)

#: Seconds before a close that some worker has not answered is sent again.
RESEND_CLOSE_S = 2.0


@dataclass(frozen=True)
class Summed:
    """The counted updates' float64 sum and total factor (what the mean needs)."""

    total: RunningSum


@dataclass(frozen=True)
class Columns:
    """The counted updates themselves, one row each, readable column block by column block.

    ``open()`` gives a ``read(name, lo, hi)`` that returns the ``(len(nodes), hi - lo)`` values
    ``lo:hi`` of array ``name`` (:data:`broker_aggregator.robust.Reader`); row i is ``nodes[i]``.
    """

    nodes: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    open: Callable[[], AbstractContextManager[Reader]]


#: What a closing round's counted updates contribute to the central.
Contributions = Summed | Columns


def close_request(
    round_id: int, accepted: Mapping[str, tuple[str, int]], factors: Mapping[str, float]
) -> CloseMsg:
    """The (unsigned) close: per worker, exactly the (node -> seq) of its counted updates."""
    assignments: dict[str, dict[str, int]] = {}
    for node, (worker, seq) in sorted(accepted.items()):
        assignments.setdefault(worker, {})[node] = seq
    return CloseMsg(round_id=round_id, assignments=assignments, factors=dict(factors))


@dataclass
class Closing:
    """The close of one round in progress: the signed request and the partial sums received."""

    close: CloseMsg
    partials: dict[str, tuple[PartialHeader, RunningSum]] = field(default_factory=dict)
    sent_at: float = -math.inf

    @property
    def round_id(self) -> int:
        return self.close.round_id

    def send(self, topic: str, local_worker: str, now: float) -> list[Effect]:
        """Publish the close to the other workers (if any) and hand it to this process's own."""
        self.sent_at = now
        out: list[Effect] = []
        if set(self.close.assignments) - {local_worker}:
            out.append(Publish(topic, to_json(self.close)))
        out.append(LocalClose(self.close))
        return out

    def due(self, now: float) -> bool:
        """True when a worker is still silent :data:`RESEND_CLOSE_S` after the last send."""
        return bool(self.waiting()) and now - self.sent_at > RESEND_CLOSE_S

    def take(self, header: PartialHeader, sums: RunningSum) -> bool:
        """Keep a worker's partial sums; False (ignored) for another round or an unasked worker."""
        if header.round_id != self.round_id:
            return False
        if header.worker_id not in self.close.assignments:  # it was asked for nothing
            log.warning(
                "round %d: ignored partial sums from %r, which has no assigned updates",
                header.round_id,
                header.worker_id,
            )
            return False
        self.partials[header.worker_id] = (header, sums)
        return True

    def waiting(self) -> list[str]:
        """Workers asked for sums that have not answered yet."""
        return sorted(set(self.close.assignments) - set(self.partials))

    def merged(self) -> Summed:
        """Every worker's sums added together (in worker order); what a worker lost is logged."""
        total = RunningSum()
        for worker in sorted(self.partials):
            header, sums = self.partials[worker]
            if header.nodes != self.close.assignments[worker]:
                lost = sorted(set(self.close.assignments[worker]) - set(header.nodes))
                log.error("round %d: %s could not sum %s", self.round_id, worker, lost[:10])
            total.merge(sums)
        return Summed(total)


class Gather(Protocol):
    """How a closing round's contributions reach the leader: the seam before the rule."""

    def contributions(self, closing: Closing) -> Contributions | None:
        """The round's contributions, or None while still waiting (asked again every tick)."""
        ...


class WorkerSums:
    """The mean's gather: the merged partial sums, once every assigned worker answered."""

    def contributions(self, closing: Closing) -> Contributions | None:
        if closing.waiting():
            return None
        return closing.merged()


class LocalColumns:
    """The robust rules' gather: this process's worker's counted bodies, read from its round file.

    Robust rules need every counted body in one process (a single worker; docs/mqtt.md); what
    another worker holds is left out and logged.
    """

    def __init__(self, state: State, worker_id: str, shapes: Mapping[str, tuple[int, ...]]):
        self.state = state
        self.worker_id = worker_id
        self.shapes = shapes

    def contributions(self, closing: Closing) -> Contributions | None:
        assignments = closing.close.assignments
        elsewhere = sorted(set(assignments) - {self.worker_id})
        if elsewhere:
            log.error(
                "round %d: a robust rule ignores updates held by %s", closing.round_id, elsewhere
            )
        wanted = assignments.get(self.worker_id, {})
        spans = self.state.body_spans(closing.round_id, wanted)
        path = self.state.payloads.path(closing.round_id)
        return Columns(
            nodes=tuple(node for node, _offset, _length in spans),
            shapes=self.shapes,
            open=lambda: column_reader(path, spans),
        )
