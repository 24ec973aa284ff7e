"""Whether a node's secure-aggregation answer is one its group already accepted.

After the leader republishes a stage message (a restart, a reconnect), nodes answer it again,
and answers of a stage that closed meanwhile arrive late. They are no refusal: the group
already has them. Anything else goes to :meth:`vfer.secagg.GroupAggregator.receive`.
"""

from __future__ import annotations

import json

from vfer.envelope import MAGIC, MAX_HEADER_BYTES, Message, MessageError, from_json, unpack
from vfer.secagg import GroupAggregator
from vfer.secagg.wire import AdvertiseKeys, ConsistencySig, MaskedInputHeader, ShareKeys

#: kind -> (the model, the state's store of accepted ones) of a stage's JSON answer.
_ACCEPTED: dict[str, tuple[type[Message], str]] = {
    "secagg_keys": (AdvertiseKeys, "keys"),
    "secagg_shares": (ShareKeys, "shares"),
    "secagg_consistency": (ConsistencySig, "signatures"),
}


def redelivered(agg: GroupAggregator, node: str, payload: bytes) -> bool:
    """True for an answer the group already accepted, sent again after its stage closed (a node
    answers a republished stage message again): no refusal, nothing to do."""
    s = agg.state
    try:
        if payload.startswith(MAGIC):
            header, _body = unpack(payload, MaskedInputHeader)
            return s.stage != "masked" and s.uploaded.get(node) == header.body_sha256
        kind = json.loads(payload[:MAX_HEADER_BYTES]).get("kind")
        if kind not in _ACCEPTED:
            return False
        model, store = _ACCEPTED[kind]
        accepted = getattr(s, store).get(node)
        return accepted is not None and accepted == from_json(payload, model)
    except (MessageError, ValueError, AttributeError, RecursionError):
        return False
