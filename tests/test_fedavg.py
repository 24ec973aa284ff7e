"""FedAvg math against numpy's average: equal and sample weighting, running and partial sums."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfer.fedavg import (
    EmptyAggregationError,
    InconsistentWeightsError,
    InvalidCountError,
    RunningSum,
    accumulate,
    aggregate,
)


def heads(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "a.kernel": rng.normal(size=(4, 3)).astype(np.float32),
            "a.bias": rng.normal(size=3).astype(np.float32),
        }
        for _ in range(n)
    ]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    counts=st.lists(st.integers(1, 500), min_size=12, max_size=12),
)
def test_matches_np_average(n: int, seed: int, counts: list[int]) -> None:
    hs = heads(n, seed)
    mean = aggregate([(h, c) for h, c in zip(hs, counts, strict=False)], "mean")
    weighted = aggregate([(h, c) for h, c in zip(hs, counts, strict=False)], "samples")
    for name in hs[0]:
        stack = np.stack([h[name] for h in hs]).astype(np.float64)
        np.testing.assert_allclose(mean[name], np.average(stack, axis=0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            weighted[name], np.average(stack, axis=0, weights=counts[:n]), rtol=1e-6, atol=1e-7
        )
        assert mean[name].dtype == np.float32


def test_partial_sums_merge_to_the_whole() -> None:
    hs = heads(9, 1)
    whole = accumulate([(h, 1) for h in hs])
    left, right = accumulate([(h, 1) for h in hs[:4]]), accumulate([(h, 1) for h in hs[4:]])
    left.merge(right)
    left.merge(RunningSum())
    assert left.count == 9 and left.total_weight == 9
    for name, arr in whole.mean().items():
        np.testing.assert_allclose(left.mean()[name], arr, rtol=1e-7)


def test_named_errors() -> None:
    with pytest.raises(EmptyAggregationError):
        aggregate([])
    with pytest.raises(InconsistentWeightsError, match="names differ"):
        aggregate([(heads(1, 0)[0], 1), ({"a.kernel": np.zeros((4, 3))}, 1)])
    with pytest.raises(InconsistentWeightsError, match="shape"):
        aggregate([(heads(1, 0)[0], 1), ({"a.kernel": np.zeros((3, 3)), "a.bias": np.zeros(3)}, 1)])
    with pytest.raises(InvalidCountError):
        aggregate([(heads(1, 0)[0], 0)], "samples")
    with pytest.raises(InvalidCountError):
        aggregate([(heads(1, 0)[0], float("nan"))])


def test_memory_is_one_sum_whatever_the_count() -> None:
    gen = ((h, 1) for h in heads(200, 2))  # a generator: nothing is held beyond the sum
    acc = accumulate(gen)
    assert acc.count == 200 and set(acc.sums) == {"a.kernel", "a.bias"}
