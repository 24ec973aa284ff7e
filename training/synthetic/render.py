"""Turn a subject's look and a clip timeline into RGB frames: background, pose, lighting, sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.synthetic.expressions import Timeline
from training.synthetic.face import Appearance, Projector
from training.synthetic.features import draw_face

#: Bump when a change to the drawing (here, face.py, features.py or expressions.py) changes the
#: pixels: it is part of every generated corpus's folder name, so no corpus drawn by older code is
#: taken for a new one (the embedding cache is keyed by content and needs nothing).
RENDER_VERSION = 1
PAD = 16  # grain frames are this much larger than the image, so shifted windows differ
GRAIN_FRAMES = 4
_RAMP = np.arange(256, dtype=np.float64)[:, None]


@dataclass(frozen=True)
class Scene:
    """What stays fixed during one clip: the room, where the camera puts the face, the light."""

    background: np.ndarray  # (H, W, 3) uint8 RGB, lit by the key light
    grain: np.ndarray  # (K, H + PAD, W + PAD, 3) int16 sensor noise, windows picked per frame
    cx: float  # face centre, pixels
    cy: float
    face_px: float  # half face width, pixels
    light: float  # -1 (subject's left) .. 1 (right)
    gain: float  # exposure
    tint: tuple[float, float, float]  # white balance
    blur: int  # 0, or an odd Gaussian kernel for a soft focus


def random_scene(
    rng: np.random.Generator, width: int, height: int, room: int, grain_frames: int = GRAIN_FRAMES
) -> Scene:
    """A scene for one clip; ``room`` seeds the subject's usual backdrop (same room, new light).

    ``grain_frames`` sensor-noise fields are drawn (a still needs one)."""
    room_rng = np.random.default_rng(room)
    base = room_rng.integers(40, 220, 3).astype(np.float32)
    other = np.clip(base + room_rng.normal(0, 40, 3), 0, 255).astype(np.float32)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    bg = base * (1 - ys) + other * ys
    bg = np.repeat(bg, width, axis=1)
    for _ in range(int(room_rng.integers(1, 4))):  # furniture, doors, posters
        x0, y0 = int(room_rng.integers(0, width)), int(room_rng.integers(0, height))
        w, h = (
            int(room_rng.integers(width // 10, width // 3)),
            int(room_rng.integers(height // 8, height // 2)),
        )
        color = room_rng.integers(20, 235, 3).astype(np.float32)
        bg[y0 : y0 + h, x0 : x0 + w] = 0.6 * color + 0.4 * bg[y0 : y0 + h, x0 : x0 + w]
    bg = cv2.GaussianBlur(bg, (0, 0), max(1.0, width / 160))
    light = float(rng.uniform(-1, 1))
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    yv = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    shade = 1.0 + 0.18 * light * xs - 0.1 * (xs**2 + yv**2)
    bg = bg * shade[:, :, None]
    face_px = height * rng.uniform(0.16, 0.22)
    sigma = rng.uniform(2.0, 7.0)
    grain = rng.normal(0.0, sigma, (grain_frames, height + PAD, width + PAD, 3))
    return Scene(
        background=np.clip(bg, 0, 255).astype(np.uint8),
        grain=np.round(grain).astype(np.int16),
        cx=width * (0.5 + rng.uniform(-0.12, 0.12)),
        cy=height * (0.45 + rng.uniform(-0.06, 0.06)),
        face_px=float(face_px),
        light=light,
        gain=float(rng.uniform(0.8, 1.15)),
        tint=tuple(float(x) for x in rng.uniform(0.92, 1.08, 3)),  # type: ignore[arg-type]
        blur=int(rng.choice([0, 3])),
    )


def render_frame(
    look: Appearance, timeline: Timeline, scene: Scene, i: int, rng: np.random.Generator
) -> np.ndarray:
    """Frame ``i`` of a clip as RGB uint8."""
    yaw, pitch, roll, dx, dy, ds = timeline.pose[i]
    s = scene.face_px * (1.0 + ds)
    proj = Projector(scene.cx + dx * s, scene.cy + dy * s, s, yaw, pitch, roll)
    img = scene.background.copy()
    gaze = (float(timeline.gaze[i, 0]), float(timeline.gaze[i, 1]))
    draw_face(
        img,
        look,
        proj,
        timeline.au[i],
        float(timeline.rounding[i]),
        float(timeline.blink[i]),
        gaze,
        scene.light - 0.8 * float(yaw),
    )
    if scene.blur:
        img = cv2.GaussianBlur(img, (scene.blur, scene.blur), 0)
    h, w = img.shape[:2]
    k, dy, dx = rng.integers(0, (len(scene.grain), PAD, PAD))
    img = cv2.add(img, scene.grain[k, dy : dy + h, dx : dx + w], dtype=cv2.CV_8U)
    gain = scene.gain * (1.0 + 0.02 * np.sin(0.3 * i))  # exposure flicker
    lut = np.clip(_RAMP * (gain * np.asarray(scene.tint)), 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut[:, None, :])


def render_clip(
    look: Appearance, timeline: Timeline, scene: Scene, rng: np.random.Generator
) -> np.ndarray:
    """All frames of a clip, (T, H, W, 3) RGB uint8."""
    return np.stack(
        [render_frame(look, timeline, scene, i, rng) for i in range(len(timeline.blink))]
    )
