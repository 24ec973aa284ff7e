""" "Accept this update?" as pure functions: bytes and expectations in, a checked update or a reason out.

No MQTT, SQLite or clock here. Every refusal is a :class:`vfer.messages.MessageError` whose
``reason`` code the aggregator logs with the node id and counts (docs/mqtt.md lists them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

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
    if header.base_version != exp.base_version:
        raise MessageError(
            "stale_base", f"base v{header.base_version}, the round starts from v{exp.base_version}"
        )


#: safetensors dtype codes -> numpy dtype names (anything else is refused as wrong_dtype).
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
MAX_ST_HEADER = 1 << 20


def decode_weights(body: bytes, exp: Expectations) -> dict[str, np.ndarray]:
    """The trainable arrays of a safetensors body, checked for names, shapes and dtypes.

    Zero-copy: the arrays are read-only views into ``body``. The header is checked as strictly
    as the safetensors library does (sizes, offsets that tile the data exactly), so nothing
    is read outside the buffer.
    """
    layout = _st_layout(body)
    expected = {n: s for n, s in exp.spec.items() if s.trainable}
    missing = sorted(set(expected) - set(layout))
    extra = sorted(set(layout) - set(expected))
    if missing:
        raise MessageError("missing_weights", f"missing {missing[:5]}")
    if extra:
        raise MessageError("unexpected_weights", f"unexpected {extra[:5]}")
    out: dict[str, np.ndarray] = {}
    for name, ws in expected.items():
        dtype, shape, begin, end = layout[name]
        if shape != ws.shape:
            raise MessageError("wrong_shape", f"{name}: {shape}, expected {ws.shape}")
        if dtype not in exp.dtypes:
            raise MessageError("wrong_dtype", f"{name}: {dtype} not in {list(exp.dtypes)}")
        out[name] = np.frombuffer(
            body, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize, offset=begin
        ).reshape(shape)
    return out


def weights_view(body: bytes) -> dict[str, np.ndarray]:
    """All arrays of a safetensors body as read-only views into it (no copy)."""
    out: dict[str, np.ndarray] = {}
    for name, (dtype, shape, begin, end) in _st_layout(body).items():
        if dtype not in _ST_DTYPES.values():
            raise MessageError("wrong_dtype", f"{name}: {dtype} is not a numpy dtype")
        count = (end - begin) // np.dtype(dtype).itemsize
        out[name] = np.frombuffer(body, dtype=dtype, count=count, offset=begin).reshape(shape)
    return out


def _st_layout(body: bytes) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """name -> (numpy dtype name, shape, absolute begin, absolute end) from a safetensors header."""
    if len(body) < 8:
        raise MessageError("bad_body", f"{len(body)} bytes cannot hold a safetensors header")
    n = int.from_bytes(body[:8], "little")
    if n > MAX_ST_HEADER or 8 + n > len(body):
        raise MessageError("bad_body", f"safetensors header of {n} bytes does not fit")
    try:
        header = json.loads(body[8 : 8 + n])
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError("bad_body", f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageError("bad_body", "safetensors header is not an object")
    header.pop("__metadata__", None)
    base, size = 8 + n, len(body) - 8 - n
    layout: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    spans = []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end))
        except (TypeError, KeyError, ValueError) as exc:
            raise MessageError("bad_body", f"{name}: malformed tensor entry") from exc
        if not ok or not isinstance(code, str) or begin > end:
            raise MessageError("bad_body", f"{name}: malformed tensor entry")
        dtype = _ST_DTYPES.get(code, code)
        itemsize = np.dtype(dtype).itemsize if code in _ST_DTYPES else 0
        if itemsize and math.prod(shape) * itemsize != end - begin:
            raise MessageError("bad_body", f"{name}: {end - begin} bytes for shape {shape}")
        layout[name] = (dtype, shape, base + begin, base + end)
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise MessageError("bad_body", "tensor data does not tile the buffer")
        pos = end
    if pos != size:
        raise MessageError("bad_body", f"tensor data covers {pos} of {size} bytes")
    return layout


def check_values(weights: Mapping[str, np.ndarray], exp: Expectations) -> None:
    """Finite, bounded, and within ``max_update_norm`` (L2) of the base central."""
    sq = 0.0
    for name, arr in weights.items():
        if not arr.size:
            continue
        a = arr.astype(np.float32, copy=False)
        biggest = float(np.max(np.abs(a)))  # NaN or Inf anywhere makes this non-finite
        if not np.isfinite(biggest):
            raise MessageError("non_finite", f"{name} contains NaN or Inf")
        if biggest > exp.max_abs_weight:
            raise MessageError("huge_values", f"{name} has |value| > {exp.max_abs_weight}")
        base = exp.base_weights.get(name)
        d = (a - base).ravel() if base is not None else a.ravel()
        sq += float(np.dot(d, d))
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
