"""Clip segmentation as a pure function, against an oracle written from the rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.segmenter import Segment, Segmenter, SegmentPolicy, segment

P = SegmentPolicy(gap_s=1.0, max_s=10.0, min_frames=3)


def frames(pattern: str, fps: float = 10.0) -> tuple[list[float], list[bool]]:
    return [i / fps for i in range(len(pattern))], [c == "1" for c in pattern]


def oracle(times, faces, cuts, policy):  # type: ignore[no-untyped-def]
    """Group face frames: a face frame joins the open clip unless the gap since the previous face
    frame reached gap_s, the clip would reach max_s, or a cut lies in between."""
    groups: list[list[int]] = []
    cut_since_last = False
    for i, (t, face) in enumerate(zip(times, faces, strict=True)):
        cut_since_last = cut_since_last or cuts[i]
        if not face:
            continue
        if (
            groups
            and not cut_since_last
            and t - times[groups[-1][-1]] < policy.gap_s
            and t - times[groups[-1][0]] < policy.max_s
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
        cut_since_last = False
    return [(g[0], g[-1], len(g), len(g) >= policy.min_frames) for g in groups]


def test_face_then_no_face_gives_one_clip_of_the_face_part() -> None:
    times, faces = frames("1" * 20 + "0" * 30)
    [clip] = segment(times, faces, P)
    assert (clip.first, clip.last, clip.face_frames, clip.keep) == (0, 19, 20, True)
    assert clip.start_t == 0.0 and clip.end_t == pytest.approx(1.9)


def test_short_dropouts_stay_in_the_clip_and_lower_the_face_ratio() -> None:
    times, faces = frames("1111100000111110")  # 5 missing frames = 0.6 s < gap
    [clip] = segment(times, faces, P)
    assert clip.face_frames == 10 and clip.span_frames == 15
    assert clip.face_ratio == pytest.approx(10 / 15)


def test_a_gap_of_gap_s_ends_the_clip() -> None:
    times, faces = frames("111" + "0" * 10 + "111")  # last face 0.2 s, next 1.3 s: gap 1.1 s
    clips = segment(times, faces, P)
    assert [(c.first, c.last) for c in clips] == [(0, 2), (13, 15)]


def test_max_length_cuts_and_short_clips_are_marked_not_kept() -> None:
    times, faces = frames("1" * 105)  # 10.5 s of face at 10 fps
    clips = segment(times, faces, P)
    assert [(c.first, c.last, c.keep) for c in clips] == [(0, 99, True), (100, 104, True)]
    short = segment(*frames("11000000000000000"), P)
    assert [c.keep for c in short] == [False]


def test_no_face_gives_no_clip_and_cuts_split() -> None:
    assert segment(*frames("0" * 40), P) == []
    times, faces = frames("111111")
    clips = segment(times, faces, P, cuts=[False, False, False, True, False, False])
    assert [(c.first, c.last) for c in clips] == [(0, 2), (3, 5)]


def test_incremental_steps_report_start_and_end_on_the_right_frames() -> None:
    seg = Segmenter(SegmentPolicy(gap_s=0.25, max_s=5, min_frames=1))
    steps = [seg.push(i, i / 10, f) for i, f in enumerate([True, True, False, False, False, True])]
    assert [s.started for s in steps] == [True, False, False, False, False, True]
    assert [s.in_clip for s in steps] == [True, True, False, False, False, True]
    ended = [s.ended for s in steps]
    assert ended[:4] == [None] * 4 and isinstance(ended[4], Segment) and ended[4].last == 1
    assert seg.open_frames == 1 and seg.flush() is not None and seg.flush() is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one entry per frame"):
        segment([0.0, 1.0], [True], P)
    with pytest.raises(ValueError, match="must not decrease"):
        segment([1.0, 0.0], [True, True], P)
    with pytest.raises(ValueError, match="min_frames"):
        SegmentPolicy(min_frames=0)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0, 0.8), st.booleans(), st.booleans()), min_size=0, max_size=120
    ),
    gap=st.floats(0.05, 2.0),
    max_s=st.floats(0.1, 6.0),
    min_frames=st.integers(1, 6),
)
def test_segment_matches_the_oracle(data, gap, max_s, min_frames) -> None:  # type: ignore[no-untyped-def]
    times, t = [], 0.0
    for dt, _, _ in data:
        t += dt
        times.append(t)
    faces = [f for _, f, _ in data]
    cuts = [c for _, _, c in data]
    policy = SegmentPolicy(gap, max_s, min_frames)
    got = segment(times, faces, policy, cuts)
    assert [(c.first, c.last, c.face_frames, c.keep) for c in got] == oracle(
        times, faces, cuts, policy
    )
    for c in got:
        assert 0 < c.face_ratio <= 1.0 and c.end_t - c.start_t < max_s
    assert sum(c.face_frames for c in got) == sum(faces)
