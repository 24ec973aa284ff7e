"""What the kiosk sees of each frame: the label, the probabilities, the face box, the preview.

:class:`LiveView` turns one frame's results into a :class:`~edge_node.state.NodeState` update
(the kiosk server only reads that state) and, while somebody watches, a preview JPEG at the
configured rate. It keeps only what it needs between frames: the smoothed frame rate, when the
next preview is due, and the display's moving average and label (:func:`~edge_node.display.
steady_step`: the label on screen does not flicker from frame to frame).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge_node.display import Display, Steady, display_probs, steady_step
from edge_node.sources import Frame
from edge_node.state import NodeState
from vfer.faces import FaceCrop

# Frames up to this wide are encoded as they are (resizing costs more than it saves).
PREVIEW_WIDTH = 640


@dataclass(frozen=True)
class Shown:
    """One frame as the kiosk shows it: the models' outputs (None without a face) and the clip."""

    frame: Frame
    face: FaceCrop | None
    classes: tuple[str, ...]
    has_teacher: bool
    ifer: np.ndarray | None = None
    vfer: np.ndarray | None = None
    teacher: np.ndarray | None = None
    in_clip: bool = False  # a clip is open (its v probabilities stay up between face frames)
    recording: bool = False  # ... and it is being recorded
    clip_frames: int = 0


class LiveView:
    def __init__(
        self, state: NodeState, display: Display, preview: bool, preview_fps: float
    ) -> None:
        self.state, self.display = state, display
        self.preview, self.preview_fps = preview, preview_fps
        self._last_wall: float | None = None
        self._fps = 0.0
        self._next_preview = 0.0
        self._steady = Steady()

    def publish(self, shown: Shown) -> None:
        """Update the live state from one frame (and encode a preview when one is due)."""
        now = time.monotonic()
        self._tick(now)
        h, w = shown.frame.rgb.shape[:2]
        scale = min(1.0, PREVIEW_WIDTH / w)
        size = (round(w * scale), round(h * scale))
        self.state.update(
            **self._labels(shown),
            face_present=shown.face is not None,
            face_box=_scaled_box(shown.face, scale),
            frame_size=size,
            recording=shown.recording,
            paused=self.state.recording_paused(),
            clip_frames=shown.clip_frames,
            fps=round(self._fps, 1),
        )
        if self.preview and now >= self._next_preview and self.state.preview_wanted(now):
            self._next_preview = now + 1.0 / self.preview_fps
            self._encode_preview(shown.frame.rgb, scale, size)

    def _tick(self, now: float) -> None:
        """The frame rate, smoothed over about ten frames."""
        if self._last_wall is not None:
            dt = now - self._last_wall
            if dt > 0:
                self._fps = 1.0 / dt if self._fps == 0 else 0.9 * self._fps + 0.1 / dt
        self._last_wall = now

    def _labels(self, shown: Shown) -> dict[str, object]:
        """The label and the probabilities the page shows (``display``), by class name."""
        classes = shown.classes
        used, probs = display_probs(
            self.display,
            vfer=shown.vfer,
            ifer=shown.ifer,
            teacher=shown.teacher,
            has_teacher=shown.has_teacher,
        )
        if shown.frame.cut:  # another file, or the loop started over
            self._steady = Steady()
        self._steady = steady_step(self._steady, probs, shown.frame.t)
        steady = self._steady
        if probs is not None and steady.probs is not None and steady.label is not None:
            emotion: str | None = classes[steady.label]
            shown_probs = named(classes, steady.probs)
        else:
            emotion, shown_probs = None, {}
        if shown.vfer is not None:
            vfer = named(classes, shown.vfer)
        else:  # between face frames an open clip keeps showing its v
            vfer = self.state.snapshot().vfer_probs if shown.in_clip else {}
        return {
            "emotion": emotion,  # the steady label, and the average it leads
            "display": used,
            "display_probs": shown_probs,
            "vfer_probs": vfer,
            "ifer_probs": named(classes, shown.ifer) if shown.ifer is not None else {},
        }

    def _encode_preview(self, rgb: np.ndarray, scale: float, size: tuple[int, int]) -> None:
        small = rgb if scale == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70]
        )
        if ok:
            self.state.set_preview(jpeg.tobytes())


def _scaled_box(face: FaceCrop | None, scale: float) -> tuple[int, int, int, int] | None:
    if face is None:
        return None
    b = face.box
    return (round(b.x * scale), round(b.y * scale), round(b.width * scale), round(b.height * scale))


def named(classes: tuple[str, ...], probs: np.ndarray) -> dict[str, float]:
    return {c: round(float(p), 4) for c, p in zip(classes, probs, strict=True)}
