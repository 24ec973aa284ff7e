"""What the kiosk shows, and which teacher labels clips: pure choices over the models' probabilities.

* ``display: vfer | ifer | teacher | ensemble`` picks the probabilities the kiosk shows for a frame:
  v's streaming step, g on the frame, the bundle's external teacher on the face crop, or the
  ensemble (the mean of g's and the teacher's probabilities). A choice the bundle cannot compute
  (no teacher) falls back to ``vfer`` and says so.
* ``adaptation.teacher: g | external | ensemble`` picks the per-frame probabilities Eq. 1 averages
  for pseudo labels: g's, the external teacher's, or their mean.

The default display is ``teacher`` when the bundle carries one: on the London set (102 unseen
people, neutral vs smiling) the MobileFaceNet teacher calls 97% of neutral photos neutral and 86%
of smiling photos happiness (the FER2013 one 95% and 53%), where the synthetic-trained g and v
fall far below (docs/kiosk.md, "Which model the screen shows").

:func:`steady_step` keeps the label on screen from flickering between frames (a moving average
with hysteresis; docs/kiosk.md, "A steady label"); :class:`TeacherConfig` is node.yaml's
``teacher:`` section (its cadence, :mod:`edge_node.teacher_stage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, cast, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Display = Literal["vfer", "ifer", "teacher", "ensemble"]
PseudoTeacher = Literal["g", "external", "ensemble"]
DISPLAYS: tuple[str, ...] = get_args(Display)
DEFAULT_DISPLAY: Display = "teacher"
DEFAULT_PSEUDO_TEACHER: PseudoTeacher = "g"
DEFAULT_TEACHER_EVERY = 4


def ensemble(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The mean of two probability vectors (or rows), renormalized."""
    m = (np.asarray(a, np.float64) + np.asarray(b, np.float64)) / 2.0
    return (m / m.sum(axis=-1, keepdims=True)).astype(np.float32)


def effective_display(choice: Display, has_teacher: bool) -> Display:
    """The display actually used: ``teacher``/``ensemble`` need a teacher, else ``vfer``."""
    if choice in ("teacher", "ensemble") and not has_teacher:
        return "vfer"
    return choice


def display_probs(
    choice: Display,
    *,
    vfer: np.ndarray | None,
    ifer: np.ndarray | None,
    teacher: np.ndarray | None,
    has_teacher: bool | None = None,
) -> tuple[Display, np.ndarray | None]:
    """(the display used, its probabilities) for one frame; None when there is nothing to show.

    ``has_teacher`` says whether the bundle has a teacher (default: whether ``teacher`` is given),
    so a frame without a face keeps the configured display rather than falling back.
    """
    used = effective_display(choice, teacher is not None if has_teacher is None else has_teacher)
    if used == "ifer":
        return used, ifer
    if used == "teacher":
        return used, teacher
    if used == "ensemble":
        return used, None if ifer is None or teacher is None else ensemble(ifer, teacher)
    return used, vfer


def pseudo_probs(choice: PseudoTeacher, g: np.ndarray, external: np.ndarray | None) -> np.ndarray:
    """Per-frame probabilities for Eq. 1 from the configured teacher.

    ``external`` is None for frames recorded without a teacher; then g's are used (a node that
    gains a teacher later still adapts on its older clips).
    """
    if choice == "g" or external is None:
        return np.asarray(g, np.float32)
    if choice == "external":
        return np.asarray(external, np.float32)
    return ensemble(g, external)


class TeacherConfig(BaseModel):
    """``teacher:`` in node.yaml: how the node runs the bundle's external teacher."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    every: int = Field(
        DEFAULT_TEACHER_EVERY,
        ge=1,
        le=30,
        description="run the teacher on a tracked face every N frames and hold its probabilities "
        "in between (1: every frame); in a pipeline stage of its own (docs/performance.md)",
    )


# -- the label on screen, steady over frames ------------------------------------------------------

#: time constant of the display's moving average; the hysteresis a new label must win by; how long
#: without a face before the smoothing starts afresh (a new visitor). Chosen by
#: ``python -m benchmarks.display_flicker`` (docs/kiosk.md, "A steady label").
STEADY_TAU_S = 1.0
STEADY_MARGIN = 0.1
STEADY_FORGET_S = 1.0


@dataclass(frozen=True)
class Steady:
    """The smoothed display between frames: its moving average, the label shown, and the
    source time of the last frame with probabilities (``t``)."""

    probs: np.ndarray | None = None
    label: int | None = None
    t: float | None = None


def steady_step(
    prev: Steady,
    probs: np.ndarray | None,
    t: float,
    *,
    tau_s: float = STEADY_TAU_S,
    margin: float = STEADY_MARGIN,
    forget_s: float = STEADY_FORGET_S,
) -> Steady:
    """The next :class:`Steady` after a frame at source time ``t`` with display ``probs``.

    The probabilities are averaged exponentially with a time constant of ``tau_s`` seconds (by
    the frames' own times, so a slower camera smooths over the same span); the label is their
    argmax, but changes only when the new leader is ahead of the shown label by ``margin``
    (hysteresis). A frame without probabilities keeps the state; after ``forget_s`` without any
    the next face starts afresh. ``tau_s`` 0 and ``margin`` 0: the frame's own argmax.
    """
    if tau_s < 0 or not 0 <= margin < 1:
        raise ValueError(f"need tau_s >= 0 and 0 <= margin < 1, got {tau_s}, {margin}")
    if probs is None:
        return prev
    p = np.asarray(probs, np.float64)
    fresh = prev.probs is None or prev.t is None or not 0 <= t - prev.t <= forget_s
    if fresh or prev.probs is None or prev.probs.shape != p.shape:
        return Steady(p, int(np.argmax(p)), t)
    dt = t - cast(float, prev.t)
    alpha = 1.0 if tau_s == 0 else 1.0 - float(np.exp(-dt / tau_s))
    avg = prev.probs + alpha * (p - prev.probs)
    lead, label = int(np.argmax(avg)), prev.label
    if label is None or avg[lead] - avg[label] > margin:
        label = lead
    return Steady(avg, label, t)


def label_changes(labels: Sequence[object | None]) -> int:
    """How often the shown label changes between consecutive frames that show one."""
    shown = [x for x in labels if x is not None]
    return sum(a != b for a, b in pairwise(shown))
