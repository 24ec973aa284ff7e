"""The aggregation rule, applied in one place: a closing round's contributions in, the central out.

``rule: mean`` is FedAvg (the paper's plain mean, or weighted by clips with ``weighting:
samples``, each node's weight capped at ``max_weight_share``): it needs only the workers' float64
sums. The robust rules (``median``, ``trimmed_mean``, ``krum``; pure math in
:mod:`broker_aggregator.robust`) need every counted update, read column block by column block.
:func:`combine` is the one function that applies a rule; adding or swapping one touches this
module and the math beside it, never the leader's round logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from broker_aggregator.central_dp import CentralPrivacyConfig, dp_combine
from broker_aggregator.closing import (
    Columns,
    Contributions,
    Gather,
    LocalColumns,
    Summed,
    WorkerSums,
)
from broker_aggregator.robust import Rule, aggregate_blocks, capped_factors, krum_f, trim_count
from broker_aggregator.store import State
from vfer.fedavg import AggregationError, EmptyAggregationError
from vfer.messages import CentralPrivacy


@dataclass(frozen=True)
class Combined:
    """The central a rule made (None: nothing usable, the round reopens) and from how many."""

    central: dict[str, np.ndarray] | None
    count: int
    info: Mapping[str, object] = field(default_factory=dict)
    privacy: CentralPrivacy | None = None  # what central DP spent on it, when on


def combine_private(
    contributions: Contributions,
    base: Mapping[str, np.ndarray],
    cfg: CentralPrivacyConfig,
    previous: CentralPrivacy | None,
) -> Combined:
    """The central under central DP (:mod:`broker_aggregator.central_dp`): every counted update
    clipped against ``base`` (the round's base central), noised, over the fixed denominator."""
    if not isinstance(contributions, Columns):
        raise AggregationError("central_privacy needs every update, not their sum")
    central, privacy = dp_combine(contributions, base, cfg, previous)
    info = {} if privacy is None else {"epsilon_total": round(privacy.epsilon_total, 4)}
    return Combined(central, len(contributions.nodes), info, privacy)


def gather_for(
    rule: Rule,
    state: State,
    worker_id: str,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    every_update: bool = False,
) -> Gather:
    """How the counted updates must reach ``rule`` at a close: the workers' sums for the mean,
    every counted update (this process's round file, column block by block) for a robust rule
    or when ``every_update`` (central DP clips each one)."""
    if rule == "mean" and not every_update:
        return WorkerSums()
    return LocalColumns(state, worker_id, shapes)


def combine(rule: Rule, contributions: Contributions, *, fraction: float = 0.2) -> Combined:
    """The central under ``rule`` from what the counted updates contribute.

    ``fraction`` is ``robust_fraction`` (the trimmed share, Krum's f); Krum's pick is reported as
    the node id in ``info["selected"]``.
    """
    if isinstance(contributions, Summed):
        if rule != "mean":
            raise AggregationError(f"rule {rule!r} needs every update, not their sum")
        try:
            mean = contributions.total.mean()
        except EmptyAggregationError:
            return Combined(None, contributions.total.count)
        return Combined(mean, contributions.total.count)
    if rule == "mean":
        raise AggregationError("rule 'mean' takes the workers' sums, not every update")
    return _combine_columns(rule, contributions, fraction)


def _combine_columns(rule: Rule, columns: Columns, fraction: float) -> Combined:
    n = len(columns.nodes)
    if n == 0:
        return Combined(None, 0)
    with columns.open() as read:
        central, info = aggregate_blocks(rule, columns.shapes, n, read, fraction=fraction)
    if "selected" in info:
        info["selected"] = columns.nodes[int(info["selected"])]  # type: ignore[call-overload]
    return Combined(central, n, info)


def close_factors(
    weighting: str, max_share: float, counted: Mapping[str, float]
) -> dict[str, float]:
    """Factors the close sends instead of the stored ones: sample weights, no node above
    ``max_share`` of the total (:func:`~broker_aggregator.robust.capped_factors`); ``{}`` when
    no cap applies (the plain mean, or a share of 1)."""
    if weighting != "samples" or max_share >= 1 or not counted:
        return {}
    return capped_factors(counted, max_share)


def central_weighting(rule: Rule, weighting: str) -> str:
    """What a central's header says it was made with: the weighting of the mean, else the rule."""
    return weighting if rule == "mean" else rule


def toothless(rule: Rule, fraction: float, submissions: int) -> str | None:
    """Why ``rule`` at ``robust_fraction`` would trim or exclude nothing in a round of
    ``submissions`` updates (said once at start), or None when it protects something."""
    if rule == "trimmed_mean" and trim_count(submissions, fraction) == 0:
        return (
            f"trimmed_mean with robust_fraction {fraction:g} trims nothing at "
            f"{submissions} submissions: it is the plain mean"
        )
    if rule == "krum" and krum_f(submissions, fraction) == 0:
        return (
            f"krum with robust_fraction {fraction:g} assumes no hostile node at "
            f"{submissions} submissions (f = 0)"
        )
    return None
