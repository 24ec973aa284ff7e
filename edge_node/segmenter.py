"""Clip segmentation as pure logic: face / no face per frame in, clip boundaries out.

A clip starts on the first frame with a face. It ends when the face has been absent for
``gap_s`` (measured on the frames' own timestamps, so a file ingested as fast as possible cuts
exactly like the same file played in real time), when it would grow past ``max_s``, or at a
discontinuity (the next file of a folder, a looping video starting over, the stream's end).
Clips with fewer than ``min_frames`` face frames are discarded.

No clock, camera or database in here: :class:`Segmenter` is a small state machine fed by the
capture loop, and :func:`segment` runs it over whole sequences for tests and offline use.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentPolicy:
    gap_s: float = 1.0
    max_s: float = 10.0
    min_frames: int = 8

    def __post_init__(self) -> None:
        if not self.gap_s > 0 or not self.max_s > 0:
            raise ValueError(f"gap_s and max_s must be positive, got {self.gap_s}, {self.max_s}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")


@dataclass(frozen=True)
class Segment:
    """A finished clip, in frame indices and timestamps of the stream that fed the segmenter."""

    first: int  # index of its first face frame
    last: int  # index of its last face frame
    start_t: float
    end_t: float
    face_frames: int  # frames with a face between first and last (the clip's T)
    span_frames: int  # all frames between first and last, inclusive
    keep: bool  # False: shorter than min_frames, discarded

    @property
    def face_ratio(self) -> float:
        return self.face_frames / self.span_frames


@dataclass(frozen=True)
class Step:
    """What one frame did: maybe closed the previous clip, maybe started a new one."""

    ended: Segment | None = None  # a clip that ended before this frame
    started: bool = False  # this frame is the first of a new clip
    in_clip: bool = False  # this frame has a face and belongs to the open clip


@dataclass
class _Open:
    first: int
    start_t: float
    last: int
    last_t: float
    face_frames: int


class Segmenter:
    """Feed ``push(index, t, face)`` once per frame, in order; ``flush()`` at the end."""

    def __init__(self, policy: SegmentPolicy) -> None:
        self.policy = policy
        self._open: _Open | None = None

    @property
    def open_frames(self) -> int:
        return 0 if self._open is None else self._open.face_frames

    def push(self, index: int, t: float, face: bool, *, cut: bool = False) -> Step:
        """One frame. ``cut``: a discontinuity before this frame (new file, loop restart)."""
        ended = None
        cur = self._open
        if cur is not None and (
            cut
            or t - cur.last_t >= self.policy.gap_s
            or (face and t - cur.start_t >= self.policy.max_s)
        ):
            ended = self._close()
        if not face:
            return Step(ended=ended)
        if self._open is None:
            self._open = _Open(index, t, index, t, 1)
            return Step(ended=ended, started=True, in_clip=True)
        self._open.last, self._open.last_t = index, t
        self._open.face_frames += 1
        return Step(ended=ended, in_clip=True)

    def flush(self) -> Segment | None:
        """End of stream: close the open clip, if any."""
        return self._close() if self._open is not None else None

    def abandon(self) -> None:
        """Drop the open clip without a segment (the store was wiped under it)."""
        self._open = None

    def _close(self) -> Segment:
        cur = self._open
        assert cur is not None
        self._open = None
        return Segment(
            first=cur.first,
            last=cur.last,
            start_t=cur.start_t,
            end_t=cur.last_t,
            face_frames=cur.face_frames,
            span_frames=cur.last - cur.first + 1,
            keep=cur.face_frames >= self.policy.min_frames,
        )


def segment(
    times: Sequence[float],
    faces: Sequence[bool],
    policy: SegmentPolicy,
    cuts: Sequence[bool] | None = None,
) -> list[Segment]:
    """Every clip (kept or not) of a whole sequence of frames."""
    if len(times) != len(faces) or (cuts is not None and len(cuts) != len(times)):
        raise ValueError(
            f"times, faces and cuts must have one entry per frame, got {len(times)}, {len(faces)}"
            f" and {'none' if cuts is None else len(cuts)}"
        )
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError("frame times must not decrease")
    seg = Segmenter(policy)
    out = []
    for i, (t, face) in enumerate(zip(times, faces, strict=True)):
        step = seg.push(i, t, face, cut=bool(cuts[i]) if cuts is not None else False)
        if step.ended is not None:
            out.append(step.ended)
    last = seg.flush()
    if last is not None:
        out.append(last)
    return out
