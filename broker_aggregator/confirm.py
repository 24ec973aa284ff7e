"""The end of a run: the final round and central must be read back from the broker.

A pure tracker (no MQTT, no clock: ``now`` is an argument). The service asks :meth:`due`
when to publish both again and re-subscribe to their topics (the broker then sends its
retained copies back), feeds every round and central that arrives to :meth:`saw`, and
exits only once :attr:`confirmed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Backoff between attempts while the broker has not given both back (seconds).
RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass
class FinalConfirmation:
    round_id: int
    central_version: int
    next_try: float
    round_seen: bool = False
    central_seen: bool = False
    _attempts: int = field(default=0, repr=False)

    @property
    def confirmed(self) -> bool:
        return self.round_seen and self.central_seen

    def saw_round(self, round_id: int, state: str) -> None:
        self.round_seen |= round_id == self.round_id and state == "finished"

    def saw_central(self, version: int) -> None:
        self.central_seen |= version == self.central_version

    def due(self, now: float) -> bool:
        """True when it is time for another attempt (and schedules the one after it)."""
        if self.confirmed or now < self.next_try:
            return False
        self.next_try = now + RETRY_S[min(self._attempts, len(RETRY_S) - 1)]
        self._attempts += 1
        return True
