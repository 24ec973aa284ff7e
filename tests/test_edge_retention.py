"""Retention decisions as pure functions: age first, then size, oldest first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.retention import (
    DAY_S,
    ClipSize,
    RetentionPolicy,
    expired_thumbnails,
    plan_retention,
)

NOW = 1_800_000_000.0


def clip(i: int, age_days: float, size: int = 100) -> ClipSize:
    return ClipSize(i, NOW - age_days * DAY_S, size)


def test_old_clips_go_by_age() -> None:
    plan = plan_retention(
        [clip(1, 40), clip(2, 10), clip(3, 31)], 300, NOW, RetentionPolicy(30 * DAY_S, 10_000)
    )
    assert plan.by_age == (1, 3) and plan.by_size == () and plan.bytes_after == 100


def test_size_limit_deletes_oldest_first_until_it_holds() -> None:
    clips = [clip(i, age) for i, age in [(1, 3), (2, 1), (3, 5), (4, 2)]]
    plan = plan_retention(clips, 450, NOW, RetentionPolicy(30 * DAY_S, 250))
    assert plan.by_size == (3, 1) and plan.bytes_after == 250
    assert plan.delete == (3, 1)


def test_nothing_to_do_and_order_independence() -> None:
    clips = [clip(1, 1), clip(2, 2)]
    p = RetentionPolicy(30 * DAY_S, 1000)
    assert plan_retention(clips, 200, NOW, p).delete == ()
    assert plan_retention([], 5000, NOW, p).delete == ()  # overhead alone: nothing to delete
    tied = [ClipSize(5, NOW, 10), ClipSize(4, NOW, 10)]
    assert plan_retention(tied, 20, NOW, RetentionPolicy(DAY_S, 10)).by_size == (4,)


def test_thumbnails_have_their_own_age_and_bad_limits_are_refused() -> None:
    p = RetentionPolicy(30 * DAY_S, 1000, thumbnail_max_age_s=7 * DAY_S)
    assert expired_thumbnails(
        [(9, NOW - 8 * DAY_S), (3, NOW - DAY_S), (1, NOW - 30 * DAY_S)], NOW, p
    ) == [1, 9]
    with pytest.raises(ValueError, match="positive"):
        RetentionPolicy(0, 10)
    with pytest.raises(ValueError, match="used_bytes"):
        plan_retention([], -1, NOW, p)


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.floats(0, 60), max_size=40),
    sizes=st.data(),
    max_age=st.floats(1, 50),
    max_bytes=st.integers(1, 5000),
    overhead=st.integers(0, 500),
)
def test_plan_properties(ages, sizes, max_age, max_bytes, overhead) -> None:  # type: ignore[no-untyped-def]
    clips = [clip(i, a, sizes.draw(st.integers(1, 400))) for i, a in enumerate(ages)]
    used = overhead + sum(c.bytes for c in clips)
    plan = plan_retention(clips, used, NOW, RetentionPolicy(max_age * DAY_S, max_bytes))
    kept = [c for c in clips if c.id not in plan.delete]
    # every kept clip is young enough, and deleted-by-size clips are older than every kept one
    assert all(c.started_at >= NOW - max_age * DAY_S for c in kept)
    by_size = [c for c in clips if c.id in plan.by_size]
    assert all(d.started_at <= k.started_at for d in by_size for k in kept)
    after = used - sum(c.bytes for c in clips if c.id in plan.delete)
    assert plan.bytes_after == max(after, 0)
    # the size limit holds unless everything is gone, and no more than needed was deleted
    assert after <= max_bytes or not kept
    if plan.by_size:  # keeping the youngest deleted clip would have broken the limit
        youngest = next(c for c in clips if c.id == plan.by_size[-1])
        assert after + youngest.bytes > max_bytes
