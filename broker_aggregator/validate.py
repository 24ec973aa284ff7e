""" "Accept this update?" as pure functions: bytes and expectations in, a checked update or a reason out.

No MQTT, SQLite or clock here. Every refusal is a :class:`vfer.messages.MessageError` whose
``reason`` code the aggregator logs with the node id and counts (docs/mqtt.md lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vfer import weights as wcodec
from vfer.fedavg import InvalidCountError, weight_of
from vfer.heads_spec import WeightSpec
from vfer.messages import MAX_CLIPS, MessageError, UpdateHeader, unpack


@dataclass(frozen=True)
class Expectations:
    """What an update must match: a snapshot the loop swaps whole when the round changes."""

    spec: Mapping[str, WeightSpec]
    classes: tuple[str, ...]
    max_payload_bytes: int
    max_abs_weight: float
    max_update_norm: float
    dtypes: tuple[str, ...] = ("float32",)
    max_clips_per_class: int = MAX_CLIPS
    weighting: str = "mean"
    round_id: int | None = None
    round_open: bool = False
    base_version: int | None = None
    base_weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: The round is secure: nodes send masked inputs on their secagg topic, never an update.
    secure: bool = False


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
    update_factor(header, exp.weighting)  # no_samples: refused here, never in the loop
    too_many = {c: n for c, n in header.clips_per_class.items() if n > exp.max_clips_per_class}
    if too_many:
        raise MessageError(
            "clip_count",
            f"clip counts {dict(list(too_many.items())[:3])} > "
            f"max_clips_per_class {exp.max_clips_per_class}",
        )
    weights = decode_weights(body, exp)
    if header.dtype not in exp.dtypes:
        raise MessageError("wrong_dtype", f"header dtype {header.dtype} not in {list(exp.dtypes)}")
    if any(a.dtype.name != header.dtype for a in weights.values()):
        raise MessageError("wrong_dtype", f"arrays do not match the header dtype {header.dtype}")
    check_values(weights, exp)
    return CheckedUpdate(header, body)


#: Reasons that depend only on which round is open: the loop asks the answer table first (an
#: update that already counts is answered ``stored`` again, whatever the round's state).
ROUND_REASONS = frozenset({"ahead", "wrong_round", "round_closed", "stale_base"})


def check_round(header: UpdateHeader, exp: Expectations) -> None:
    if exp.round_id is None or header.round_id > exp.round_id:
        raise MessageError("ahead", f"round {header.round_id} is not known here yet")
    if header.round_id != exp.round_id:
        raise MessageError("wrong_round", f"round {header.round_id}, open round is {exp.round_id}")
    if not exp.round_open:
        raise MessageError("round_closed", f"round {header.round_id} no longer takes updates")
    if exp.secure:
        raise MessageError(
            "secure_round", f"round {header.round_id} is secure: updates in the clear are refused"
        )
    if header.base_version != exp.base_version:
        raise MessageError(
            "stale_base", f"base v{header.base_version}, the round starts from v{exp.base_version}"
        )


def decode_weights(body: bytes, exp: Expectations) -> dict[str, np.ndarray]:
    """The trainable arrays of a safetensors body, checked for names, shapes and dtypes.

    Zero-copy read-only views into ``body`` (:func:`vfer.weights.view`, which checks the
    header as strictly as the safetensors library does); errors keep their reason codes.
    """
    try:
        return wcodec.view(body, exp.spec, dtypes=exp.dtypes)
    except wcodec.WeightsError as exc:
        raise MessageError(exc.reason, str(exc)) from None


def weights_view(body: bytes) -> dict[str, np.ndarray]:
    """All arrays of a stored (already checked) body as read-only views into it."""
    try:
        return wcodec.view(body)
    except wcodec.WeightsError as exc:
        raise MessageError(exc.reason, str(exc)) from None


def check_values(weights: Mapping[str, np.ndarray], exp: Expectations) -> None:
    """Finite, bounded, and within ``max_update_norm`` (L2) of the base central."""
    problem = wcodec.bounds_problem(weights, exp.max_abs_weight)
    if problem is not None:
        raise MessageError(*problem)
    norm = wcodec.distance(weights, exp.base_weights)
    if norm > exp.max_update_norm:
        raise MessageError(
            "norm_bound", f"distance {norm:.3g} from the base > {exp.max_update_norm}"
        )


def update_factor(header: UpdateHeader, weighting: str) -> float:
    """The FedAvg factor of an update (:func:`vfer.fedavg.weight_of` of its clip count)."""
    try:
        return weight_of(header.num_clips, weighting)  # type: ignore[arg-type]
    except InvalidCountError as exc:
        raise MessageError("no_samples", str(exc)) from None
