""" "Accept this update?" as pure functions: bytes and expectations in, a checked update or a reason out.

No MQTT, SQLite or clock here. Every refusal is a :class:`vfer.messages.MessageError` whose
``reason`` code the aggregator logs with the node id and counts (docs/mqtt.md lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vfer import weights as wcodec
from vfer.heads_spec import WeightSpec
from vfer.messages import MessageError, UpdateHeader, unpack


@dataclass(frozen=True)
class Expectations:
    """What an update must match: a snapshot the loop swaps whole when the round changes."""

    spec: Mapping[str, WeightSpec]
    classes: tuple[str, ...]
    max_payload_bytes: int
    max_abs_weight: float
    max_update_norm: float
    dtypes: tuple[str, ...] = ("float32",)
    round_id: int | None = None
    round_open: bool = False
    base_version: int | None = None
    base_weights: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckedUpdate:
    header: UpdateHeader
    body: bytes


def inspect_update(payload: bytes, topic_node: str | None, exp: Expectations) -> CheckedUpdate:
    """Decode and check one update payload received on ``<prefix>/nodes/<topic_node>/update``."""
    if topic_node is None:
        raise MessageError("bad_topic", "topic has no valid node id")
    if len(payload) > exp.max_payload_bytes:
        raise MessageError("oversized", f"{len(payload)} bytes > {exp.max_payload_bytes}")
    header, body = unpack(payload, UpdateHeader)
    if header.node_id != topic_node:
        raise MessageError(
            "forged_node_id", f"envelope says {header.node_id!r}, topic says {topic_node!r}"
        )
    try:
        return _check_content(header, body, exp)
    except MessageError as exc:
        exc.header = header
        raise


def _check_content(header: UpdateHeader, body: bytes, exp: Expectations) -> CheckedUpdate:
    check_round(header, exp)
    unknown = sorted(set(header.clips_per_class) - set(exp.classes))
    if unknown:
        raise MessageError("unknown_class", f"clips for classes {unknown[:5]} not in this fleet")
    if not all(np.isfinite(v) for v in header.metrics.values()):
        raise MessageError("bad_metrics", "metrics contain NaN or Inf")
    weights = decode_weights(body, exp)
    if header.dtype not in exp.dtypes:
        raise MessageError("wrong_dtype", f"header dtype {header.dtype} not in {list(exp.dtypes)}")
    if any(a.dtype.name != header.dtype for a in weights.values()):
        raise MessageError("wrong_dtype", f"arrays do not match the header dtype {header.dtype}")
    check_values(weights, exp)
    return CheckedUpdate(header, body)


def check_round(header: UpdateHeader, exp: Expectations) -> None:
    if exp.round_id is None or header.round_id > exp.round_id:
        raise MessageError("ahead", f"round {header.round_id} is not known here yet")
    if header.round_id != exp.round_id:
        raise MessageError("wrong_round", f"round {header.round_id}, open round is {exp.round_id}")
    if not exp.round_open:
        raise MessageError("round_closed", f"round {header.round_id} no longer takes updates")
    if header.base_version != exp.base_version:
        raise MessageError(
            "stale_base", f"base v{header.base_version}, the round starts from v{exp.base_version}"
        )


def decode_weights(body: bytes, exp: Expectations) -> dict[str, np.ndarray]:
    """The trainable arrays of the update body, checked for names, shapes and dtypes."""
    try:
        weights = wcodec.from_bytes(body)
    except wcodec.WeightsError as exc:
        raise MessageError("bad_body", str(exc)) from exc
    expected = {n: s for n, s in exp.spec.items() if s.trainable}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing:
        raise MessageError("missing_weights", f"missing {missing[:5]}")
    if extra:
        raise MessageError("unexpected_weights", f"unexpected {extra[:5]}")
    for name, ws in expected.items():
        arr = weights[name]
        if tuple(arr.shape) != ws.shape:
            raise MessageError("wrong_shape", f"{name}: {tuple(arr.shape)}, expected {ws.shape}")
        if arr.dtype.name not in exp.dtypes:
            raise MessageError("wrong_dtype", f"{name}: {arr.dtype.name} not in {list(exp.dtypes)}")
    return weights


def check_values(weights: Mapping[str, np.ndarray], exp: Expectations) -> None:
    """Finite, bounded, and within ``max_update_norm`` (L2) of the base central."""
    sq = 0.0
    for name, arr in weights.items():
        a = arr.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise MessageError("non_finite", f"{name} contains NaN or Inf")
        if a.size and float(np.abs(a).max()) > exp.max_abs_weight:
            raise MessageError("huge_values", f"{name} has |value| > {exp.max_abs_weight}")
        base = exp.base_weights.get(name)
        d = a - base if base is not None else a
        sq += float(np.dot(d.ravel(), d.ravel()))
    norm = float(np.sqrt(sq))
    if norm > exp.max_update_norm:
        raise MessageError(
            "norm_bound", f"distance {norm:.3g} from the base > {exp.max_update_norm}"
        )


def update_factor(header: UpdateHeader, weighting: str) -> float:
    """The FedAvg factor of an update (1, or its clip count when sample-weighted)."""
    if weighting == "samples":
        if header.num_clips <= 0:
            raise MessageError("no_samples", "sample weighting needs clips_per_class > 0")
        return float(header.num_clips)
    return 1.0
