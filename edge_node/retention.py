"""Retention as pure decisions: which clips (and thumbnails) to delete, oldest first.

The store measures, this module decides, the store deletes. Two limits, applied in order:

1. age: every clip that started more than ``max_age_s`` before ``now`` goes;
2. size: while the bytes in use exceed ``max_bytes``, the oldest remaining clip goes.

Thumbnails (opt-in) have their own, shorter age limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAY_S = 86_400.0


@dataclass(frozen=True)
class RetentionPolicy:
    max_age_s: float
    max_bytes: int
    thumbnail_max_age_s: float = 7 * DAY_S

    def __post_init__(self) -> None:
        if not self.max_age_s > 0 or self.max_bytes <= 0 or not self.thumbnail_max_age_s > 0:
            raise ValueError(
                f"retention limits must be positive, got max_age_s={self.max_age_s}, "
                f"max_bytes={self.max_bytes}, thumbnail_max_age_s={self.thumbnail_max_age_s}"
            )


@dataclass(frozen=True)
class ClipSize:
    """What retention needs to know about one stored clip."""

    id: int
    started_at: float  # epoch seconds
    bytes: int  # bytes its rows take (the store's estimate)


@dataclass(frozen=True)
class RetentionPlan:
    by_age: tuple[int, ...]  # clip ids, oldest first
    by_size: tuple[int, ...]  # clip ids, oldest first
    bytes_after: int  # estimated bytes in use once both are deleted

    @property
    def delete(self) -> tuple[int, ...]:
        return self.by_age + self.by_size


def plan_retention(
    clips: Sequence[ClipSize], used_bytes: int, now: float, policy: RetentionPolicy
) -> RetentionPlan:
    """Clips to delete so that none is older than the age limit and the size limit holds.

    ``used_bytes`` is what the database holds now (clips plus fixed overhead); deleting a clip
    frees its ``bytes``. Ties in age go by id, so the result never depends on input order.
    """
    if used_bytes < 0:
        raise ValueError(f"used_bytes must be >= 0, got {used_bytes}")
    ordered = sorted(clips, key=lambda c: (c.started_at, c.id))
    cutoff = now - policy.max_age_s
    by_age = [c for c in ordered if c.started_at < cutoff]
    remaining = used_bytes - sum(c.bytes for c in by_age)
    by_size = []
    for c in ordered[len(by_age) :]:
        if remaining <= policy.max_bytes:
            break
        by_size.append(c)
        remaining -= c.bytes
    return RetentionPlan(
        tuple(c.id for c in by_age), tuple(c.id for c in by_size), max(remaining, 0)
    )


def expired_thumbnails(
    created: Sequence[tuple[int, float]], now: float, policy: RetentionPolicy
) -> list[int]:
    """Ids of thumbnails, given as (id, created_at), older than the thumbnail age limit."""
    cutoff = now - policy.thumbnail_max_age_s
    return sorted(i for i, t in created if t < cutoff)
