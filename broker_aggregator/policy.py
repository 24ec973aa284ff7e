"""The round policy as pure decisions: no MQTT, SQLite or clock (``now`` is an argument).

A round closes as soon as it holds ``max_submissions`` nodes, or at its deadline with at
least ``min_submissions``; at a deadline short of the minimum it is extended by another
``deadline_s``. One submission per node: a higher ``seq`` from the same node replaces, the
same one is a duplicate (acknowledged again, stored once), a lower one is a replay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.Enum):
    WAIT = "wait"
    CLOSE = "close"
    EXTEND = "extend"


@dataclass(frozen=True)
class RoundPolicy:
    min_submissions: int
    max_submissions: int
    deadline_s: float

    def decide(self, n_submitted: int, now: float, deadline: float) -> Decision:
        if n_submitted >= self.max_submissions:
            return Decision.CLOSE
        if now < deadline:
            return Decision.WAIT
        if n_submitted >= self.min_submissions:
            return Decision.CLOSE
        return Decision.EXTEND

    def next_deadline(self, now: float) -> float:
        return now + self.deadline_s


class Admission(enum.Enum):
    STORE = "store"  # first update of this node in this round
    REPLACE = "replace"  # a newer update replaces the stored one
    DUPLICATE = "duplicate"  # the same update again (a resend): acknowledge, store nothing
    REPLAY = "replay"  # an older update after a newer one: reject


def admit(stored: tuple[int, str] | None, seq: int, update_id: str) -> Admission:
    """Compare an incoming (seq, update_id) with the stored one of the same node and round."""
    if stored is None:
        return Admission.STORE
    stored_seq, stored_id = stored
    if update_id == stored_id:
        return Admission.DUPLICATE
    if seq > stored_seq:
        return Admission.REPLACE
    return Admission.REPLAY
