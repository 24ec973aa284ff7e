"""FedAvg as pure math: a list of (weights, count) in, arrays out; no MQTT, SQLite or clock here.

The paper averages the personalized heads with equal weight (``weighting="mean"``); the
sample-weighted variant (``"samples"``) weights each head by the number of clips it was tuned
on, as McMahan et al. and Flower do. :class:`RunningSum` gives the same result one head at a
time in constant memory (float64 sums), and partial sums from several workers merge exactly
like single heads do, so the aggregator never holds more than one update and one sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from vfer.weights import bounds_problem

Weights = Mapping[str, np.ndarray]
Weighting = Literal["mean", "samples"]


class AggregationError(ValueError):
    """Input that cannot be averaged."""


class EmptyAggregationError(AggregationError):
    """Nothing to average (no results, or a total weight of zero)."""


class InconsistentWeightsError(AggregationError):
    """Results whose names or shapes differ from one another."""


class InvalidCountError(AggregationError):
    """A count that is negative, not finite, or zero under sample weighting."""


def weight_of(count: float, weighting: Weighting) -> float:
    """The factor one result contributes: 1 for the paper's mean, its count for ``samples``."""
    if not np.isfinite(count) or count < 0:
        raise InvalidCountError(f"count must be a finite number >= 0, got {count!r}")
    if weighting == "mean":
        return 1.0
    if weighting == "samples":
        if count == 0:
            raise InvalidCountError("sample weighting needs a count > 0 for every result")
        return float(count)
    raise AggregationError(f"unknown weighting {weighting!r}; use 'mean' or 'samples'")


@dataclass
class RunningSum:
    """Sum of ``factor * weights`` in float64 plus the total factor; ``mean()`` divides."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    total_weight: float = 0.0
    count: int = 0

    def add(self, weights: Weights, factor: float = 1.0) -> None:
        if not np.isfinite(factor) or factor <= 0:
            raise InvalidCountError(f"factor must be finite and > 0, got {factor!r}")
        if not self.sums:
            if not weights:
                raise InconsistentWeightsError("a result without any weights")
            self.sums = {n: np.zeros(np.shape(a), dtype=np.float64) for n, a in weights.items()}
        self._check_layout(weights)
        for name, acc in self.sums.items():
            if factor == 1.0:  # x * 1.0 == x exactly: the same bits without a float64 temporary
                np.add(acc, weights[name], out=acc)
            else:
                acc += np.asarray(weights[name], dtype=np.float64) * factor
        self.total_weight += float(factor)
        self.count += 1

    def merge(self, other: RunningSum) -> None:
        """Add another (partial) sum, e.g. from a second aggregator worker."""
        if other.count == 0:
            return
        if not self.sums:
            self.sums = {n: np.zeros_like(a, dtype=np.float64) for n, a in other.sums.items()}
        self._check_layout(other.sums)
        for name, acc in self.sums.items():
            acc += other.sums[name]
        self.total_weight += other.total_weight
        self.count += other.count

    def mean(self, dtype: str = "float32") -> dict[str, np.ndarray]:
        if self.count == 0 or self.total_weight <= 0:
            raise EmptyAggregationError("no results to average")
        return {n: (acc / self.total_weight).astype(dtype) for n, acc in self.sums.items()}

    def _check_layout(self, weights: Weights) -> None:
        if set(weights) != set(self.sums):
            missing = sorted(set(self.sums) - set(weights))[:5]
            extra = sorted(set(weights) - set(self.sums))[:5]
            raise InconsistentWeightsError(f"names differ: missing {missing}, unexpected {extra}")
        for name, acc in self.sums.items():
            if np.shape(weights[name]) != acc.shape:
                raise InconsistentWeightsError(
                    f"{name}: shape {np.shape(weights[name])}, expected {acc.shape}"
                )


def accumulate(
    results: Iterable[tuple[Weights, float]], weighting: Weighting = "mean"
) -> RunningSum:
    """Fold results into a :class:`RunningSum` one at a time (works on a generator)."""
    acc = RunningSum()
    for weights, count in results:
        acc.add(weights, weight_of(count, weighting))
    return acc


def aggregate(
    results: Iterable[tuple[Weights, float]], weighting: Weighting = "mean"
) -> dict[str, np.ndarray]:
    """FedAvg: the (weighted) mean of each named array over ``results``, as float32."""
    return accumulate(results, weighting).mean()


def central_problem(weights: Weights, max_abs: float) -> str | None:
    """Why ``weights`` must not be signed as a central (None when fine): not finite, or a value
    beyond ``max_abs``. The same bound every update is held to."""
    problem = bounds_problem(weights, max_abs)
    return None if problem is None else problem[1]
