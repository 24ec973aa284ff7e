"""The privacy settings of a node's nightly fine-tune (``adaptation.privacy`` in node.yaml).

One pydantic model with bounds; a value out of range is refused at load time with the key named.
The one check that needs the night's data, ``delta`` against the number of visits, is
:meth:`PrivacyOptions.check_delta`: a delta of 1/n or more would let a mechanism publish one whole
visit in n and still claim the guarantee.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: epsilon above this is no guarantee a person could read as one (e^20 is about 5e8)
EPSILON_MAX = 20.0
#: the window's budget may hold at most this (a year of nights at 1 each is 365)
EPSILON_WINDOW_MAX = 400.0


class PrivacyError(ValueError):
    """Settings or data that cannot give the promised guarantee."""


class PrivacyOptions(BaseModel):
    """Visit-level differential privacy of the nightly fine-tune of v (docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = Field(False, description="fine-tune v with DP-SGD (per-visit clipping + noise)")
    epsilon_per_night: float = Field(
        3.0,
        gt=0,
        le=EPSILON_MAX,
        description="the privacy loss one night's fine-tune may spend on one visit (at delta)",
    )
    delta: float = Field(
        1e-5,
        gt=0,
        le=1e-2,
        description="the chance the epsilon bound fails; must also stay below 1/visits of a night",
    )
    clip: float = Field(
        1.0, gt=0, le=1e3, description="L2 bound on one visit's gradient (DP-SGD's clip norm)"
    )
    window_nights: int = Field(
        30,
        ge=1,
        le=366,
        description="the nights over which epsilon_window is composed; at least "
        "retention.max_age_days, so that every night that can read a visit is counted",
    )
    epsilon_window: float = Field(
        15.0,
        gt=0,
        le=EPSILON_WINDOW_MAX,
        description="the most one visit may lose over window_nights nights together; when the "
        "composed epsilon would pass it the node neither adapts nor submits",
    )
    accountant: Literal["rdp", "pld"] = Field(
        "rdp",
        description="'rdp': Renyi DP (fast, a slightly loose upper bound); 'pld': privacy loss "
        "distributions (tighter, seconds per night on a Pi)",
    )
    clips_per_visit: int = Field(
        8,
        ge=1,
        le=1000,
        description="at most this many of a visit's most confident clips go into its gradient",
    )

    @model_validator(mode="after")
    def _window_holds_a_night(self) -> PrivacyOptions:
        if self.epsilon_window < self.epsilon_per_night:
            raise ValueError(
                f"epsilon_window ({self.epsilon_window}) must be at least epsilon_per_night "
                f"({self.epsilon_per_night}): otherwise no night could ever adapt"
            )
        return self

    def check_delta(self, visits: int) -> None:
        """Refuse a night whose ``delta`` is not below 1/``visits`` (or that has no visits)."""
        if visits < 1:
            raise PrivacyError(f"a DP fine-tune needs at least one visit, got {visits}")
        if self.delta >= 1.0 / visits:
            raise PrivacyError(
                f"adaptation.privacy.delta={self.delta:g} must be below 1/visits = "
                f"1/{visits} = {1.0 / visits:.3g}: lower delta (1e-5 or less is usual)"
            )
