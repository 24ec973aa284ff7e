"""The aggregator's state of one group: a plain, versioned value it stores and resumes from.

:class:`GroupState` is pydantic (JSON): the members, the stage, every message accepted so far
(they are public to the aggregator anyway: signed keys, sealed shares, signatures, revealed
shares) and the refusal counts. The running sum of the masked inputs travels beside it as raw
little-endian uint32 bytes. :func:`dump` and :func:`load` make one bytes value of both:

    b"FVSA" | 4-byte big-endian JSON length | JSON of GroupState | sum (4 x length bytes)

A node's masked input is never kept on its own: only the sum and a digest per uploader. The
node's secrets never reach this state (docs/secure-aggregation.md, "What the aggregator holds").
"""

from __future__ import annotations

import json
import struct
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vfer.secagg.identity import Hex64, NodeId
from vfer.secagg.params import SecAggError, SecAggParams
from vfer.secagg.wire import AdvertiseKeys, ConsistencySig, ShareKeys, UnmaskShares

STATE_VERSION = 1
MAGIC = b"FVSA"
_LEN = struct.Struct(">I")
MAX_STATE_JSON = 64 << 20

Stage = Literal["keys", "shares", "masked", "consistency", "unmask", "done", "abandoned"]
STAGES: tuple[str, ...] = ("keys", "shares", "masked", "consistency", "unmask", "done")


class GroupState(BaseModel):
    """Everything the aggregator knows of one group (module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1] = 1
    round_id: int = Field(ge=1)
    group_id: int = Field(ge=0)
    members: list[NodeId]
    params: SecAggParams
    stage: Stage = "keys"
    keys: dict[NodeId, AdvertiseKeys] = Field(default_factory=dict)
    u1: list[NodeId] = Field(default_factory=list, description="advertised keys (closed)")
    shares: dict[NodeId, ShareKeys] = Field(default_factory=dict)
    u2: list[NodeId] = Field(default_factory=list, description="shared keys (closed)")
    uploaded: dict[NodeId, Hex64] = Field(
        default_factory=dict, description="node -> sha256 of its masked body"
    )
    u3: list[NodeId] = Field(default_factory=list, description="uploaded (closed): counted")
    signatures: dict[NodeId, ConsistencySig] = Field(default_factory=dict)
    u4: list[NodeId] = Field(default_factory=list, description="signed the survivors (closed)")
    revealed: dict[NodeId, UnmaskShares] = Field(
        default_factory=dict, description="verified shares revealed per holder"
    )
    refusals: dict[str, int] = Field(default_factory=dict)
    abandoned: str | None = Field(None, description="why the group was left out")
    problem: str | None = Field(None, description="why a finished group's sum is unusable")


def dump(state: GroupState, total: np.ndarray | None) -> bytes:
    """The state and the running sum (or the unmasked sum once done) as one bytes value."""
    head = state.model_dump_json(by_alias=True).encode()
    body = b"" if total is None else total.astype("<u4", copy=False).tobytes()
    return MAGIC + _LEN.pack(len(head)) + head + body


def load(raw: bytes) -> tuple[GroupState, np.ndarray | None]:
    """:func:`dump` undone; ``bad_state`` for anything else (a newer version included)."""
    if len(raw) < len(MAGIC) + _LEN.size or not raw.startswith(MAGIC):
        raise SecAggError("bad_state", "not a secure-aggregation group state")
    (n,) = _LEN.unpack_from(raw, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if n > MAX_STATE_JSON or start + n > len(raw):
        raise SecAggError("bad_state", "state header does not fit")
    try:
        data = json.loads(raw[start : start + n])
    except ValueError as exc:
        raise SecAggError("bad_state", f"state is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        got = data.get("version") if isinstance(data, dict) else None
        raise SecAggError("bad_state", f"state version {got!r}, this code reads {STATE_VERSION}")
    try:
        state = GroupState.model_validate(data)
    except ValidationError as exc:
        raise SecAggError("bad_state", str(exc.errors()[0])[:300]) from None
    body = raw[start + n :]
    if not body:
        return state, None
    if len(body) != 4 * state.params.masked_length:
        raise SecAggError("bad_state", f"sum of {len(body)} bytes")
    return state, np.frombuffer(body, dtype="<u4").astype(np.uint32)
