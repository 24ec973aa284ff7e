"""What the operator page shows, built from the clip store's read API as plain JSON data.

The store (:class:`edge_node.store.ClipStore`) is read through three calls only:
``class_counts()``, ``recent_clips(limit)`` and ``timeline(bucket_s)``. This module turns their
records into the page's one JSON shape (pure functions, no SQLite here)::

    {"classes": [...], "counts": {class: n}, "total": n,
     "recent": [{"id", "start", "end", "frames", "prediction", "confidence"}],
     "timeline": {"bucket_s": s, "buckets": [{"t": epoch_s, "counts": {class: n}}]}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class ClipLike(Protocol):
    """The fields of a stored clip the page uses (``edge_node.store.ClipRow``)."""

    @property
    def id(self) -> int: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ended_at(self) -> float: ...
    @property
    def frame_count(self) -> int: ...
    @property
    def prediction(self) -> str: ...
    @property
    def confidence(self) -> float: ...


class BucketLike(Protocol):
    """One bucket of the prediction mix (``edge_node.store.TimelineBucket``)."""

    @property
    def start(self) -> float: ...
    @property
    def counts(self) -> Mapping[str, int]: ...


class ClipReader(Protocol):
    """The clip store's read API the operator page needs."""

    def class_counts(self) -> Mapping[str, int]: ...

    def recent_clips(self, limit: int = 20) -> Sequence[ClipLike]: ...

    def timeline(self, bucket_s: float = 3600.0) -> Sequence[BucketLike]: ...


def clip_row(clip: ClipLike) -> dict[str, Any]:
    """One recent clip for the page: times, length, the VFER prediction and its confidence."""
    return {
        "id": int(clip.id),
        "start": float(clip.started_at),
        "end": float(clip.ended_at),
        "frames": int(clip.frame_count),
        "prediction": str(clip.prediction),
        "confidence": round(float(clip.confidence), 4),
    }


def class_order(known: Sequence[str], *seen: Mapping[str, int]) -> list[str]:
    """The bundle's classes in their order, then any other class found in ``seen``, sorted.

    Clips recorded with an older bundle may use names the current one lacks; they still count.
    """
    extra = {name for counts in seen for name in counts} - set(known)
    return list(known) + sorted(extra)


def operator_summary(
    store: ClipReader, classes: Sequence[str], recent_limit: int = 20, bucket_s: float = 3600.0
) -> dict[str, Any]:
    """Everything the operator page shows, as JSON-ready data."""
    counts = {str(k): int(v) for k, v in store.class_counts().items()}
    buckets: list[dict[str, Any]] = [
        {"t": float(b.start), "counts": {str(k): int(v) for k, v in b.counts.items()}}
        for b in store.timeline(bucket_s)
    ]
    buckets.sort(key=lambda b: b["t"])
    names = class_order(classes, counts, *(b["counts"] for b in buckets))
    return {
        "classes": names,
        "counts": {c: counts.get(c, 0) for c in names},
        "total": sum(counts.values()),
        "recent": [clip_row(c) for c in store.recent_clips(recent_limit)],
        "timeline": {"bucket_s": bucket_s, "buckets": buckets},
    }
