"""The Gaussian mechanism on a sum of clipped contributions. Pure numpy: arrays in, arrays out.

Both places that add noise use it, so the rule exists once:

* DP-SGD on the node (:mod:`vfer.privacy.dpsgd`): the contributions are the per-visit gradients of
  one step;
* central DP-FedAvg on the aggregator (:mod:`vfer.privacy.central`): the contributions are the
  nodes' updates (head minus central).

Each contribution is scaled to an L2 norm (over all its arrays together) of at most ``clip``; the
clipped contributions are summed; Gaussian noise of standard deviation ``noise_multiplier * clip``
is added to every coordinate of the sum; the result is divided by a **fixed** denominator (the
expected number of contributions, never the actual count, which would depend on the data).
Adding or removing one contribution moves the sum by at most ``clip``, which is what the
accountant assumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vfer.fedavg import EmptyAggregationError, InconsistentWeightsError

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class NoisyMean:
    """What one application of the mechanism released, and what it did to get there."""

    mean: dict[str, np.ndarray]  # (sum of clipped + noise) / denominator, float32
    norms_before: np.ndarray  # (n,) each contribution's L2 norm before clipping
    norms_after: np.ndarray  # (n,) after clipping: min(norm, clip)
    noise_std: float  # the standard deviation of the noise on each coordinate of the sum
    noise_sample_std: float  # the standard deviation of the noise actually drawn (0 without noise)
    denominator: float


def l2_norm(arrays: Arrays) -> float:
    """The L2 norm of all arrays together (float64 accumulation)."""
    return float(np.sqrt(sum(float(np.vdot(a, a)) for a in _as64(arrays).values())))


def clip_to_norm(arrays: Arrays, clip: float) -> tuple[dict[str, np.ndarray], float]:
    """``arrays`` scaled to an L2 norm of at most ``clip``, and the norm it had before."""
    _check_positive("clip", clip)
    values = _as64(arrays)
    norm = float(np.sqrt(sum(float(np.vdot(a, a)) for a in values.values())))
    if not np.isfinite(norm):
        raise ValueError("a contribution is not finite (NaN or Inf): it cannot be clipped")
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {name: a * scale for name, a in values.items()}, norm


def noisy_mean(
    contributions: Sequence[Arrays],
    *,
    clip: float,
    noise_multiplier: float,
    denominator: float,
    rng: np.random.Generator,
    template: Arrays | None = None,
) -> NoisyMean:
    """Clip each contribution to ``clip``, sum, add N(0, (noise_multiplier * clip)^2) to every
    coordinate, divide by ``denominator``.

    ``template`` gives the names and shapes when there may be no contribution at all (a Poisson
    sampled step can be empty: it still releases noise, as the accountant assumes).
    """
    _check_positive("denominator", denominator)
    if not (np.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier!r}")
    layout = template if template is not None else (contributions[0] if contributions else None)
    if layout is None:
        raise EmptyAggregationError("no contributions and no template to shape the noise")
    sums = {n: np.zeros(np.shape(a), np.float64) for n, a in layout.items()}
    before, after = [], []
    for i, c in enumerate(contributions):
        _check_layout(c, sums, i)
        clipped, norm = clip_to_norm(c, clip)
        for name, acc in sums.items():
            acc += clipped[name]
        before.append(norm)
        after.append(min(norm, clip))
    std = float(noise_multiplier * clip)
    drawn_sq, drawn_n = 0.0, 0
    if std > 0:
        for acc in sums.values():
            noise = rng.normal(0.0, std, acc.shape)
            acc += noise
            drawn_sq += float(np.vdot(noise, noise))
            drawn_n += noise.size
    return NoisyMean(
        mean={n: (acc / denominator).astype(np.float32) for n, acc in sums.items()},
        norms_before=np.asarray(before, np.float64),
        norms_after=np.asarray(after, np.float64),
        noise_std=std,
        noise_sample_std=float(np.sqrt(drawn_sq / drawn_n)) if drawn_n else 0.0,
        denominator=float(denominator),
    )


def _as64(arrays: Arrays) -> dict[str, np.ndarray]:
    return {n: np.asarray(a, dtype=np.float64) for n, a in arrays.items()}


def _check_positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def _check_layout(c: Arrays, sums: Mapping[str, np.ndarray], i: int) -> None:
    if set(c) != set(sums):
        missing = sorted(set(sums) - set(c))[:5]
        extra = sorted(set(c) - set(sums))[:5]
        raise InconsistentWeightsError(
            f"contribution {i}: names differ: missing {missing}, unexpected {extra}"
        )
    for name, acc in sums.items():
        if np.shape(c[name]) != acc.shape:
            raise InconsistentWeightsError(
                f"contribution {i}: {name} has shape {np.shape(c[name])}, expected {acc.shape}"
            )
