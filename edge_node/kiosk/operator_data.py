"""What the operator page shows, built from the clip store's read API as plain JSON data.

The store (:class:`edge_node.store.ClipStore`) is read through four calls only:
``class_counts()``, ``recent_clips(limit)``, ``timeline(bucket_s)`` and, for totals, nothing else.
Its records are turned into plain dicts here (pure functions over whatever record type the store
returns: dataclasses, pydantic models, mappings or sqlite rows), so the page's JSON shape is fixed
in one place:

``{"counts": {class: n}, "total": n,
   "recent": [{"id", "start", "end", "frames", "prediction", "confidence", "probs"}],
   "timeline": {"bucket_s": s, "buckets": [{"t": epoch_s, "counts": {class: n}}]}}``
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol


class ClipReader(Protocol):
    def class_counts(self) -> Any: ...

    def recent_clips(self, limit: int) -> Any: ...

    def timeline(self, bucket_s: float) -> Any: ...


def plain(record: Any) -> dict[str, Any]:
    """A record as a dict: dataclass, pydantic model, mapping, sqlite3.Row or object attributes."""
    if record is None:
        return {}
    if isinstance(record, Mapping):
        return dict(record)
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    dump = getattr(record, "model_dump", None)
    if callable(dump):
        return dict(dump())
    keys = getattr(record, "keys", None)
    if callable(keys):  # sqlite3.Row
        return {k: record[k] for k in keys()}
    return {k: v for k, v in vars(record).items() if not k.startswith("_")}


def first(data: Mapping[str, Any], *names: str) -> Any:
    """The value of the first of ``names`` present (and not None) in ``data``."""
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def epoch(value: Any) -> float | None:
    """Seconds since the epoch from a number, a datetime or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def probs_dict(value: Any, classes: Sequence[str]) -> dict[str, float]:
    """Class probabilities as ``{class: p}`` from a mapping or a sequence in class order."""
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    seq = list(value)
    names = list(classes) if len(classes) == len(seq) else [str(i) for i in range(len(seq))]
    return {name: float(p) for name, p in zip(names, seq, strict=True)}


def clip_row(record: Any, classes: Sequence[str]) -> dict[str, Any]:
    """One recent clip for the page: times, length, the VFER prediction and its confidence."""
    data = plain(record)
    probs = probs_dict(first(data, "vfer_probs", "vfer", "probs", "final_vfer"), classes)
    prediction = first(data, "prediction", "label", "emotion", "vfer_label")
    confidence = None
    if probs:
        best = max(probs, key=lambda k: probs[k])
        prediction = prediction or best
        confidence = probs.get(str(prediction), probs[best])
    return {
        "id": first(data, "id", "clip_id"),
        "start": epoch(first(data, "start", "started_at", "start_time", "start_ts")),
        "end": epoch(first(data, "end", "ended_at", "end_time", "end_ts")),
        "frames": first(data, "frame_count", "frames", "n_frames"),
        "prediction": prediction,
        "confidence": confidence,
        "probs": probs,
    }


def counts_dict(value: Any) -> dict[str, int]:
    """``{class: n}`` from a mapping or from (class, n) pairs."""
    if value is None:
        return {}
    items: Iterable[tuple[Any, Any]] = value.items() if isinstance(value, Mapping) else value
    return {str(k): int(v) for k, v in items}


def timeline_buckets(value: Any) -> list[dict[str, Any]]:
    """``[{"t": epoch_s, "counts": {class: n}}]`` from (start, counts) pairs or records."""
    out: list[dict[str, Any]] = []
    for item in value or []:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            t, counts = item
        else:
            data = plain(item)
            t = first(data, "t", "start", "bucket", "bucket_start", "time")
            counts = first(data, "counts", "class_counts", "mix")
        when = epoch(t)
        if when is None or not math.isfinite(when):
            continue
        out.append({"t": when, "counts": counts_dict(counts)})
    out.sort(key=lambda b: b["t"])
    return out


def operator_summary(
    store: ClipReader,
    classes: Sequence[str],
    recent_limit: int = 20,
    bucket_s: float = 3600.0,
) -> dict[str, Any]:
    """Everything the operator page shows, as JSON-ready data."""
    counts = counts_dict(store.class_counts())
    recent = [clip_row(r, classes) for r in store.recent_clips(recent_limit)]
    buckets = timeline_buckets(store.timeline(bucket_s))
    seen = set(classes) | set(counts) | {c for b in buckets for c in b["counts"]}
    names = list(classes) + sorted(seen - set(classes))
    return {
        "classes": names,
        "counts": {c: counts.get(c, 0) for c in names},
        "total": sum(counts.values()),
        "recent": recent,
        "timeline": {"bucket_s": bucket_s, "buckets": buckets},
    }
