"""Robust aggregation rules as pure math: coordinate-wise median, trimmed mean, Krum, and the
per-node weight cap of sample weighting. No MQTT, SQLite or clock here.

FedAvg's mean (:mod:`vfer.fedavg`) lets one node move the central as far as it likes within
the per-update bounds. These rules bound that influence (Yin et al. 2018, coordinate-wise
median and trimmed mean; Blanchard et al. 2017, Krum). They need every update's value at a
coordinate, not only a running sum, so they work **column block by column block**: the caller
hands a ``read(name, lo, hi)`` that returns an ``(N, hi - lo)`` array of the N updates' flat
values ``lo:hi`` of array ``name`` (the aggregator reads those bytes straight from its round
file), and memory stays at N x :data:`CHUNK_VALUES` values whatever the head's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np

from vfer.fedavg import AggregationError, EmptyAggregationError

#: Every aggregation rule (``rule`` in aggregator.yaml); the mean is :mod:`vfer.fedavg`'s.
Rule = Literal["mean", "median", "trimmed_mean", "krum"]
#: Values per update read at once: N x CHUNK_VALUES float64 in memory (N=1000: 128 MB).
CHUNK_VALUES = 16_384

Reader = Callable[[str, int, int], np.ndarray]


def capped_factors(counts: Mapping[str, float], max_share: float) -> dict[str, float]:
    """Sample weights where no node holds more than ``max_share`` of the total.

    Water-filling: the largest counts are lowered to a common level ``c`` chosen so that
    ``c / total == max_share``; the others keep their count. When ``max_share * N < 1`` no
    weights can satisfy the cap and every node gets the same weight.
    """
    if not 0 < max_share <= 1:
        raise AggregationError(f"max_share must be in (0, 1], got {max_share}")
    if any(not math.isfinite(c) or c <= 0 for c in counts.values()):
        raise AggregationError("counts must be finite and > 0")
    if not counts:
        return {}
    if max_share * len(counts) <= 1:
        return dict.fromkeys(counts, 1.0)
    ordered = sorted(counts.values(), reverse=True)
    rest = sum(ordered)
    level = math.inf
    for k in range(len(ordered)):  # k largest capped at `level`
        level = max_share * rest / (1 - k * max_share)
        if ordered[k] <= level:
            break
        rest -= ordered[k]
    return {n: min(float(c), level) for n, c in counts.items()}


def trim_count(n: int, fraction: float) -> int:
    """Updates dropped at each end by the trimmed mean (at most (n - 1) // 2)."""
    return min(math.floor(fraction * n), (n - 1) // 2)


def krum_f(n: int, fraction: float) -> int:
    """Krum's assumed number of Byzantine updates, so that n > 2f + 2 holds when it can."""
    return max(0, min(math.floor(fraction * n), (n - 3) // 2))


def coordinate_median(block: np.ndarray) -> np.ndarray:
    return np.median(block, axis=0)


def trimmed_mean(block: np.ndarray, trim: int) -> np.ndarray:
    """Mean over axis 0 after dropping the ``trim`` smallest and ``trim`` largest per column."""
    n = block.shape[0]
    if trim == 0:
        return block.mean(axis=0)
    part = np.partition(block, (trim, n - trim - 1), axis=0)
    return part[trim : n - trim].mean(axis=0)


def krum_scores(sq_dist: np.ndarray, f: int) -> np.ndarray:
    """Each update's Krum score: the sum of its n - f - 2 smallest squared distances to others."""
    n = sq_dist.shape[0]
    m = max(1, n - f - 2)
    d = sq_dist + np.diag(np.full(n, np.inf))
    return np.sort(d, axis=1)[:, : min(m, n - 1)].sum(axis=1) if n > 1 else np.zeros(1)


def aggregate_blocks(
    rule: Rule,
    shapes: Mapping[str, tuple[int, ...]],
    n: int,
    read: Reader,
    *,
    fraction: float = 0.2,
    chunk: int = CHUNK_VALUES,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The central under ``rule`` (float32 arrays) and what the rule decided (e.g. Krum's pick).

    ``read(name, lo, hi)`` returns the N updates' flat values ``lo:hi`` of ``name``.
    """
    if n <= 0:
        raise EmptyAggregationError("no results to aggregate")
    if rule == "krum":
        return _krum(shapes, n, read, fraction, chunk)
    if rule not in ("median", "trimmed_mean"):
        raise AggregationError(f"rule {rule!r} is not a block rule; use 'median', 'trimmed_mean'")
    trim = trim_count(n, fraction)
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        size = math.prod(shape)
        flat = np.empty(size, dtype=np.float64)
        for lo in range(0, size, chunk):
            hi = min(size, lo + chunk)
            block = np.asarray(read(name, lo, hi), dtype=np.float64)
            flat[lo:hi] = (
                coordinate_median(block) if rule == "median" else trimmed_mean(block, trim)
            )
        out[name] = flat.reshape(shape).astype(np.float32)
    return out, {"rule": rule, "trimmed_each_end": trim if rule == "trimmed_mean" else 0}


def _krum(
    shapes: Mapping[str, tuple[int, ...]], n: int, read: Reader, fraction: float, chunk: int
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    sq = np.zeros((n, n), dtype=np.float64)
    for name, shape in shapes.items():
        size = math.prod(shape)
        for lo in range(0, size, chunk):
            x = np.asarray(read(name, lo, min(size, lo + chunk)), dtype=np.float64)
            g = x @ x.T
            diag = np.diag(g)
            sq += diag[:, None] + diag[None, :] - 2 * g
    np.maximum(sq, 0, out=sq)
    f = krum_f(n, fraction)
    pick = int(np.argmin(krum_scores(sq, f)))
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        size = math.prod(shape)
        flat = np.empty(size, dtype=np.float32)
        for lo in range(0, size, chunk):
            hi = min(size, lo + chunk)
            flat[lo:hi] = np.asarray(read(name, lo, hi))[pick]
        out[name] = flat.reshape(shape)
    return out, {"rule": "krum", "f": f, "selected": pick}
