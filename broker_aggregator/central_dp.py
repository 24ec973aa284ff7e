"""Central DP-FedAvg on the aggregator (``central_privacy:``), for fleets large enough to pay for it.

At a close, each counted update (head minus the round's base central) is scaled to an L2 norm of
at most ``clip``, the scaled updates are summed, Gaussian noise of standard deviation ``z * clip``
is added to every coordinate, and the sum is divided by ``expected_nodes``: a number fixed in the
config, never the count that answered (which would depend on the data). Adding or removing one
node moves the sum by at most ``clip``, so each round is a Gaussian mechanism of sensitivity 1/z;
rounds compose as mu-Gaussian DP (mu^2 adds up) and :mod:`vfer.privacy.central` turns mu into
epsilon at ``delta``. z is solved so that ``rounds`` rounds spend exactly ``epsilon``; the
aggregator refuses a round policy that would run more rounds than that.

What each central spent (this round and every DP round so far) travels in its signed header
(:class:`vfer.messages.CentralPrivacy`), so nodes and operators read the fleet's epsilon under the
fleet key; ``/metrics`` exports it with the budget left. docs/privacy.md says from which fleet size
this pays (below a few thousand nodes the noise outweighs the mean).

The updates are read column block by column block, as the robust rules read them: a single
worker holds them all (docs/mqtt.md). The noise comes from numpy's PCG64 seeded with 128 bits
from the OS; floating-point side channels of the Gaussian sampler (Mironov 2012) are not
addressed.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping
from functools import cached_property

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker_aggregator.closing import Columns
from broker_aggregator.robust import CHUNK_VALUES, Reader
from vfer.messages import CentralPrivacy
from vfer.privacy.central import central_noise_multiplier, epsilon_for_mu
from vfer.privacy.options import EPSILON_WINDOW_MAX

Weights = Mapping[str, np.ndarray]


class CentralPrivacyConfig(BaseModel):
    """``central_privacy:`` in aggregator.yaml (absent: off, the paper's plain FedAvg)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    epsilon: float = Field(
        gt=0,
        le=EPSILON_WINDOW_MAX,
        description="epsilon the fleet may spend over all `rounds` together (node-level DP)",
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="delta; must be below 1/expected_nodes")
    clip: float = Field(
        gt=0, le=1e6, description="L2 bound of each node's update (head minus central)"
    )
    expected_nodes: int = Field(
        ge=1,
        le=1_000_000,
        description="the mean's fixed denominator: the nodes expected in every round",
    )
    rounds: int = Field(
        2, ge=1, le=10_000, description="rounds the budget covers (round.rounds may not exceed it)"
    )

    @model_validator(mode="after")
    def _delta_below_one_over_n(self) -> CentralPrivacyConfig:
        if self.delta >= 1.0 / self.expected_nodes:
            raise ValueError(
                f"central_privacy.delta ({self.delta:g}) must be below 1/expected_nodes "
                f"({1.0 / self.expected_nodes:g}): otherwise one node's update may leak whole"
            )
        return self

    @cached_property
    def noise_multiplier(self) -> float:
        """z for which ``rounds`` rounds spend exactly ``epsilon`` at ``delta``."""
        return central_noise_multiplier(self.epsilon, self.delta, self.rounds)


def spent(
    cfg: CentralPrivacyConfig, previous: CentralPrivacy | None, clipped: int
) -> CentralPrivacy:
    """What this round spends, composed with the DP rounds before it (``previous``: the base
    central's record, None when the base central was made without central DP)."""
    z = cfg.noise_multiplier
    mu_sq = 1.0 / z**2 + (previous.mu_total**2 if previous is not None else 0.0)
    mu_total = math.sqrt(mu_sq)
    return CentralPrivacy(
        epsilon_round=epsilon_for_mu(1.0 / z, cfg.delta),
        epsilon_total=epsilon_for_mu(mu_total, cfg.delta),
        delta=cfg.delta,
        noise_multiplier=z,
        clip=cfg.clip,
        expected_nodes=cfg.expected_nodes,
        rounds=(previous.rounds if previous is not None else 0) + 1,
        mu_total=mu_total,
        clipped=clipped,
    )


def clipped_noisy_mean(
    read: Reader,
    shapes: Mapping[str, tuple[int, ...]],
    n: int,
    base: Weights,
    *,
    clip: float,
    noise_multiplier: float,
    denominator: float,
    rng: np.random.Generator,
    chunk: int = CHUNK_VALUES,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``base`` plus (sum of the n updates clipped to ``clip`` + N(0, (z clip)^2)) / denominator,
    read block by block (two passes: the norms, then the sum); and each update's norm before.

    The same rule as :func:`vfer.privacy.mechanism.noisy_mean` (a test holds them equal), without
    holding every update in memory at once."""
    sq = np.zeros(n, np.float64)
    for name, lo, hi in _blocks(shapes, chunk):
        delta = _delta(read, name, lo, hi, base)
        sq += np.einsum("ij,ij->i", delta, delta)
    norms = np.sqrt(sq)
    if not np.all(np.isfinite(norms)):
        raise ValueError("an update is not finite (NaN or Inf): it cannot be clipped")
    scale = np.where(norms > clip, clip / np.maximum(norms, 1e-300), 1.0)
    std = noise_multiplier * clip
    out = {name: np.empty(math.prod(shape), np.float64) for name, shape in shapes.items()}
    for name, lo, hi in _blocks(shapes, chunk):
        total = scale @ _delta(read, name, lo, hi, base)
        if std > 0:
            total += rng.normal(0.0, std, total.shape)
        out[name][lo:hi] = np.ravel(base[name]).astype(np.float64)[lo:hi] + total / denominator
    return {n_: out[n_].reshape(shapes[n_]).astype(np.float32) for n_ in shapes}, norms


def dp_combine(
    columns: Columns,
    base: Weights,
    cfg: CentralPrivacyConfig,
    previous: CentralPrivacy | None,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray] | None, CentralPrivacy | None]:
    """The round's noisy central and what it spent; (None, None) when nothing was counted (the
    round reopens and nothing is released, so nothing is spent)."""
    n = len(columns.nodes)
    if n == 0:
        return None, None
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    with columns.open() as read:
        central, norms = clipped_noisy_mean(
            read,
            columns.shapes,
            n,
            base,
            clip=cfg.clip,
            noise_multiplier=cfg.noise_multiplier,
            denominator=float(cfg.expected_nodes),
            rng=rng,
        )
    return central, spent(cfg, previous, int(np.sum(norms > cfg.clip)))


def _blocks(shapes: Mapping[str, tuple[int, ...]], chunk: int) -> Iterator[tuple[str, int, int]]:
    for name, shape in shapes.items():
        size = math.prod(shape)
        for lo in range(0, size, chunk):
            yield name, lo, min(size, lo + chunk)


def _delta(read: Reader, name: str, lo: int, hi: int, base: Weights) -> np.ndarray:
    rows = np.asarray(read(name, lo, hi), dtype=np.float64)
    return rows - np.ravel(base[name]).astype(np.float64)[lo:hi]
