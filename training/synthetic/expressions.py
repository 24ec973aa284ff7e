"""Facial action units, emotion prototypes, per-subject expression styles and clip dynamics.

Everything here is pure numpy over a seeded generator: no drawing, no files. An expression is a
vector over :data:`AUS` (FACS-like action units, 0 = absent, about 1 = strong). Each subject expresses
each emotion in their own way (:func:`subject_styles`), so a model trained on some subjects meets a
real domain shift on others; each clip plays that style through an onset-apex-offset envelope with
speech-like jaw motion, blinks and small per-frame jitter (:func:`clip_timeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Action units, FACS numbers in brackets. ``head_pitch`` (head lowered) and ``lid_droop`` are extras.
AUS: tuple[str, ...] = (
    "brow_inner_up",  # AU1
    "brow_outer_up",  # AU2
    "brow_lower",  # AU4 (lowered and drawn together)
    "upper_lid_raise",  # AU5 (eyes wide)
    "cheek_raise",  # AU6 (lower lid pushed up, crow's feet)
    "lid_tighten",  # AU7
    "nose_wrinkle",  # AU9
    "upper_lip_raise",  # AU10
    "lip_corner_pull",  # AU12 (smile)
    "lip_corner_depress",  # AU15
    "chin_raise",  # AU17
    "lip_stretch",  # AU20
    "lip_press",  # AU24
    "jaw_drop",  # AU26
    "lid_droop",  # AU43-like heavy lids
    "head_pitch",  # head lowered (negative: raised)
)
AU_INDEX = {name: i for i, name in enumerate(AUS)}


def _vec(**units: float) -> np.ndarray:
    out = np.zeros(len(AUS), dtype=np.float64)
    for name, value in units.items():
        out[AU_INDEX[name]] = value
    return out


#: EMFACS-style prototypes for the six CREMA-D emotions.
PROTOTYPES: dict[str, np.ndarray] = {
    "neutral": _vec(),
    "happiness": _vec(cheek_raise=0.8, lip_corner_pull=1.0, jaw_drop=0.15, lid_tighten=0.2),
    "sadness": _vec(
        brow_inner_up=0.9,
        brow_lower=0.35,
        lip_corner_depress=0.9,
        chin_raise=0.5,
        lid_droop=0.5,
        head_pitch=0.5,
    ),
    "anger": _vec(
        brow_lower=1.0, upper_lid_raise=0.35, lid_tighten=0.8, lip_press=0.8, head_pitch=0.2
    ),
    "fear": _vec(
        brow_inner_up=0.9,
        brow_outer_up=0.7,
        brow_lower=0.35,
        upper_lid_raise=1.0,
        lip_stretch=0.9,
        jaw_drop=0.35,
        head_pitch=-0.2,
    ),
    "disgust": _vec(
        nose_wrinkle=1.0,
        upper_lip_raise=0.9,
        brow_lower=0.45,
        lip_corner_depress=0.3,
        chin_raise=0.3,
        lid_tighten=0.3,
    ),
}
#: Alternative displays some subjects use instead (open-mouthed anger, a broad grin).
VARIANTS: dict[str, np.ndarray] = {
    "anger": _vec(brow_lower=1.0, upper_lid_raise=0.6, upper_lip_raise=0.6, jaw_drop=0.45),
    "happiness": _vec(cheek_raise=1.0, lip_corner_pull=1.0, upper_lip_raise=0.35, jaw_drop=0.45),
}
_SIGNED = {AU_INDEX["head_pitch"]}


@dataclass(frozen=True)
class SubjectStyle:
    """How one subject moves: resting face, each emotion's apex, speech, blinks, head motion."""

    resting: np.ndarray  # AU offsets of this subject's neutral face
    apex: dict[str, np.ndarray]  # emotion -> AU vector at full intensity
    expressivity: float
    articulation: float  # jaw amplitude while speaking
    speech_rate_hz: float
    blink_rate_hz: float
    head_motion: float  # amplitude of head movement (radians-ish)

    def to_json(self) -> dict[str, object]:
        return {
            "resting": _named(self.resting),
            "apex": {e: _named(v) for e, v in self.apex.items()},
            "expressivity": round(self.expressivity, 4),
            "articulation": round(self.articulation, 4),
            "speech_rate_hz": round(self.speech_rate_hz, 4),
            "blink_rate_hz": round(self.blink_rate_hz, 4),
            "head_motion": round(self.head_motion, 4),
        }


def _named(v: np.ndarray) -> dict[str, float]:
    return {name: round(float(x), 4) for name, x in zip(AUS, v, strict=True) if abs(x) > 1e-4}


def _clip_units(v: np.ndarray) -> np.ndarray:
    out = np.clip(v, 0.0, 1.3)
    for i in _SIGNED:
        out[i] = np.clip(v[i], -0.6, 0.9)
    return out


def subject_styles(rng: np.random.Generator, classes: tuple[str, ...]) -> SubjectStyle:
    """Draw one subject's idiosyncratic way of expressing each class.

    Per subject: an overall expressivity; per emotion a gain, action units the subject rarely uses
    (attenuated), a leak of another emotion's display, an alternative display for anger and
    happiness, and a little noise. The resting face is offset too (some people look a bit sad or
    stern at rest), so "neutral" itself differs between subjects.
    """
    unknown = [c for c in classes if c not in PROTOTYPES]
    if unknown:
        raise ValueError(f"the synthetic corpus knows {sorted(PROTOTYPES)}, not {unknown}")
    expressivity = float(rng.uniform(0.55, 1.1))
    resting = rng.normal(0.0, 0.1, len(AUS))
    resting[AU_INDEX["lip_corner_pull"]] = rng.normal(0.0, 0.15)
    resting[AU_INDEX["lip_corner_depress"]] = rng.normal(0.0, 0.15)
    resting[AU_INDEX["brow_lower"]] = rng.normal(0.0, 0.2)
    resting[AU_INDEX["head_pitch"]] = rng.normal(0.0, 0.12)
    emotional = [c for c in classes if c != "neutral"]
    apex: dict[str, np.ndarray] = {}
    for emotion in classes:
        if emotion == "neutral":
            apex[emotion] = np.zeros(len(AUS))
            continue
        base = PROTOTYPES[emotion]
        if emotion in VARIANTS and rng.random() < 0.4:
            base = VARIANTS[emotion]
        used = np.where(rng.random(len(AUS)) < 0.3, rng.uniform(0.1, 0.5, len(AUS)), 1.0)
        style = base * used * rng.uniform(0.6, 1.2)
        others = [e for e in emotional if e != emotion]
        if others and rng.random() < 0.6:
            leak = PROTOTYPES[others[int(rng.integers(len(others)))]]
            style = style + rng.uniform(0.15, 0.45) * leak
        style = style + np.abs(rng.normal(0.0, 0.08, len(AUS))) * (rng.random(len(AUS)) < 0.3)
        apex[emotion] = _clip_units(expressivity * style)
    return SubjectStyle(
        resting=resting,
        apex=apex,
        expressivity=expressivity,
        articulation=float(rng.uniform(0.25, 0.7)),
        speech_rate_hz=float(rng.uniform(3.0, 5.5)),
        blink_rate_hz=float(rng.uniform(0.15, 0.5)),
        head_motion=float(rng.uniform(0.03, 0.12)),
    )


@dataclass(frozen=True)
class Timeline:
    """Per-frame state of one clip: action units, mouth rounding, blinks, pose and gaze."""

    au: np.ndarray  # (T, len(AUS))
    rounding: np.ndarray  # (T,) lip rounding while speaking, 0..1
    blink: np.ndarray  # (T,) lid closure 0..1
    pose: np.ndarray  # (T, 6): yaw, pitch, roll, dx, dy, scale-1 (face units)
    gaze: np.ndarray  # (T, 2) iris offset, fraction of eye half-width
    envelope: np.ndarray  # (T,) expression intensity 0..1 (onset, apex, offset)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(rng: np.random.Generator, n: int) -> np.ndarray:
    """Onset-apex-offset: rise from a low start, hold at apex, relax towards a residual level."""
    t = np.arange(n) / max(n - 1, 1)
    start = rng.uniform(0.0, 0.25)
    rise = rng.uniform(0.1, 0.3)
    off = rng.uniform(max(start + rise + 0.15, 0.55), 0.98)
    fall = rng.uniform(0.1, 0.3)
    floor = rng.uniform(0.0, 0.25)
    residual = rng.uniform(0.25, 0.7)
    up = smoothstep((t - start) / rise)
    down = smoothstep((t - off) / fall)
    env = floor + (1.0 - floor) * up
    return env - (1.0 - residual) * down * up


def _speech(rng: np.random.Generator, n: int, fps: float, rate: float) -> tuple[np.ndarray, ...]:
    """Jaw opening and lip rounding from a train of syllables with pauses, like a spoken sentence."""
    jaw = np.zeros(n)
    rounding = np.zeros(n)
    t = rng.uniform(0.05, 0.6) * fps
    end = n - rng.uniform(0.0, 0.5) * fps
    frames = np.arange(n)
    while t < end:
        width = fps / rate * rng.uniform(0.6, 1.2)
        amp = rng.uniform(0.25, 1.0)
        bump = np.clip(1.0 - np.abs(frames - t) / (0.5 * width), 0.0, None)
        bump = np.sin(0.5 * np.pi * bump) ** 2
        jaw = np.maximum(jaw, amp * bump)
        if rng.random() < 0.3:
            rounding = np.maximum(rounding, rng.uniform(0.4, 1.0) * bump)
        t += width * rng.uniform(0.8, 1.3)
        if rng.random() < 0.12:
            t += rng.uniform(0.2, 0.5) * fps  # a pause between words
    return jaw, rounding


def _smooth_noise(rng: np.random.Generator, n: int, k: int, cutoff: float) -> np.ndarray:
    """k channels of slow noise in [-1, 1]: a few random sinusoids below ``cutoff`` cycles/frame."""
    t = np.arange(n)[:, None]
    out = np.zeros((n, k))
    for _ in range(3):
        freq = rng.uniform(0.1, 1.0, k) * cutoff
        phase = rng.uniform(0, 2 * np.pi, k)
        out += np.sin(2 * np.pi * freq * t + phase) * rng.uniform(0.3, 1.0, k)
    return out / 2.0


def clip_timeline(
    rng: np.random.Generator, style: SubjectStyle, emotion: str, n: int, fps: float
) -> Timeline:
    """One clip of ``emotion`` by this subject, ``n`` frames at ``fps``."""
    env = envelope(rng, n)
    intensity = rng.uniform(0.55, 1.1)
    apex = style.apex[emotion] * (1.0 + rng.normal(0.0, 0.12, len(AUS)))
    au = style.resting[None, :] + env[:, None] * intensity * apex[None, :]
    au = au + 0.04 * _smooth_noise(rng, n, len(AUS), 1.5 / fps)
    jaw, rounding = _speech(rng, n, fps, style.speech_rate_hz)
    au[:, AU_INDEX["jaw_drop"]] += style.articulation * jaw
    au = np.stack([_clip_units(row) for row in au])
    blink = np.zeros(n)
    frames = np.arange(n)
    for start in np.flatnonzero(rng.random(n) < style.blink_rate_hz / fps):
        closure = 1.0 - np.abs(frames - start - 0.08 * fps) / (0.09 * fps)
        blink = np.maximum(blink, np.clip(closure, 0.0, 1.0))
    motion = _smooth_noise(rng, n, 6, 1.0 / fps) * style.head_motion
    pose = np.column_stack(
        [
            motion[:, 0] * 3.0 + rng.normal(0, 0.08),  # yaw
            motion[:, 1] * 2.0 + 0.35 * au[:, AU_INDEX["head_pitch"]],  # pitch
            motion[:, 2] * 1.5 + rng.normal(0, 0.05),  # roll
            motion[:, 3] * 2.0,  # dx
            motion[:, 4] * 1.5,  # dy
            motion[:, 5] * 0.5,  # scale
        ]
    )
    gaze = np.repeat(rng.normal(0.0, 0.15, (1, 2)), n, axis=0)
    for start in np.flatnonzero(rng.random(n) < 0.6 / fps):  # saccades
        gaze[start:] = rng.normal(0.0, 0.18, 2)
    return Timeline(au=au, rounding=rounding, blink=blink, pose=pose, gaze=gaze, envelope=env)
