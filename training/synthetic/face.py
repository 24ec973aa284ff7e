"""A face's look, the pose projection, and the OpenCV drawing primitives the features use.

Geometry lives in face units: x to the subject's left-right in half face widths, y downwards,
origin at the face centre. :class:`Projector` maps face points to pixels under the head pose
(yaw and pitch shift points by their depth, roll rotates, then scale and translate), so features
move consistently when the head turns. Colours are RGB.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

Color = tuple[int, int, int]

SKIN_TONES: tuple[Color, ...] = (
    (241, 194, 167),
    (224, 172, 138),
    (198, 145, 108),
    (160, 110, 80),
    (120, 80, 56),
    (88, 58, 42),
    (232, 190, 150),
)
HAIR_COLORS: tuple[Color, ...] = (
    (30, 24, 20),
    (60, 40, 28),
    (105, 70, 40),
    (170, 130, 80),
    (140, 60, 30),
    (150, 150, 150),
)


@dataclass(frozen=True)
class Appearance:
    """What one subject looks like (fixed for all their clips)."""

    gender: str
    skin: Color
    hair: Color
    hair_style: int  # 0 short, 1 long, 2 shaved, 3 fringe
    lips: Color
    iris: Color
    shirt: Color
    face_aspect: float  # half height / half width
    eye_dx: float
    eye_y: float
    eye_w: float
    brow_gap: float
    brow_thick: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    beard: float  # 0 none .. 1 full stubble
    glasses: bool

    def to_json(self) -> dict[str, object]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def random_appearance(rng: np.random.Generator) -> Appearance:
    gender = "female" if rng.random() < 0.5 else "male"
    tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    skin = tuple(int(np.clip(c + rng.normal(0, 6), 0, 255)) for c in tone)
    lips = tuple(int(np.clip(c * f, 0, 255)) for c, f in zip(skin, (0.85, 0.55, 0.55), strict=True))
    return Appearance(
        gender=gender,
        skin=skin,  # type: ignore[arg-type]
        hair=HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))],
        hair_style=int(
            rng.choice([0, 1, 3], p=[0.2, 0.6, 0.2])
            if gender == "female"
            else rng.choice([0, 2, 3], p=[0.6, 0.2, 0.2])
        ),
        lips=lips,  # type: ignore[arg-type]
        iris=tuple(
            # np.asarray: numpy 2.5's stubs type a choice of rows as a scalar (same draw)
            int(c)
            for c in np.asarray(
                rng.choice([[70, 45, 30], [40, 80, 120], [60, 90, 60], [35, 25, 20]])
            )
        ),  # type: ignore[arg-type]
        shirt=tuple(int(c) for c in rng.integers(20, 230, 3)),  # type: ignore[arg-type]
        face_aspect=float(rng.uniform(1.2, 1.42)),
        eye_dx=float(rng.uniform(0.36, 0.46)),
        eye_y=float(rng.uniform(-0.14, -0.04)),
        eye_w=float(rng.uniform(0.17, 0.23)),
        brow_gap=float(rng.uniform(0.17, 0.27)),
        brow_thick=float(rng.uniform(0.045, 0.085) * (0.8 if gender == "female" else 1.0)),
        nose_len=float(rng.uniform(0.4, 0.52)),
        nose_w=float(rng.uniform(0.13, 0.2)),
        mouth_y=float(rng.uniform(0.66, 0.78)),
        mouth_w=float(rng.uniform(0.3, 0.42)),
        lip_thick=float(rng.uniform(0.05, 0.09)),
        beard=float(rng.uniform(0.3, 1.0) if gender == "male" and rng.random() < 0.35 else 0.0),
        glasses=bool(rng.random() < 0.15),
    )


class Projector:
    """Face units -> pixels for one pose. ``depth`` is how far a point stands out of the face plane."""

    def __init__(self, cx: float, cy: float, scale: float, yaw: float, pitch: float, roll: float):
        self.cx, self.cy, self.s = cx, cy, scale
        # x' = x cos(yaw) + depth sin(yaw), y' = y cos(pitch) + depth sin(pitch), then roll and scale
        self._rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]]) * scale
        self._m = self._rot @ np.diag([np.cos(yaw), np.cos(pitch)])
        self._tilt = np.array([np.sin(yaw), np.sin(pitch)])

    def __call__(self, pts: np.ndarray, depth: float = 0.5) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        off = self._rot @ (self._tilt * depth)
        return p @ self._m.T + (off[0] + self.cx, off[1] + self.cy)

    def pix(self, pts: np.ndarray, depth: float = 0.5) -> np.ndarray:
        return np.round(self(pts, depth) * 16).astype(np.int32)  # 4 fractional bits


SHIFT = 4  # fractional bits for cv2 drawing


def poly(img: np.ndarray, pts: np.ndarray, color: Color) -> None:
    cv2.fillPoly(img, [pts.reshape(-1, 1, 2)], color, cv2.LINE_AA, SHIFT)


def line(img: np.ndarray, pts: np.ndarray, color: Color, thick: float) -> None:
    cv2.polylines(
        img, [pts.reshape(-1, 1, 2)], False, color, max(1, round(thick)), cv2.LINE_AA, SHIFT
    )


def mix(a: Color, b: Color, t: float) -> Color:
    t = float(np.clip(t, 0.0, 1.0))
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def scale(c: Color, f: float) -> Color:
    return tuple(min(255, max(0, int(x * f))) for x in c)  # type: ignore[return-value]


@functools.cache
def _arc(a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.column_stack([np.cos(t), np.sin(t)])


@functools.cache
def _bulge(n: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.linspace(0.0, 1.0, n)
    return s, 4 * s * (1 - s)


def ellipse_pts(
    cx: float, cy: float, ax: float, ay: float, a0: float, a1: float, n: int
) -> np.ndarray:
    return _arc(a0, a1, n) * (ax, ay) + (cx, cy)


def curve(
    x0: float, x1: float, y_end0: float, y_end1: float, y_mid: float, n: int = 9
) -> np.ndarray:
    """A parabola-like curve from (x0, y_end0) to (x1, y_end1) through y_mid at the middle."""
    s, b = _bulge(n)
    out = np.empty((n, 2))
    out[:, 0] = x0 + (x1 - x0) * s
    out[:, 1] = y_end0 + (y_end1 - y_end0) * s + (y_mid - 0.5 * (y_end0 + y_end1)) * b
    return out
