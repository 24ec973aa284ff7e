"""What the leader decided should happen, as typed values: the service carries them out in order.

The leader never publishes, never touches the worker and never sleeps; each of its public
methods returns a list of :data:`Effect` (publish this, hand that close, round or central to
this process's worker), and :meth:`broker_aggregator.service.AggregatorService._apply` does it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vfer.messages import CloseMsg, RoundMsg


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
