"""DP-SGD fine-tune of v on visits: every per-visit gradient clipped, noise of std z * clip, the
epsilon spent the accountant's, and the per-visit selection local to each visit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.support.aggregator import random_v
from vfer.privacy.accountant import dpsgd_epsilon, plan_night
from vfer.privacy.dpsgd import DPFineTuneResult, StepRecord, finetune_v_dp
from vfer.privacy.options import PrivacyError, PrivacyOptions
from vfer.privacy.selection import select_visit_clips
from vfer.selection import SelectionError

K = 4


def visits(n: int, seed: int) -> tuple[list[list[np.ndarray]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    vs = [
        [
            rng.normal(0, 1, (int(rng.integers(4, 9)), 1280)).astype(np.float32)
            for _ in range(int(rng.integers(1, 4)))
        ]
        for _ in range(n)
    ]
    return vs, [[int(y) for y in rng.integers(0, K, len(v))] for v in vs]


@pytest.fixture(scope="module")
def run() -> tuple[DPFineTuneResult, list[StepRecord], float]:
    start = random_v(K, np.random.default_rng(1), trainable_only=False)
    vs, ys = visits(24, seed=2)
    opts = PrivacyOptions(enabled=True, epsilon_per_night=3.0, clip=0.5)
    plan = plan_night(opts, len(vs), batch_size=8, epochs=2)
    seen: list[StepRecord] = []
    return finetune_v_dp(start, vs, ys, plan, seed=0, on_step=seen.append), seen, 3.0


@pytest.mark.slow
def test_every_per_visit_gradient_is_clipped_to_the_bound(
    run: tuple[DPFineTuneResult, list[StepRecord], float],
) -> None:
    result, seen, _ = run
    assert seen == list(result.records) and len(seen) == result.plan.steps == 6
    before = np.concatenate([r.norms_before for r in seen])
    after = np.concatenate([r.norms_after for r in seen])
    assert len(before) == sum(r.visits for r in seen) > 0
    assert np.all(after <= 0.5 * (1 + 1e-9))
    np.testing.assert_allclose(after, np.minimum(before, 0.5))
    assert np.all(before > 0) and result.clipped_share == pytest.approx(np.mean(before > 0.5))


@pytest.mark.slow
def test_the_noise_std_is_z_times_the_clip_and_epsilon_is_the_accountants(
    run: tuple[DPFineTuneResult, list[StepRecord], float],
) -> None:
    result, seen, target = run
    p = result.plan
    for r in seen:
        assert r.noise_std == pytest.approx(p.noise_multiplier * 0.5)
        # 208,582 coordinates drawn per step: the sample's std is within 1% of z * clip
        assert r.noise_sample_std == pytest.approx(p.noise_multiplier * 0.5, rel=0.01)
    spent = dpsgd_epsilon(p.sampling_rate, p.noise_multiplier, p.steps, p.delta)
    assert result.epsilon == pytest.approx(spent) and spent == pytest.approx(target, rel=0.01)
    assert spent <= target
    assert np.isfinite(result.tuned.loss_after) and set(result.tuned.weights) >= {"v_out.bias"}


@pytest.mark.slow
def test_a_seed_repeats_the_run_and_no_seed_draws_fresh_noise() -> None:
    start = random_v(K, np.random.default_rng(1), trainable_only=False)
    vs, ys = visits(6, seed=3)
    plan = plan_night(PrivacyOptions(enabled=True, epsilon_per_night=8.0), 6, 4, 1)
    a = finetune_v_dp(start, vs, ys, plan, seed=7).tuned.weights["v_out.bias"]
    b = finetune_v_dp(start, vs, ys, plan, seed=7).tuned.weights["v_out.bias"]
    c = finetune_v_dp(start, vs, ys, plan, seed=None).tuned.weights["v_out.bias"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_inconsistent_visits_are_refused_before_any_training() -> None:
    start = random_v(K, np.random.default_rng(1), trainable_only=False)
    vs, ys = visits(4, seed=4)
    plan = plan_night(PrivacyOptions(enabled=True), 4, 2, 1)
    with pytest.raises(PrivacyError, match="the plan is for 5 visits"):
        finetune_v_dp(start, vs, ys, replace(plan, visits=5))
    with pytest.raises(PrivacyError, match="visit 1"):
        finetune_v_dp(start, vs, [ys[0], [], ys[2], ys[3]], plan)
    with pytest.raises(PrivacyError, match=r"labels must be in 0\.\.3"):
        finetune_v_dp(start, vs, [[9] * len(v) for v in vs], plan)


def probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float64)


def test_visit_selection_reads_each_visit_alone() -> None:
    night = [
        probs([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55]]),  # 3 clips
        probs([[0.2, 0.8]]),
        probs([[0.5, 0.5], [0.52, 0.48]]),
        probs([[0.4, 0.6], [0.3, 0.7], [0.1, 0.9]]),
    ]
    sel = select_visit_clips(night, p_threshold=0.56, clips_per_visit=2)
    assert sel.visits == [0, 1, 3] and sel.count == 3 and sel.below_threshold == 3
    assert [c.tolist() for c in sel.clips] == [[0, 1], [0], [2, 1]]
    assert [y.tolist() for y in sel.labels] == [[0, 0], [1], [1, 1]]
    # adding a visit changes nothing about the others' selection (the accountant's adjacency)
    more = select_visit_clips([*night, probs([[0.99, 0.01]] * 5)], 0.56, 2)
    assert more.visits[:3] == sel.visits and [c.tolist() for c in more.clips[:3]] == [
        c.tolist() for c in sel.clips
    ]
    assert more.clips[3].tolist() == [0, 1]  # ties: the earlier clip first
    with pytest.raises(SelectionError, match="visit 1"):
        select_visit_clips([night[0], probs([[0.5, np.nan]])], 0.5, 2)
    with pytest.raises(SelectionError, match="clips_per_visit"):
        select_visit_clips(night, 0.5, 0)
