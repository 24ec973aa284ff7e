"""What one secure round is run with (carried to nodes inside the signed round message), the
threshold rule, and the error every refusal raises.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vfer.envelope import MessageError

#: Largest vector a round may carry (2^27 values: 512 MB of uint32); v is 208,582.
MAX_VECTOR = 1 << 27
#: Largest group size anywhere (a group's shares are n^2 messages).
MAX_GROUP = 1000
#: Largest per-node weight with ``weighting: samples`` (sum of n_max of them stays < 2^31).
MAX_WEIGHT = 1_000_000


class SecAggError(MessageError):
    """A refused secure-aggregation message or step; ``reason`` is a stable short code that the
    caller logs with the node id and counts (docs/secure-aggregation.md lists them)."""


class GroupAbandoned(SecAggError):
    """The group fell below its threshold (or its secrets could not be rebuilt): it is left
    out of the round and nothing of its sum is revealed."""


class SecAggSettings(BaseModel):
    """What an operator chooses for secure rounds: aggregator.yaml's ``secure_aggregation``
    adds its deadlines and keys to these, a round's :class:`SecAggParams` the vector length."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min_group_size: int = Field(
        8, ge=5, le=MAX_GROUP // 2, description="smallest group drawn (groups are 1-2x this)"
    )
    threshold_fraction: float = Field(
        0.5,
        ge=0.5,
        lt=1.0,
        description="threshold t = floor(fraction x n) + 1 of a group of n: more than half",
    )
    clip_norm: float = Field(
        100.0, gt=0, le=1e6, description="L2 bound of a node's update (its move from the base)"
    )
    clip_value: float = Field(
        10.0, gt=0, le=1e6, description="bound of every coordinate of the update after clipping"
    )
    weighting: Literal["mean", "samples"] = Field(
        "mean", description="mean: every node weighs 1; samples: its clip count, capped"
    )
    max_weight: int = Field(
        1000, ge=1, le=MAX_WEIGHT, description="cap on a node's clip count under samples"
    )

    @model_validator(mode="after")
    def _headroom(self) -> SecAggSettings:
        if self.max_group_size * self.max_weight >= 2**31:
            raise ValueError("max_weight x largest group must stay below 2^31")
        return self

    @property
    def max_group_size(self) -> int:
        """Largest group :func:`vfer.secagg.groups.draw_groups` makes: 2 x min - 1."""
        return 2 * self.min_group_size - 1

    @property
    def coordinate_bound(self) -> float:
        """What every coordinate is clipped to: min(clip_value, clip_norm)."""
        return min(self.clip_value, self.clip_norm)

    def threshold(self, group_size: int) -> int:
        """Answers a group of ``group_size`` needs at every stage (more than half)."""
        return min(group_size, int(self.threshold_fraction * group_size) + 1)

    def settings(self) -> dict[str, object]:
        """These fields alone (a subclass's own left out)."""
        return self.model_dump(include=set(SecAggSettings.model_fields))


class SecAggParams(SecAggSettings):
    """The round's secure-aggregation settings, carried to nodes in the signed round message."""

    vector_length: int = Field(
        ge=1, le=MAX_VECTOR, description="values in the flat update (v for K=6: 208,582)"
    )

    @property
    def masked_length(self) -> int:
        """uint32 values in a masked upload: the vector and one weight coordinate."""
        return self.vector_length + 1
