"""The ``secure_aggregation:`` section of aggregator.yaml (off when absent).

Its protocol fields are :class:`vfer.secagg.params.SecAggSettings`, declared once there (a
round's :class:`~vfer.secagg.SecAggParams` adds the head's vector length,
:meth:`SecureAggregationConfig.params`); its own are the stage deadlines and the key that vouches
for node identities. docs/secure-aggregation.md is the protocol.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from vfer.secagg import SecAggParams
from vfer.secagg.params import SecAggSettings


class SecureAggregationConfig(SecAggSettings):
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
    stage_s: float = Field(
        120.0,
        gt=0,
        le=86400,
        description="seconds a stage waits for a group's silent members before it closes "
        "without them (below the threshold the group is dropped)",
    )

    def params(self, vector_length: int) -> SecAggParams:
        """The round's protocol parameters for a flat update of ``vector_length`` values."""
        return SecAggParams(**self.settings(), vector_length=vector_length)
