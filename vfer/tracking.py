"""Following a face box between detections: a small normalized-correlation template search.

Detection (BlazeFace through MediaPipe) is the costliest stage of the node's per-frame work. Face
trackers in the field detect every few frames and follow the box in between. This one keeps a
grey template of the face from the last *detection*, shrunk so the box is :data:`TEMPLATE_PX`
wide, and on a following frame searches a window around the last box (grown by ``search`` of its
size on each side) with ``cv2.matchTemplate`` (``TM_CCOEFF_NORMED``). The best match moves the
box (its size is kept) and its correlation is the follow score: below ``min_score`` the face
counts as lost and the caller detects again on that very frame. The template never drifts: it is
replaced only by a detection. Cost: two small resizes and one match, about 0.1 ms at 640x480.
The detector's keypoints travel with the box (:func:`move_keypoints`: the same place in the box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

TEMPLATE_PX = 32
XYWH = tuple[int, int, int, int]


def move_keypoints(
    points: Sequence[tuple[float, float]], before: XYWH, after: XYWH
) -> tuple[tuple[float, float], ...]:
    """Points found with box ``before`` (x, y, w, h), carried to box ``after``. Pure.

    Each point keeps its place relative to the box: shifted with the box's corner and scaled with
    its size (the follower keeps the size, so in practice a shift).
    """
    bx, by, bw, bh = before
    ax, ay, aw, ah = after
    if bw <= 0 or bh <= 0:
        raise ValueError(f"the box a point is carried from must have a size, got {before}")
    sx, sy = aw / bw, ah / bh
    return tuple((ax + (x - bx) * sx, ay + (y - by) * sy) for x, y in points)


@dataclass(frozen=True)
class Follow:
    """Where the box moved to, as (x, y) of its top-left corner in frame pixels, and how well."""

    x: int
    y: int
    score: float  # normalized correlation of the best match, -1..1


class BoxFollower:
    """Follows one box from frame to frame; :meth:`anchor` it at each detection."""

    def __init__(self, search: float = 0.5, min_score: float = 0.6) -> None:
        if not 0 < search <= 2:
            raise ValueError(f"search must be in (0, 2], got {search}")
        if not -1 <= min_score < 1:
            raise ValueError(f"min_score must be in [-1, 1), got {min_score}")
        self.search, self.min_score = search, min_score
        self._template: np.ndarray | None = None
        self._box: tuple[int, int, int, int] | None = None  # x, y, w, h
        self._scale = 1.0

    @property
    def anchored(self) -> bool:
        return self._template is not None

    @property
    def origin(self) -> tuple[int, int]:
        """Top-left corner of the followed box as anchored (clipped to the frame)."""
        if self._box is None:
            raise ValueError("not anchored")
        return self._box[0], self._box[1]

    def anchor(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> None:
        """Take the template from a detected ``box`` (x, y, w, h) of an RGB frame."""
        x, y, w, h = box
        fh, fw = rgb.shape[:2]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(fw, x + w), min(fh, y + h)
        if x1 - x0 < 8 or y1 - y0 < 8:  # mostly outside the frame: nothing to follow
            self.reset()
            return
        self._scale = TEMPLATE_PX / max(w, h)
        patch = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
        size = (
            max(4, round(patch.shape[1] * self._scale)),
            max(4, round(patch.shape[0] * self._scale)),
        )
        self._template = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
        self._box = (x0, y0, x1 - x0, y1 - y0)

    def follow(self, rgb: np.ndarray) -> Follow | None:
        """The box's new top-left corner and score; None when lost (score below ``min_score``)."""
        if self._template is None or self._box is None:
            return None
        x, y, w, h = self._box
        fh, fw = rgb.shape[:2]
        mx, my = round(w * self.search), round(h * self.search)
        sx0, sy0 = max(0, x - mx), max(0, y - my)
        sx1, sy1 = min(fw, x + w + mx), min(fh, y + h + my)
        region = rgb[sy0:sy1, sx0:sx1]
        size = (round(region.shape[1] * self._scale), round(region.shape[0] * self._scale))
        th, tw = self._template.shape[:2]
        if size[0] < tw or size[1] < th:
            return None
        small = cv2.cvtColor(
            cv2.resize(region, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
        )
        scores = cv2.matchTemplate(small, self._template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        if not np.isfinite(best) or best < self.min_score:
            return None
        nx, ny = sx0 + round(bx / self._scale), sy0 + round(by / self._scale)
        self._box = (nx, ny, w, h)
        return Follow(nx, ny, float(best))

    def reset(self) -> None:
        self._template = None
        self._box = None
