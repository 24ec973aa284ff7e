"""Gain summaries: the bootstrap interval against scipy's, and the counts by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.experiments.stats import bootstrap_ci, summarize_gains


def test_bootstrap_interval_matches_scipy_percentile_bootstrap() -> None:
    from scipy.stats import bootstrap

    x = np.random.default_rng(3).normal(0.02, 0.1, size=40)
    lo, hi = bootstrap_ci(x, n_boot=20_000, seed=1)
    ref = bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", random_state=2)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.004)
    assert lo < x.mean() < hi


def test_summary_counts_and_edge_cases() -> None:
    s = summarize_gains(np.array([0.1, -0.05, 0.0, 0.2, 0.0]))
    assert (s.n, s.gained, s.lost, s.same) == (5, 2, 1, 2)
    assert s.mean == pytest.approx(0.05)
    assert "2 gained, 1 lost, 2 same of 5" in s.line()
    one = summarize_gains(np.array([0.3]))
    assert one.ci_low == one.ci_high == 0.3
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([1.0, np.nan]))
