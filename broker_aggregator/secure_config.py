"""The ``secure_aggregation:`` section of aggregator.yaml (off when absent).

Its protocol fields are :class:`vfer.secagg.SecAggParams` without the vector length (the head's,
filled in by :meth:`SecureAggregationConfig.params`); the rest are the stage deadlines and the
key that vouches for node identities. docs/secure-aggregation.md is the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vfer.secagg import SecAggParams
from vfer.secagg.params import MAX_GROUP, MAX_WEIGHT


class SecureAggregationConfig(BaseModel):
    """SecAgg+ over MQTT: the aggregator learns each group's sum, never one node's update."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    vouching_public_key: Path = Field(
        description="Ed25519 public key (PEM) that vouches for node identity keys "
        "(provisioning's FLEET/vouching_public_key.pem)"
    )
    revocations_file: Path | None = Field(
        None,
        description="signed list of revoked identity keys (provisioning's "
        "FLEET/aggregator/revocations.json, written by revoke-node); read at every round's open",
    )
    min_group_size: int = Field(
        8, ge=5, le=MAX_GROUP // 2, description="smallest group drawn (groups are 1-2x this)"
    )
    threshold_fraction: float = Field(
        0.5,
        ge=0.5,
        lt=1.0,
        description="a group of n needs floor(fraction x n) + 1 answers at every stage",
    )
    clip_norm: float = Field(
        100.0, gt=0, le=1e6, description="nodes clip their update (move from the base) to this L2"
    )
    clip_value: float = Field(10.0, gt=0, le=1e6, description="and every coordinate of it to this")
    weighting: Literal["mean", "samples"] = Field(
        "mean", description="inside a group: every node weighs 1, or its clip count (capped)"
    )
    max_weight: int = Field(
        1000, ge=1, le=MAX_WEIGHT, description="cap on a node's clip count under samples"
    )
    stage_s: float = Field(
        120.0,
        gt=0,
        le=86400,
        description="seconds a stage waits for a group's silent members before it closes "
        "without them (below the threshold the group is dropped)",
    )

    def params(self, vector_length: int) -> SecAggParams:
        """The round's protocol parameters for a flat update of ``vector_length`` values."""
        return SecAggParams(
            min_group_size=self.min_group_size,
            threshold_fraction=self.threshold_fraction,
            clip_norm=self.clip_norm,
            clip_value=self.clip_value,
            weighting=self.weighting,
            max_weight=self.max_weight,
            vector_length=vector_length,
        )
