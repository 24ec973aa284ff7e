"""The accountant against published values, z solved for a target, and the window's budget."""

from __future__ import annotations

import math

import pytest

from vfer.privacy.accountant import (
    NightPlan,
    PrivacyBudget,
    dpsgd_epsilon,
    plan_night,
    solve_noise_multiplier,
)
from vfer.privacy.options import PrivacyError, PrivacyOptions

# TensorFlow Privacy's own tests (github.com/tensorflow/privacy,
# tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py, commit 2cd46dbb), which run
# Google's dp-accounting under add-or-remove-one adjacency with Poisson sampling:
TFP = "tensorflow_privacy compute_dp_sgd_privacy_test.py"
# (source, kind, sampling rate q, noise multiplier z, steps, delta, published epsilon)
ORACLE = [
    # test_compute_dp_sgd_privacy 'Test0': n=60000, batch 150, z=1.3, 15 epochs -> 0.7242234026
    (
        f"{TFP} Test0",
        "rdp",
        150 / 60000,
        1.3,
        math.ceil(15 * 60000 / 150),
        1e-5,
        0.7242234026109595,
    ),
    # 'Test1': n=100000, batch 100, z=1.0, 30 epochs, delta 1e-7 -> 1.4154988495
    (
        f"{TFP} Test1",
        "rdp",
        100 / 100000,
        1.0,
        math.ceil(30 * 100000 / 100),
        1e-7,
        1.4154988495444842,
    ),
    # test_compute_dp_sgd_example_privacy, no microbatching, q=1e-2, z=0.7, 1.2 epochs (120 steps)
    (f"{TFP} no_microbatching_with_subsampling_rdp", "rdp", 1e-2, 0.7, 120, 1e-5, 3.2392676),
    (f"{TFP} no_microbatching_with_subsampling_pld", "pld", 1e-2, 0.7, 120, 1e-5, 2.4612381),
    # test_dp_sgd_privacy_statement_*: 10000 examples, batch 64, 5 epochs, z=2.0 with
    # microbatching (sensitivity doubled: z=1.0 per example), delta 1e-6, "Poisson sampling" line
    (f"{TFP} statement, RDP", "rdp", 64 / 10000, 1.0, math.ceil(5 * 10000 / 64), 1e-6, 1.616),
    (f"{TFP} statement, PLD", "pld", 64 / 10000, 1.0, math.ceil(5 * 10000 / 64), 1e-6, 1.199),
]


@pytest.mark.parametrize(("source", "kind", "q", "z", "steps", "delta", "published"), ORACLE)
def test_the_accountant_matches_published_values_within_one_percent(
    source: str, kind: str, q: float, z: float, steps: int, delta: float, published: float
) -> None:
    eps = dpsgd_epsilon(q, z, steps, delta, kind)  # type: ignore[arg-type]
    assert eps == pytest.approx(published, rel=0.01), source


@pytest.mark.parametrize(
    ("target", "q", "steps"), [(1.0, 0.5, 4), (3.0, 8 / 500, 125), (8.0, 1.0, 2)]
)
def test_z_is_solved_so_that_the_epsilon_spent_is_the_target(
    target: float, q: float, steps: int
) -> None:
    z = solve_noise_multiplier(target, q, steps, 1e-5)
    spent = dpsgd_epsilon(q, z, steps, 1e-5)
    assert spent <= target and spent == pytest.approx(target, rel=0.01)
    assert dpsgd_epsilon(q, z * 0.97, steps, 1e-5) > target  # a smaller z would overspend


def test_a_night_plan_uses_the_visits_batch_and_epochs() -> None:
    o = PrivacyOptions(enabled=True, epsilon_per_night=3.0, clip=0.5)
    plan = plan_night(o, visits=40, batch_size=8, epochs=2)
    assert plan.sampling_rate == pytest.approx(0.2) and plan.steps == 10 and plan.batch_size == 8
    assert plan.noise_std == pytest.approx(plan.noise_multiplier * 0.5)
    assert plan.epsilon == pytest.approx(3.0, rel=0.01) and plan.epsilon <= 3.0
    few = plan_night(o, visits=3, batch_size=8, epochs=2)
    assert few.sampling_rate == 1.0 and few.steps == 1  # every visit, once per "epoch" batch
    with pytest.raises(PrivacyError, match="delta"):
        plan_night(PrivacyOptions(enabled=True, delta=1e-2), visits=200, batch_size=8, epochs=2)


def plan(eps: float) -> NightPlan:
    o = PrivacyOptions(enabled=True, epsilon_per_night=eps)
    return plan_night(o, visits=100, batch_size=10, epochs=1)


def test_the_budget_stops_when_the_window_is_spent_and_frees_nights_that_leave_it() -> None:
    night = plan(2.0)
    two = PrivacyBudget(PrivacyOptions(enabled=True, epsilon_per_night=2.0, epsilon_window=100.0))
    two_nights = two.record(0, night).record(1, night).spent(1)
    assert 2.0 < two_nights < 4.0  # nights compose (RDP), which is less than their sum
    # a window of 3 nights whose budget holds exactly two such nights
    opts = PrivacyOptions(
        enabled=True, epsilon_per_night=2.0, epsilon_window=two_nights * 1.001, window_nights=3
    )
    budget = PrivacyBudget(opts)
    assert budget.spent(10) == 0.0 and budget.left(10) == opts.epsilon_window
    assert not budget.may_submit(10)  # nothing fine-tuned tonight, nothing to send
    budget = budget.record(10, night).record(11, night)
    assert budget.may_submit(11) and budget.left(11) == pytest.approx(0.0, abs=0.01)
    # night 12: the window 10..12 is spent; the node neither adapts nor submits
    assert not budget.may_adapt(12, night) and not budget.may_submit(12)
    with pytest.raises(PrivacyError, match="does not fit the window"):
        budget.record(12, night)
    # night 13: night 10 has left the window (11..13), one night's budget is free again
    assert budget.spent(13) == pytest.approx(night.epsilon, rel=1e-6)
    assert budget.may_adapt(13, night)
    budget = budget.record(13, night)
    assert budget.may_submit(13) and budget.status(13).nights_counted == 2
    assert budget.status(13).spent == pytest.approx(two_nights, rel=1e-6)


def test_a_night_over_its_own_budget_may_not_adapt() -> None:
    opts = PrivacyOptions(enabled=True, epsilon_per_night=1.0, epsilon_window=50.0)
    assert not PrivacyBudget(opts).may_adapt(0, plan(3.0))


def test_the_ledger_round_trips_and_refuses_hostile_records() -> None:
    opts = PrivacyOptions(enabled=True, epsilon_per_night=2.0, epsilon_window=10.0)
    budget = PrivacyBudget(opts).record(1, plan(2.0)).record(2, plan(1.0))
    again = PrivacyBudget.from_records(opts, budget.as_records())
    assert again.spent(2) == pytest.approx(budget.spent(2)) and again.spends == budget.spends
    good = budget.as_records()[0]
    for bad in (
        {**good, "noise_multiplier": -1.0},
        {**good, "sampling_rate": 0.0},
        {**good, "steps": 0},
        {**good, "noise_multiplier": "lots"},
        {k: v for k, v in good.items() if k != "steps"},
        {**good, "extra": 1},
        "night 1",
    ):
        with pytest.raises(PrivacyError, match="ledger record 0"):
            PrivacyBudget.from_records(opts, [bad])  # type: ignore[list-item]
