"""Robust rules (broker_aggregator/robust.py) against oracles: numpy's median, scipy's trim_mean, a brute-force
Krum, and the weight cap's defining properties; chunking never changes a result."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from broker_aggregator.robust import aggregate_blocks, capped_factors, krum_f, trim_count
from vfer.fedavg import AggregationError, EmptyAggregationError

SHAPES = {"a.kernel": (7, 5), "a.bias": (5,)}


def updates(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(n)]


def reader(ups: list[dict[str, np.ndarray]]):  # type: ignore[no-untyped-def]
    def read(name: str, lo: int, hi: int) -> np.ndarray:
        return np.stack([u[name].ravel()[lo:hi] for u in ups])

    return read


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 15), seed=st.integers(0, 1000), chunk=st.sampled_from([1, 3, 7, 4096]))
def test_median_matches_numpy(n: int, seed: int, chunk: int) -> None:
    ups = updates(n, seed)
    got, _ = aggregate_blocks("median", SHAPES, n, reader(ups), chunk=chunk)
    for k in SHAPES:
        want = np.median(np.stack([u[k].astype(np.float64) for u in ups]), axis=0)
        np.testing.assert_array_equal(got[k], want.astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 15), seed=st.integers(0, 1000), chunk=st.sampled_from([2, 5, 4096]))
def test_trimmed_mean_matches_scipy(n: int, seed: int, chunk: int) -> None:
    ups = updates(n, seed)
    got, info = aggregate_blocks("trimmed_mean", SHAPES, n, reader(ups), fraction=0.2, chunk=chunk)
    assert info["trimmed_each_end"] == int(0.2 * n)
    for k in SHAPES:
        want = stats.trim_mean(np.stack([u[k].astype(np.float64) for u in ups]), 0.2, axis=0)
        np.testing.assert_allclose(got[k], want.astype(np.float32), rtol=1e-6, atol=1e-7)


def brute_krum(ups: list[dict[str, np.ndarray]], f: int) -> int:
    flat = [np.concatenate([u[k].astype(np.float64).ravel() for k in SHAPES]) for u in ups]
    n = len(flat)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((flat[i] - flat[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: max(1, n - f - 2)]))
    return int(np.argmin(scores))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 12), seed=st.integers(0, 1000), chunk=st.sampled_from([3, 4096]))
def test_krum_picks_what_the_brute_force_picks(n: int, seed: int, chunk: int) -> None:
    ups = updates(n, seed)
    for u in ups[: n // 5]:  # 20 % far away: Krum must not pick them
        for k in u:
            u[k] = u[k] * -50
    got, info = aggregate_blocks("krum", SHAPES, n, reader(ups), fraction=0.2, chunk=chunk)
    f = krum_f(n, 0.2)
    assert info["f"] == f and info["selected"] == brute_krum(ups, f)
    assert info["selected"] >= n // 5
    for k in SHAPES:
        np.testing.assert_array_equal(got[k], ups[int(info["selected"])][k])  # type: ignore[call-overload]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 10**6), min_size=1, max_size=30),
    share=st.sampled_from([0.05, 0.1, 0.2, 0.5, 1.0]),
)
def test_capped_factors_hold_the_cap_and_keep_small_counts(counts: list[int], share: float) -> None:
    named = {f"n{i}": float(c) for i, c in enumerate(counts)}
    got = capped_factors(named, share)
    total = sum(got.values())
    if share * len(counts) <= 1:
        assert set(got.values()) == {1.0}
        return
    assert max(got.values()) / total <= share * (1 + 1e-9)
    level = max(got.values())
    for n, c in named.items():
        assert got[n] == c or math.isclose(got[n], level)  # untouched, or lowered to the level
        assert got[n] <= c
    if max(named.values()) / sum(named.values()) <= share:
        assert got == named


def test_a_takeover_claim_is_capped() -> None:
    got = capped_factors({"evil": 1e9, **{f"pi-{i}": 30.0 for i in range(9)}}, 0.2)
    assert got["evil"] / sum(got.values()) == pytest.approx(0.2)


def test_named_errors() -> None:
    with pytest.raises(EmptyAggregationError):
        aggregate_blocks("median", SHAPES, 0, reader([]))
    with pytest.raises(AggregationError):
        aggregate_blocks("mean", SHAPES, 2, reader(updates(2, 0)))  # type: ignore[arg-type]
    with pytest.raises(AggregationError):
        capped_factors({"a": -1.0}, 0.2)
    assert trim_count(2, 0.49) == 0 and trim_count(10, 0.2) == 2 and krum_f(5, 0.4) == 1
