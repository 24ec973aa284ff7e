"""The Gaussian mechanism (clip, sum, noise, fixed denominator) and central DP-FedAvg's closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfer.fedavg import EmptyAggregationError, InconsistentWeightsError
from vfer.privacy.central import (
    central_epsilon,
    central_noise_multiplier,
    dp_fedavg,
    gaussian_delta,
    noise_to_signal,
)
from vfer.privacy.mechanism import clip_to_norm, l2_norm, noisy_mean
from vfer.privacy.options import PrivacyError

V_TRAINABLE = 208_582  # v's trainable weights with K = 6 (vfer/heads.py)


def contribution(rng: np.random.Generator, scale: float) -> dict[str, np.ndarray]:
    return {"a": rng.normal(0, scale, (3, 4)), "b": rng.normal(0, scale, 5)}


@settings(max_examples=60, deadline=None)
@given(st.floats(0.01, 100), st.floats(1e-3, 10), st.integers(0, 2**31))
def test_every_contribution_is_clipped_to_the_bound(scale: float, clip: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = contribution(rng, scale)
    clipped, norm = clip_to_norm(c, clip)
    assert norm == pytest.approx(l2_norm(c))
    assert l2_norm(clipped) <= clip * (1 + 1e-9)
    if norm <= clip:  # short ones are left as they are
        for n in c:
            np.testing.assert_allclose(clipped[n], c[n])
    else:  # long ones keep their direction at exactly the bound
        assert l2_norm(clipped) == pytest.approx(clip)
        np.testing.assert_allclose(clipped["a"] * norm / clip, c["a"])


def test_without_noise_the_mean_is_the_clipped_sum_over_the_fixed_denominator() -> None:
    rng = np.random.default_rng(0)
    cs = [contribution(rng, s) for s in (0.01, 1.0, 50.0)]
    out = noisy_mean(cs, clip=1.0, noise_multiplier=0.0, denominator=10.0, rng=rng)
    expected = sum(clip_to_norm(c, 1.0)[0]["a"] for c in cs) / 10.0
    np.testing.assert_allclose(out.mean["a"], expected, rtol=1e-6)
    np.testing.assert_allclose(out.norms_after, np.minimum(out.norms_before, 1.0))
    assert out.norms_before[2] > 1.0 and out.noise_std == 0.0 and out.noise_sample_std == 0.0


@pytest.mark.parametrize(("z", "clip"), [(0.5, 1.0), (1.97, 0.3), (5.28, 2.0)])
def test_the_noise_std_is_z_times_the_clip(z: float, clip: float) -> None:
    zero = {"w": np.zeros(200_000)}
    out = noisy_mean(
        [zero], clip=clip, noise_multiplier=z, denominator=1.0, rng=np.random.default_rng(1)
    )
    assert out.noise_std == pytest.approx(z * clip)
    assert float(np.std(out.mean["w"])) == pytest.approx(z * clip, rel=0.01)
    assert out.noise_sample_std == pytest.approx(z * clip, rel=0.01)
    assert abs(float(np.mean(out.mean["w"]))) < 0.01 * z * clip


def test_an_empty_step_still_releases_noise_shaped_by_the_template() -> None:
    out = noisy_mean(
        [],
        clip=1.0,
        noise_multiplier=1.0,
        denominator=4.0,
        rng=np.random.default_rng(0),
        template={"w": np.zeros(1000)},
    )
    assert out.mean["w"].shape == (1000,) and np.std(out.mean["w"]) == pytest.approx(0.25, rel=0.1)
    with pytest.raises(EmptyAggregationError):
        noisy_mean(
            [], clip=1.0, noise_multiplier=1.0, denominator=1.0, rng=np.random.default_rng(0)
        )


def test_inconsistent_or_bad_contributions_are_refused_by_name() -> None:
    rng = np.random.default_rng(0)
    good = contribution(rng, 1.0)
    kw = {"clip": 1.0, "noise_multiplier": 1.0, "denominator": 1.0, "rng": rng}
    with pytest.raises(InconsistentWeightsError, match="contribution 1: names differ"):
        noisy_mean([good, {"a": good["a"]}], **kw)  # type: ignore[arg-type]
    with pytest.raises(InconsistentWeightsError, match="contribution 1: b has shape"):
        noisy_mean([good, {**good, "b": np.zeros(6)}], **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not finite"):
        noisy_mean([{**good, "b": np.full(5, np.nan)}], **kw)  # type: ignore[arg-type]
    for key, value in (("clip", 0.0), ("denominator", 0.0), ("noise_multiplier", -1.0)):
        with pytest.raises(ValueError, match=key):
            noisy_mean([good], **{**kw, key: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("epsilon", "z"), [(1.0, 5.28), (3.0, 1.97), (8.0, 0.85)])
def test_central_closed_form_gives_the_issues_noise_multipliers(epsilon: float, z: float) -> None:
    solved = central_noise_multiplier(epsilon, 1e-5, rounds=2)
    assert round(solved, 2) == z
    assert central_epsilon(solved, 2, 1e-5) == pytest.approx(epsilon, rel=1e-6)


def test_central_closed_form_agrees_with_dp_accountings_pld() -> None:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    z = central_noise_multiplier(3.0, 1e-5, rounds=2)
    acc = PLDAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 2))
    assert acc.get_epsilon(1e-5) == pytest.approx(3.0, abs=1e-3)
    # one round spends less than two; more rounds more
    assert central_epsilon(z, 1, 1e-5) < 3.0 < central_epsilon(z, 4, 1e-5)


def test_gaussian_delta_is_balle_and_wang() -> None:
    # mu = 1 at epsilon 0: delta = Phi(1/2) - Phi(-1/2) = the total variation of N(0,1), N(1,1)
    assert gaussian_delta(0.0, 1.0) == pytest.approx(math.erf(0.5 / math.sqrt(2)))
    assert gaussian_delta(1.0, 0.0) == 0.0


def test_the_issues_fleet_sizes_noise_to_signal() -> None:
    z = central_noise_multiplier(3.0, 1e-5, rounds=2)
    ratios = [noise_to_signal(z, V_TRAINABLE, n) for n in (30, 100, 1000)]
    assert [round(r, 1) for r in ratios] == [29.9, 9.0, 0.9]
    with pytest.raises(PrivacyError):
        noise_to_signal(z, V_TRAINABLE, 0)


def test_dp_fedavg_clips_updates_not_weights_and_divides_by_the_expected_nodes() -> None:
    central = {"w": np.ones(4, np.float32), "b": np.zeros(2, np.float32)}
    heads = [
        {"w": np.ones(4, np.float32) + 0.1, "b": np.zeros(2, np.float32)},  # update norm 0.2
        {"w": np.ones(4, np.float32) + 10.0, "b": np.zeros(2, np.float32)},  # norm 20 -> 1
    ]
    new, released = dp_fedavg(
        central,
        heads,
        clip=1.0,
        noise_multiplier=0.0,
        expected_nodes=4,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(released.norms_before, [0.2, 20.0], rtol=1e-5)
    np.testing.assert_allclose(released.norms_after, [0.2, 1.0], rtol=1e-5)
    np.testing.assert_allclose(new["w"], 1.0 + (0.1 + 0.5) / 4, rtol=1e-5)
    assert new["w"].dtype == np.float32 and released.denominator == 4.0
    with pytest.raises(PrivacyError, match="expected_nodes"):
        dp_fedavg(
            central,
            heads,
            clip=1.0,
            noise_multiplier=1.0,
            expected_nodes=0,
            rng=np.random.default_rng(0),
        )
