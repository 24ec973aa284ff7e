"""Central (node-level) DP-FedAvg for the aggregator, as pure math: clip each node's update, average
with a fixed denominator, add Gaussian noise, and say what epsilon that spends.

With every node taking part in every round (no sampling), R rounds of the Gaussian mechanism with
noise multiplier z are one Gaussian mechanism of sensitivity sqrt(R) / z (mu-Gaussian DP, Dong,
Roth and Su 2019), whose exact (epsilon, delta) curve is Balle and Wang's (ICML 2018, Thm. 8):

    delta(epsilon) = Phi(-epsilon / mu + mu / 2) - e^epsilon * Phi(-epsilon / mu - mu / 2)

so no accountant library is needed here (the aggregator stays light). The unit protected is one
node's whole update: adding or removing a node moves the clipped sum by at most ``clip``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from vfer.privacy.mechanism import NoisyMean, noisy_mean
from vfer.privacy.options import EPSILON_WINDOW_MAX, PrivacyError

Weights = Mapping[str, np.ndarray]


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(epsilon: float, mu: float) -> float:
    """The smallest delta a mu-Gaussian-DP mechanism satisfies at ``epsilon`` (Balle & Wang)."""
    if mu <= 0:
        return 0.0
    tail = _phi(-epsilon / mu - mu / 2)
    big = math.exp(epsilon) * tail if tail > 0 else 0.0
    return max(0.0, _phi(-epsilon / mu + mu / 2) - big)


def _check(delta: float, rounds: int) -> None:
    if not (0 < delta < 1):
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    if not (isinstance(rounds, int) and rounds >= 1):
        raise PrivacyError(f"rounds must be an integer >= 1, got {rounds!r}")


def central_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``rounds`` full-participation rounds with noise multiplier z."""
    _check(delta, rounds)
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyError(f"noise_multiplier must be finite and > 0, got {noise_multiplier!r}")
    return epsilon_for_mu(math.sqrt(rounds) / noise_multiplier, delta)


def epsilon_for_mu(mu: float, delta: float) -> float:
    """Epsilon at ``delta`` of a mu-Gaussian-DP mechanism (rounds compose: mu^2 adds up)."""
    if not (0 < delta < 1):
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    if not (math.isfinite(mu) and mu >= 0):
        raise PrivacyError(f"mu must be finite and >= 0, got {mu!r}")
    if mu == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_delta(hi, mu) > delta:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            return math.inf
    for _ in range(200):  # delta falls as epsilon grows
        mid = (lo + hi) / 2
        if gaussian_delta(mid, mu) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def central_noise_multiplier(epsilon: float, delta: float, rounds: int) -> float:
    """The noise multiplier z for which ``rounds`` full-participation rounds spend exactly
    ``epsilon`` at ``delta`` (z = 5.28 / 1.97 / 0.85 at epsilon 1 / 3 / 8, delta 1e-5, 2 rounds)."""
    _check(delta, rounds)
    if not (math.isfinite(epsilon) and 0 < epsilon <= EPSILON_WINDOW_MAX):
        raise PrivacyError(f"epsilon must be in (0, {EPSILON_WINDOW_MAX:g}], got {epsilon!r}")
    lo, hi = 1e-6, 1.0  # mu; delta grows with mu
    while gaussian_delta(epsilon, hi) < delta:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if gaussian_delta(epsilon, mid) < delta:
            lo = mid
        else:
            hi = mid
    return math.sqrt(rounds) / lo


def noise_to_signal(noise_multiplier: float, parameters: int, nodes: int) -> float:
    """The L2 norm of the noise added to the mean, in units of the clip norm: z * sqrt(d) / n.

    A mean of clipped updates has a norm of at most 1 clip; above 1 the noise outweighs it."""
    if parameters < 1 or nodes < 1:
        raise PrivacyError(f"parameters and nodes must be >= 1, got {parameters}, {nodes}")
    return noise_multiplier * math.sqrt(parameters) / nodes


def dp_fedavg(
    central: Weights,
    heads: Sequence[Weights],
    *,
    clip: float,
    noise_multiplier: float,
    expected_nodes: int,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], NoisyMean]:
    """The new central: ``central`` plus the noisy mean of the nodes' updates (head - central),
    each clipped to ``clip``, divided by ``expected_nodes`` (fixed before the round, never the
    number that answered). Returns the new weights and what the mechanism did."""
    if not (isinstance(expected_nodes, int) and expected_nodes >= 1):
        raise PrivacyError(f"expected_nodes must be an integer >= 1, got {expected_nodes!r}")
    base = {n: np.asarray(a, np.float64) for n, a in central.items()}
    updates = [
        {n: np.asarray(h[n], np.float64) - base[n] if n in base else h[n] for n in h} for h in heads
    ]
    released = noisy_mean(
        updates,
        clip=clip,
        noise_multiplier=noise_multiplier,
        denominator=float(expected_nodes),
        rng=rng,
        template=central,
    )
    new = {n: (base[n] + released.mean[n]).astype(np.float32) for n in base}
    return new, released
