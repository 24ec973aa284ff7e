"""Epsilon of DP-SGD nights, the noise that a target epsilon needs, and a node's budget over a window.

Accounting is Google's ``dp-accounting`` (RDP by default, PLD on request): one night's fine-tune is
``steps`` Poisson-sampled Gaussian mechanisms (sampling rate q = expected batch / visits, noise
multiplier z), under add-or-remove-one-visit adjacency; nights compose. Pure: no clock, no file,
no model. The caller names the nights (an integer such as days since an epoch) and keeps the
ledger (:meth:`PrivacyBudget.as_records` / :meth:`PrivacyBudget.from_records`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

from vfer.privacy.options import PrivacyError, PrivacyOptions

Kind = Literal["rdp", "pld"]

#: z is solved to within this relative distance of the target epsilon (always at or below it)
SOLVE_RTOL = 1e-3
Z_MAX = 1e4


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp-accounting logs through absl when an RDP order does not converge (the order is then
    left out, which is harmless); keep the node's console to its own lines."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class NightSpend:
    """One DP-SGD fine-tune: what the accountant needs to compose it with the others."""

    night: int  # the caller's night number (days since an epoch, say)
    sampling_rate: float  # q: each visit's chance to be in a step's batch
    noise_multiplier: float  # z: the noise's std over the clip norm
    steps: int
    epsilon: float = 0.0  # this night alone, at the budget's delta (reported, never composed)

    def __post_init__(self) -> None:
        if not (0 < self.sampling_rate <= 1):
            raise PrivacyError(f"sampling_rate must be in (0, 1], got {self.sampling_rate!r}")
        if not (math.isfinite(self.noise_multiplier) and 0 < self.noise_multiplier <= Z_MAX):
            raise PrivacyError(
                f"noise_multiplier must be in (0, {Z_MAX:g}], got {self.noise_multiplier!r}"
            )
        if not (isinstance(self.steps, int) and 1 <= self.steps <= 10_000_000):
            raise PrivacyError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.night, int):
            raise PrivacyError(f"night must be an integer, got {self.night!r}")


@dataclass(frozen=True)
class NightPlan:
    """Tonight's DP-SGD settings, solved before the fine-tune runs."""

    visits: int
    batch_size: float  # expected visits per step (q * visits)
    sampling_rate: float
    steps: int
    noise_multiplier: float
    epsilon: float  # what these settings spend, at ``delta`` (at most the target)
    delta: float
    clip: float

    @property
    def noise_std(self) -> float:
        """The noise's standard deviation on each coordinate of a step's gradient sum."""
        return self.noise_multiplier * self.clip

    def spend(self, night: int) -> NightSpend:
        return NightSpend(
            night, self.sampling_rate, self.noise_multiplier, self.steps, self.epsilon
        )


def dpsgd_event(sampling_rate: float, noise_multiplier: float, steps: int) -> Any:
    import dp_accounting

    step = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(step, steps)


def _accountant(kind: Kind) -> Any:
    if kind == "rdp":
        from dp_accounting.rdp import RdpAccountant

        return RdpAccountant()
    if kind == "pld":
        from dp_accounting.pld import PLDAccountant

        return PLDAccountant()
    raise PrivacyError(f"unknown accountant {kind!r}; use 'rdp' or 'pld'")


def composed_epsilon(spends: Iterable[NightSpend], delta: float, kind: Kind = "rdp") -> float:
    """Epsilon at ``delta`` of all ``spends`` composed (0 for none)."""
    events = [dpsgd_event(s.sampling_rate, s.noise_multiplier, s.steps) for s in spends]
    if not events:
        return 0.0
    import dp_accounting

    acc = _accountant(kind)
    with _quiet_absl():
        acc.compose(dp_accounting.ComposedDpEvent(events))
        return float(acc.get_epsilon(delta))


def dpsgd_epsilon(
    sampling_rate: float, noise_multiplier: float, steps: int, delta: float, kind: Kind = "rdp"
) -> float:
    """Epsilon of one DP-SGD run (``steps`` Poisson-sampled Gaussian steps) at ``delta``."""
    return composed_epsilon([NightSpend(0, sampling_rate, noise_multiplier, steps)], delta, kind)


@functools.lru_cache(maxsize=1024)
def solve_noise_multiplier(
    epsilon: float, sampling_rate: float, steps: int, delta: float, kind: Kind = "rdp"
) -> float:
    """The smallest z (to :data:`SOLVE_RTOL` in epsilon) whose DP-SGD run spends at most
    ``epsilon`` at ``delta``: bisection, epsilon falls as z grows. Pure, so remembered: nights
    (and lab runs) with the same number of visits solve once."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyError(f"target epsilon must be finite and > 0, got {epsilon!r}")

    def eps(z: float) -> float:
        return dpsgd_epsilon(sampling_rate, z, steps, delta, kind)

    lo, hi = 0.0, 1.0
    eps_hi = eps(hi)
    while eps_hi > epsilon:
        lo, hi = hi, hi * 2
        if hi > Z_MAX:
            raise PrivacyError(f"no noise multiplier up to {Z_MAX:g} reaches epsilon {epsilon}")
        eps_hi = eps(hi)
    for _ in range(60):  # invariant: eps(lo) > epsilon >= eps(hi)
        if eps_hi >= epsilon * (1 - SOLVE_RTOL):
            break
        mid = (lo + hi) / 2
        eps_mid = eps(mid)
        if eps_mid > epsilon:
            lo = mid
        else:
            hi, eps_hi = mid, eps_mid
    return hi


def plan_night(
    options: PrivacyOptions,
    visits: int,
    batch_size: int,
    epochs: int,
    *,
    epsilon: float | None = None,
) -> NightPlan:
    """Tonight's sampling rate, steps and z for ``visits`` examples: q = batch / visits (at most
    1), steps = ceil(epochs * visits / batch), z solved so the night spends ``epsilon`` (default
    ``epsilon_per_night``). Refuses a delta not below 1/visits."""
    options.check_delta(visits)
    if batch_size < 1 or epochs < 1:
        raise PrivacyError(f"batch_size and epochs must be >= 1, got {batch_size}, {epochs}")
    target = options.epsilon_per_night if epsilon is None else epsilon
    q = min(1.0, batch_size / visits)
    steps = max(1, math.ceil(epochs * visits / batch_size))
    z = solve_noise_multiplier(target, q, steps, options.delta, options.accountant)
    spent = dpsgd_epsilon(q, z, steps, options.delta, options.accountant)
    return NightPlan(visits, q * visits, q, steps, z, spent, options.delta, options.clip)


@dataclass(frozen=True)
class BudgetStatus:
    """What the node, its kiosk page and /metrics say about the window (all at ``delta``)."""

    night: int
    spent: float  # composed epsilon of the nights in the window ending tonight
    left: float  # epsilon_window - spent (never below 0)
    epsilon_window: float
    window_nights: int
    nights_counted: int
    delta: float


class PrivacyBudget:
    """A node's ledger of DP nights and the rule "may it adapt / submit tonight".

    A night counts while it is inside the window: nights ``tonight - window_nights + 1`` to
    ``tonight``. Immutable: :meth:`record` returns a new budget.
    """

    def __init__(self, options: PrivacyOptions, spends: Iterable[NightSpend] = ()) -> None:
        self.options = options
        self.spends: tuple[NightSpend, ...] = tuple(sorted(spends, key=lambda s: s.night))

    def in_window(self, night: int) -> tuple[NightSpend, ...]:
        first = night - self.options.window_nights + 1
        return tuple(s for s in self.spends if first <= s.night <= night)

    def spent(self, night: int) -> float:
        o = self.options
        return composed_epsilon(self.in_window(night), o.delta, o.accountant)

    def left(self, night: int) -> float:
        return max(0.0, self.options.epsilon_window - self.spent(night))

    def status(self, night: int) -> BudgetStatus:
        o = self.options
        spent = self.spent(night)
        return BudgetStatus(
            night,
            spent,
            max(0.0, o.epsilon_window - spent),
            o.epsilon_window,
            o.window_nights,
            len(self.in_window(night)),
            o.delta,
        )

    def may_adapt(self, night: int, plan: NightPlan) -> bool:
        """Whether tonight's fine-tune with ``plan`` keeps the window within ``epsilon_window``."""
        o = self.options
        if plan.epsilon > o.epsilon_per_night * (1 + 1e-9):
            return False
        tonight = [*self.in_window(night), plan.spend(night)]
        return composed_epsilon(tonight, o.delta, o.accountant) <= o.epsilon_window * (1 + 1e-9)

    def record(self, night: int, plan: NightPlan) -> PrivacyBudget:
        """The budget with tonight's fine-tune counted; refused when it would overspend."""
        if not self.may_adapt(night, plan):
            raise PrivacyError(
                f"night {night}: epsilon {plan.epsilon:.3g} does not fit the window "
                f"(spent {self.spent(night):.3g} of {self.options.epsilon_window:g})"
            )
        return PrivacyBudget(self.options, [*self.spends, plan.spend(night)])

    def may_submit(self, night: int) -> bool:
        """Whether the node may send a head tonight: only one its budget accounted for tonight.

        The head of an accounted fine-tune is post-processing of it and costs nothing more to
        send; a node whose window was spent did not adapt tonight, so it has nothing to send.
        """
        return any(s.night == night for s in self.spends)

    def as_records(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.spends]

    @classmethod
    def from_records(
        cls, options: PrivacyOptions, records: Sequence[Mapping[str, Any]]
    ) -> PrivacyBudget:
        """A budget from stored records (hostile until checked: a bad one raises PrivacyError)."""
        fields = {"night", "sampling_rate", "noise_multiplier", "steps", "epsilon"}
        spends = []
        for i, r in enumerate(records):
            if not isinstance(r, Mapping) or set(r) != fields:
                raise PrivacyError(f"privacy ledger record {i}: expected the keys {sorted(fields)}")
            try:
                spend = NightSpend(
                    r["night"],
                    float(r["sampling_rate"]),
                    float(r["noise_multiplier"]),
                    r["steps"],
                    float(r["epsilon"]),
                )
            except (TypeError, ValueError) as exc:
                raise PrivacyError(f"privacy ledger record {i}: {exc}") from None
            spends.append(spend)
        return cls(options, spends)
