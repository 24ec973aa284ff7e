"""Summaries of per-subject changes that say whether a difference can be told from noise.

Pure: arrays in, numbers out. The percentile bootstrap resamples *subjects* (the unit the paper
personalizes), so the interval reflects how much the mean gain would move with other people.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GainSummary:
    n: int
    mean: float
    ci_low: float
    ci_high: float
    gained: int
    lost: int
    same: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self, what: str = "change") -> str:
        return (
            f"mean {what} {self.mean:+.3f} (95% CI {self.ci_low:+.3f} to {self.ci_high:+.3f}), "
            f"{self.gained} gained, {self.lost} lost, {self.same} same of {self.n}"
        )


def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    if not np.all(np.isfinite(x)):
        raise ValueError("values contain NaN or Inf")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def summarize_gains(
    deltas: np.ndarray, *, tol: float = 1e-9, n_boot: int = 10_000, seed: int = 0
) -> GainSummary:
    """Mean per-subject change with its 95% bootstrap interval and the gained/lost/same counts."""
    x = np.asarray(deltas, dtype=np.float64).reshape(-1)
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return GainSummary(
        n=int(x.size),
        mean=float(x.mean()),
        ci_low=lo,
        ci_high=hi,
        gained=int((x > tol).sum()),
        lost=int((x < -tol).sum()),
        same=int((np.abs(x) <= tol).sum()),
    )
