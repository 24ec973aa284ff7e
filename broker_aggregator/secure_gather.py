"""What a secure round's finished groups contribute to the central (the SHARE design).

Each finished group gives one candidate central, the base plus its unmasked mean move; the
round's ``rule`` runs over these rows exactly as it runs over plain updates: ``mean`` weighted
by each group's total weight (its node count under ``weighting: mean``, so the fleet mean of
every counted update), a robust rule over one row per group.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from broker_aggregator.closing import Columns, Contributions, Summed
from broker_aggregator.robust import Reader, Rule
from broker_aggregator.rules import Combined, combine
from vfer.fedavg import RunningSum
from vfer.heads_spec import WeightSpec
from vfer.secagg import GroupResult, flatten, unflatten


def group_contributions(
    results: list[GroupResult],
    base: Mapping[str, np.ndarray],
    spec: Mapping[str, WeightSpec],
    rule: Rule,
) -> Contributions:
    """Each group's candidate central, summed with its weight for ``mean``, one row each for a
    robust rule."""
    base_flat = flatten(base, spec)
    rows = [unflatten(base_flat + r.mean, spec) for r in results]
    if rule == "mean":
        total = RunningSum()
        for r, row in zip(results, rows, strict=True):
            total.add(row, float(r.weight))
        return Summed(total)
    return Columns(
        nodes=tuple(f"group-{r.group_id}" for r in results),
        shapes={n: spec[n].shape for n in rows[0]} if rows else {},
        open=lambda: _rows_reader(rows),
    )


def combine_groups(
    results: list[GroupResult],
    dropped: Mapping[int, str],
    base: Mapping[str, np.ndarray],
    spec: Mapping[str, WeightSpec],
    rule: Rule,
    fraction: float,
) -> Combined:
    """The central under ``rule`` over the group means, counted as the nodes inside them."""
    combined = combine(rule, group_contributions(results, base, spec, rule), fraction=fraction)
    info = {**combined.info, "groups": len(results), "dropped": dict(dropped)}
    return replace(combined, count=sum(len(r.survivors) for r in results), info=info)


@contextmanager
def _rows_reader(rows: list[dict[str, np.ndarray]]) -> Iterator[Reader]:
    def read(name: str, lo: int, hi: int) -> np.ndarray:
        return np.stack([row[name].reshape(-1)[lo:hi] for row in rows]).astype(np.float64)

    yield read
