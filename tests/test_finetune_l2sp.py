"""The L2-SP option of the fine-tune: a pull towards the central v, off by default."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.aggregator import random_v
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.personalize import finetune_v


def _drift(start: dict[str, np.ndarray], tuned: dict[str, np.ndarray]) -> float:
    names = trainable_names(vfer_spec(4))
    return float(sum(np.sum((tuned[n] - start[n]) ** 2) for n in names))


def test_the_pull_keeps_v_closer_to_the_central_and_zero_is_the_plain_rule() -> None:
    rng = np.random.default_rng(0)
    start = random_v(4, np.random.default_rng(1), trainable_only=False)
    clips = [
        rng.normal(size=(int(rng.integers(5, 12)), 1280)).astype(np.float32) for _ in range(16)
    ]
    labels = rng.integers(0, 4, size=16)
    plain = finetune_v(start, clips, labels, epochs=3, seed=0)
    again = finetune_v(start, clips, labels, epochs=3, seed=0, l2sp=0.0)
    pulled = finetune_v(start, clips, labels, epochs=3, seed=0, l2sp=50.0)
    for n in plain.weights:
        np.testing.assert_array_equal(plain.weights[n], again.weights[n])
    assert _drift(start, pulled.weights) < 0.5 * _drift(start, plain.weights)
    assert pulled.loss_before == pytest.approx(plain.loss_before)  # reported losses are plain CE


@pytest.mark.parametrize("bad", [-0.1, float("nan"), 101.0])
def test_a_pull_out_of_range_is_refused(bad: float) -> None:
    start = random_v(4, np.random.default_rng(1), trainable_only=False)
    with pytest.raises(ValueError, match="l2sp"):
        finetune_v(start, [np.zeros((3, 1280), np.float32)], [0], l2sp=bad)
