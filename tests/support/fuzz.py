"""Hypothesis strategies for hostile update messages: every envelope field, and the body's
names, shapes, dtypes and values (issue 14's fuzzer, ``tests/test_aggregator_fuzz.py``).

A drawn :class:`FuzzMessage` is a topic node id and the raw payload bytes. Most draws stay
close to a valid update (so the deep checks are reached), with one or more fields or parts
replaced by hostile values.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from vfer import weights as wcodec
from vfer.heads_spec import vfer_spec
from vfer.messages import MAGIC

HOSTILE_INTS = [0, -1, 1, 2, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63), 10**308]
HOSTILE_FLOATS = [0.0, -0.0, 1e308, -1e308, 5e-324, float("nan"), float("inf"), float("-inf")]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HOSTILE_INTS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HOSTILE_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=12,
)
node_ids = st.one_of(
    st.sampled_from(["fz-1", "fz-2", "pi-0", "x" * 64]),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    # no MQTT wildcards or level separators, no control characters (mosquitto drops the link)
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="+#/"),
        min_size=1,
        max_size=80,
    ),
)
FIELDS = [
    "schema",
    "kind",
    "node_id",
    "round_id",
    "base_version",
    "update_id",
    "seq",
    "created_at",
    "clips_per_class",
    "metrics",
    "dtype",
    "body_size",
    "body_sha256",
]


@dataclass(frozen=True)
class FuzzMessage:
    topic_node: str
    payload: bytes
    note: str


def valid_weights(seed: int, num_classes: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        n: (rng.normal(0, 0.05, s.shape)).astype(np.float32)
        for n, s in vfer_spec(num_classes).items()
        if s.trainable
    }


@st.composite
def bodies(draw: Any, base: dict[str, np.ndarray]) -> tuple[bytes, str]:
    """A safetensors body: valid, or with names, shapes, dtypes or values made hostile."""
    w = {n: a.copy() for n, a in base.items()}
    names = sorted(w)
    what = draw(
        st.sampled_from(
            ["valid", "value", "drop", "extra", "shape", "dtype", "garbage", "truncate", "header"]
        )
    )
    if what == "value":
        name = draw(st.sampled_from(names))
        flat = w[name].reshape(-1)
        i = draw(st.integers(0, flat.size - 1))
        with np.errstate(over="ignore"):  # 1e308 becomes float32 Inf, on purpose
            flat[i] = draw(st.sampled_from([*HOSTILE_FLOATS, 3.4e38, 999.0, 1001.0]))
    elif what == "drop":
        w.pop(draw(st.sampled_from(names)))
    elif what == "extra":
        w[draw(st.text(min_size=1, max_size=30))] = np.zeros(draw(st.integers(0, 10)), np.float32)
    elif what == "shape":
        name = draw(st.sampled_from(names))
        w[name] = w[name].reshape(-1)[: max(0, w[name].size - draw(st.integers(0, 3)))]
    elif what == "dtype":
        name = draw(st.sampled_from(names))
        w[name] = w[name].astype(draw(st.sampled_from(["float16", "float64", "int32", "uint8"])))
    if what == "garbage":
        return draw(st.binary(max_size=2000)), what
    body = wcodec.to_bytes(w) if w else wcodec.to_bytes({"x": np.zeros(1, np.float32)})
    if what == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif what == "header":
        n = int.from_bytes(body[:8], "little")
        head = json.loads(body[8 : 8 + n])
        name = draw(st.sampled_from(sorted(k for k in head if k != "__metadata__")))
        head[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(json_values)
        raw = json.dumps(head).encode()
        body = len(raw).to_bytes(8, "little") + raw + body[8 + n :]
    return body, what


@st.composite
def update_messages(draw: Any, base: dict[str, np.ndarray]) -> FuzzMessage:
    """One hostile (or valid) update message for round 1 from central v1."""
    node = draw(st.sampled_from(["fz-1", "fz-2", "fz-3"]))
    header: dict[str, Any] = {
        "schema": 1,
        "kind": "update",
        "node_id": node,
        "round_id": draw(st.sampled_from([1] * 8 + [2, 7])),
        "base_version": draw(st.sampled_from([1] * 8 + [2])),
        "update_id": draw(st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")),
        "seq": draw(st.integers(1, 2**53 - 1)),
        "created_at": 1.0,
        "clips_per_class": {"anger": draw(st.integers(0, 20))},
        "metrics": {},
        "dtype": "float32",
    }
    body, note = draw(bodies(base))
    changed = draw(
        st.one_of(
            st.just([]), st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)
        )
    )
    for field in changed:
        if draw(st.booleans()):
            header.pop(field, None)
        else:
            header[field] = draw(json_values)
    if "body_sha256" not in changed:
        header["body_sha256"] = hashlib.sha256(body).hexdigest()
    if "body_size" not in changed:
        header["body_size"] = len(body)
    extra = draw(
        st.one_of(st.just({}), st.dictionaries(st.text(max_size=10), json_values, max_size=2))
    )
    header.update({k: v for k, v in extra.items() if k not in header})
    head = json.dumps(header).encode()
    frame_kind = draw(st.sampled_from(["frame"] * 8 + ["magic", "length", "empty"]))
    if frame_kind == "magic":
        payload = b"FVF2" + struct.pack(">I", len(head)) + head + body
    elif frame_kind == "length":
        payload = MAGIC + struct.pack(">I", draw(st.integers(0, 2**32 - 1))) + head + body
    elif frame_kind == "empty":
        payload = draw(st.binary(max_size=16))
    else:
        payload = MAGIC + struct.pack(">I", len(head)) + head + body
    topic_node = node if draw(st.integers(0, 9)) else draw(node_ids)
    return FuzzMessage(topic_node, payload, f"{note}/{frame_kind}/{','.join(changed)}")


CONTROL_TEMPLATES: dict[str, dict[str, Any]] = {
    "fedvfer/round": {
        "schema": 1,
        "kind": "round",
        "round_id": 1,
        "base_version": 1,
        "state": "open",
        "opened_at": 0.0,
        "deadline": 1e12,
        "min_submissions": 1,
        "max_submissions": 9,
        "classes": ["anger", "disgust", "fear", "happiness", "neutral", "sadness"],
        "weight_dtype": "float32",
        "personalization": {"p": 15, "p_threshold": 0.5, "epochs": 2, "lr": 0.001},
    },
    "fedvfer/aggregator/progress": {
        "schema": 1,
        "kind": "progress",
        "node_id": "fz-9",
        "worker_id": "agg-9",
        "round_id": 99,
        "seq": 1,
        "update_id": "fuzzfuzzfuzz",
    },
    "fedvfer/aggregator/close": {
        "schema": 1,
        "kind": "close",
        "round_id": 1,
        "assignments": {"agg-9": {"fz-9": 1}},
    },
}
FRAME_TOPICS = {
    "fedvfer/central/bundle": {
        "schema": 1,
        "kind": "central",
        "version": 9,
        "round_id": 1,
        "classes": ["anger", "disgust", "fear", "happiness", "neutral", "sadness"],
        "created_at": 0.0,
    },
    "fedvfer/aggregator/partial": {
        "schema": 1,
        "kind": "partial",
        "worker_id": "agg-9",
        "round_id": 1,
        "nodes": {"fz-9": 1},
        "total_weight": 1.0,
    },
}


@st.composite
def control_messages(draw: Any, base: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """(topic, payload) for the topics the aggregator reads besides updates: JSON messages and
    frames built from a valid template with fields removed or replaced, or raw bytes."""
    topic = draw(st.sampled_from(sorted({**CONTROL_TEMPLATES, **FRAME_TOPICS})))
    template = {**CONTROL_TEMPLATES, **FRAME_TOPICS}[topic]
    msg = dict(template)
    for field in draw(st.lists(st.sampled_from(sorted(template)), max_size=3, unique=True)):
        if draw(st.booleans()):
            msg.pop(field)
        else:
            msg[field] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        return topic, draw(st.binary(max_size=200))
    head = json.dumps(msg).encode()
    if topic not in FRAME_TOPICS:
        return topic, head
    body, _ = draw(bodies(base))
    if topic.endswith("partial") and draw(st.booleans()):  # float64 sums, as workers send
        body = wcodec.to_bytes({n: a.astype(np.float64) for n, a in base.items()})
    framed = {**msg, "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    head = json.dumps(framed).encode()
    return topic, MAGIC + struct.pack(">I", len(head)) + head + body
