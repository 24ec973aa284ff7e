"""The clip being recorded, held in memory until it ends and goes to the store whole.

The capture loop (:mod:`edge_node.pipeline`) adds each face frame of the open clip with
:meth:`OpenClip.add` and, when the segmenter ends it, turns it into one :class:`NewClip`
(:meth:`OpenClip.finished`) that the store writes in a single transaction, so there is never a
half-written clip. A clip keeps the models it started with, even if the bundle switches under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_node.models import Models, Predictions
from edge_node.segmenter import Segment
from edge_node.store import NewClip
from vfer.selection import clip_mean_probs

THUMBNAIL_EVERY = 5  # frames between thumbnail candidates (opt-in thumbnails only)


@dataclass
class OpenClip:
    started_at: float  # wall clock
    t0: float  # source time of its first frame
    models: Models
    recordable: bool
    times: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    ifer: list[np.ndarray] = field(default_factory=list)
    teacher: list[np.ndarray] = field(default_factory=list)
    thumbs: list[bytes] = field(default_factory=list)

    def add(self, t: float, out: Predictions, crop: np.ndarray, thumbnails: bool) -> None:
        """One face frame; with ``thumbnails`` every ``THUMBNAIL_EVERY``-th crop is kept as JPEG."""
        if thumbnails and len(self.times) % THUMBNAIL_EVERY == 0:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            if ok:
                self.thumbs.append(jpeg.tobytes())
        self.times.append(t - self.t0)
        self.embeddings.append(out.embedding)
        self.ifer.append(out.ifer)
        if out.teacher is not None:
            self.teacher.append(out.teacher)

    def finished(self, seg: Segment, thumbnails: int) -> NewClip:
        """The clip as the store takes it, with at most ``thumbnails`` thumbnails."""
        if len(self.embeddings) != seg.face_frames:  # pragma: no cover - an invariant
            raise RuntimeError(f"clip buffer has {len(self.embeddings)} frames, segment {seg}")
        m = self.models
        return NewClip(
            started_at=self.started_at,
            ended_at=self.started_at + (seg.end_t - seg.start_t),
            face_ratio=seg.face_ratio,
            bundle_id=m.bundle.bundle_id,
            classes=m.bundle.classes,
            times=np.asarray(self.times),
            embeddings=np.stack(self.embeddings),
            ifer=np.stack(self.ifer),
            vfer_probs=m.vfer.probs
            if m.vfer.probs is not None
            else clip_mean_probs(np.stack(self.ifer)),
            thumbnails=spread(self.thumbs, thumbnails),
            teacher=np.stack(self.teacher) if len(self.teacher) == len(self.ifer) else None,
        )


def spread(items: list[bytes], n: int) -> tuple[bytes, ...]:
    """At most ``n`` items, evenly spaced, first and last included."""
    if n <= 0 or not items:
        return ()
    if len(items) <= n:
        return tuple(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return tuple(items[i] for i in idx)
