"""The federation's messages: what travels between nodes and the aggregator, and inside it.

Each is a typed, bounded pydantic model in the envelope of :mod:`vfer.envelope` (frames for
weights, JSON for the rest; schema version, checksum, Ed25519 signature). Frames: the update,
the central v and a worker's partial sums. JSON: round, ack, status and the aggregator-internal
progress and close. Everything the aggregator publishes that changes what a node runs or keeps,
or what the next central is made of, is signed with the fleet key: the central v, the round,
the acks, and progress, close and partial. docs/mqtt.md has an example of each.

Import messages and their codec from here; :mod:`vfer.envelope` is where they are defined and
what a new kind of message builds on.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vfer import personalization_defaults as defaults
from vfer.envelope import (
    MAGIC,
    MAX_CLIPS,
    MAX_ID,
    MAX_TEXT,
    Framed,
    Id,
    Message,
    MessageError,
    NodeMessage,
    PosId,
    Signed,
    Text,
    canonical_unsigned,
    from_json,
    pack,
    pack_signed,
    sign_message,
    to_json,
    unpack,
    verify_message,
)
from vfer.secagg.wire import SecAggRound

__all__ = [
    "MAGIC",
    "MAX_CLIPS",
    "MAX_ID",
    "AckMsg",
    "CentralHeader",
    "CentralPrivacy",
    "CloseMsg",
    "MessageError",
    "PartialHeader",
    "Personalization",
    "ProgressMsg",
    "RoundMsg",
    "StatusMsg",
    "UpdateHeader",
    "from_json",
    "open_central",
    "open_round",
    "pack",
    "pack_signed",
    "sign_central",
    "sign_message",
    "sign_round",
    "to_json",
    "unpack",
    "verify_message",
]

WeightDtype = Literal["float32", "float16"]


class Personalization(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    p: int = Field(defaults.P, ge=0, le=10_000, description="at most P clips per class")
    p_threshold: float = Field(
        defaults.P_THRESHOLD, ge=0, le=1, description="pseudo-label confidence threshold"
    )
    epochs: int = Field(defaults.EPOCHS, ge=1, le=100, description="fine-tuning epochs")
    lr: float = Field(defaults.LR, gt=0, le=1, description="Adam learning rate")


class RoundMsg(Message):
    """``<prefix>/round`` (retained): the open round."""

    kind: Literal["round"] = "round"
    round_id: int = Field(ge=1, le=MAX_ID)
    base_version: int = Field(ge=1, le=MAX_ID, description="central version nodes must start from")
    state: Literal["open", "closing", "finished"] = "open"
    opened_at: float
    deadline: float = Field(description="unix time the round closes if it has the minimum")
    min_submissions: int = Field(ge=1, le=MAX_ID)
    max_submissions: int = Field(ge=1, le=MAX_ID)
    classes: list[Text] = Field(max_length=256)
    weight_dtype: WeightDtype = Field("float32", description="dtype nodes should send")
    personalization: Personalization
    secure_aggregation: SecAggRound | None = Field(
        None,
        description="present when the round is secure: nodes run SecAgg+ "
        "(docs/secure-aggregation.md) instead of sending their update in the clear",
    )
    signature: str = Field(
        "", max_length=128, description="base64 Ed25519 signature of the message without it"
    )

    def to_json_dict(self) -> dict[str, Any]:
        # a plain round is byte for byte what it was before the field existed
        skip = set() if self.secure_aggregation is not None else {"secure_aggregation"}
        return self.model_dump(mode="json", by_alias=True, exclude=skip)

    def signing_bytes(self) -> bytes:
        data = self.to_json_dict()
        data.pop("signature", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class UpdateHeader(Framed, NodeMessage):
    """``<prefix>/nodes/<id>/update``: a node's personalized v after a round."""

    kind: Literal["update"] = "update"
    round_id: int = Field(ge=1, le=MAX_ID)
    base_version: int = Field(ge=1, le=MAX_ID)
    update_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    seq: int = Field(
        ge=1, le=MAX_ID, description="per-node increasing number; a higher one replaces"
    )
    created_at: float
    clips_per_class: dict[Text, int] = Field(description="clips used per class", max_length=256)
    metrics: dict[Text, float] = Field(default_factory=dict, max_length=64)
    dtype: WeightDtype = "float32"

    @field_validator("clips_per_class")
    @classmethod
    def _clips(cls, v: dict[str, int]) -> dict[str, int]:
        if any(n < 0 or n > MAX_CLIPS for n in v.values()):
            raise ValueError(f"clip counts must be in [0, {MAX_CLIPS}]")
        return v

    @property
    def num_clips(self) -> int:
        return sum(self.clips_per_class.values())


class CentralPrivacy(BaseModel):
    """What central DP (``central_privacy`` on the aggregator) spent on this central: signed with
    it, so a node and an operator read the fleet's epsilon from the fleet key (docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    epsilon_round: float = Field(ge=0, le=1e6, description="epsilon of this round alone")
    epsilon_total: float = Field(ge=0, le=1e6, description="epsilon of every DP round so far")
    delta: float = Field(gt=0, lt=1)
    noise_multiplier: float = Field(gt=0, le=1e6, description="z: noise std / clip on the sum")
    clip: float = Field(gt=0, le=1e6, description="L2 bound of each node's update")
    expected_nodes: int = Field(ge=1, le=MAX_ID, description="the mean's fixed denominator")
    rounds: int = Field(ge=1, le=MAX_ID, description="rounds made with central DP so far")
    mu_total: float = Field(ge=0, le=1e6, description="their composition, mu-Gaussian DP")
    clipped: int = Field(0, ge=0, le=MAX_ID, description="updates of this round scaled down")


class CentralHeader(Framed):
    """``<prefix>/central/bundle`` (retained): the signed central v."""

    kind: Literal["central"] = "central"
    version: int = Field(ge=1, le=MAX_ID)
    round_id: int = Field(ge=0, le=MAX_ID, description="round it came from (0: the initial model)")
    classes: list[Text] = Field(max_length=256)
    created_at: float
    num_submissions: int = Field(0, ge=0, le=MAX_ID)
    weighting: str = Field("mean", max_length=MAX_TEXT)
    privacy: CentralPrivacy | None = Field(None, description="central DP's epsilon, when on")
    signature: str = Field(
        "", max_length=256, description="base64 Ed25519 signature of the header without it"
    )

    def signing_bytes(self) -> bytes:
        if self.privacy is not None:
            return canonical_unsigned(self)
        # a central without DP signs exactly what it signed before the field existed
        data = self.model_dump(mode="json", by_alias=True, exclude={"signature", "privacy"})
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class AckMsg(NodeMessage, Signed):
    """``<prefix>/nodes/<id>/ack``: the update was stored (or will never be); signed, as a
    node drops an update from its outbox on it."""

    kind: Literal["ack"] = "ack"
    round_id: Id
    update_id: str = Field(max_length=64)
    status: Literal["stored", "rejected"]
    reason: str | None = Field(None, max_length=MAX_TEXT)


class NodePrivacy(BaseModel):
    """A node's visit-level DP window (``adaptation.privacy``), as its accountant composed it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    epsilon_spent: float = Field(ge=0, le=1e6)
    epsilon_left: float = Field(ge=0, le=1e6)
    epsilon_window: float = Field(gt=0, le=1e6)
    window_nights: int = Field(ge=1, le=10_000)
    delta: float = Field(gt=0, lt=1)


class StatusMsg(NodeMessage):
    """``<prefix>/nodes/<id>/status`` (retained; the last will says offline)."""

    kind: Literal["status"] = "status"
    state: Literal["online", "offline"]
    central_version: Id | None = None
    round_id: Id | None = None
    ts: float | None = None
    privacy: NodePrivacy | None = None  # None: the node personalizes without DP


class ProgressMsg(NodeMessage, Signed):
    """``<prefix>/aggregator/progress``: a worker stored a node's update (worker to leader).

    The leader answers the node (the ``stored`` ack) only once it has counted the update in
    the round, so a node is never told ``stored`` for an update the round will leave out.
    """

    kind: Literal["progress"] = "progress"
    worker_id: str = Field(max_length=MAX_TEXT)
    round_id: PosId
    seq: PosId
    update_id: str = Field(max_length=64)
    reason: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="set when the worker did not store it (a round check failed): the leader "
        "answers 'stored' if this update already counts, else 'rejected' with this reason",
    )
    factor: float | None = Field(
        None, ge=0, le=1e12, description="the update's FedAvg factor (1, or its clip count)"
    )


class CloseMsg(Signed):
    """``<prefix>/aggregator/close``: the leader asks workers for partial sums of these updates."""

    kind: Literal["close"] = "close"
    round_id: PosId
    assignments: dict[Text, dict[Text, PosId]] = Field(
        description="worker id -> {node id: seq}: exactly the updates that count"
    )
    factors: dict[Text, Annotated[float, Field(gt=0, le=1e12)]] = Field(
        default_factory=dict,
        description="node id -> factor to sum with instead of the stored one (capped weights)",
    )


class PartialHeader(Framed, Signed):
    """``<prefix>/aggregator/partial``: a worker's float64 sums over its assigned nodes."""

    kind: Literal["partial"] = "partial"
    worker_id: str = Field(max_length=MAX_TEXT)
    round_id: PosId
    nodes: dict[Text, PosId] = Field(description="node id -> seq actually summed")
    total_weight: float = Field(ge=0)


def sign_central(header: CentralHeader, body: bytes, key: Ed25519PrivateKey | None) -> bytes:
    """Pack a central frame; with ``key`` None it goes out unsigned (dev mode only)."""
    return pack_signed(header, body, key)


def open_central(
    payload: bytes, key: Ed25519PublicKey | None, *, allow_unsigned: bool = False
) -> tuple[CentralHeader, bytes]:
    """Unpack and verify a central frame against the fleet public key."""
    header, body = unpack(payload, CentralHeader)
    verify_message(header, key, f"central v{header.version}", allow_unsigned=allow_unsigned)
    return header, body


def sign_round(msg: RoundMsg, key: Ed25519PrivateKey | None) -> RoundMsg:
    """The round signed with the fleet key, as the central is; ``key`` None: unsigned (dev)."""
    return sign_message(msg, key)


def open_round(
    payload: bytes, key: Ed25519PublicKey | None, *, allow_unsigned: bool = False
) -> RoundMsg:
    """Decode a round message and verify its signature against the fleet public key.

    Reasons: those of :func:`from_json`, ``unsigned``, ``no_key``, ``bad_signature``."""
    msg = from_json(payload, RoundMsg)
    return verify_message(msg, key, f"round {msg.round_id}", allow_unsigned=allow_unsigned)
