"""What the kiosk shows, and which teacher labels clips: pure choices over the models' probabilities.

* ``display: vfer | ifer | teacher | ensemble`` picks the probabilities the kiosk shows for a frame:
  v's streaming step, g on the frame, the bundle's external teacher on the face crop, or the
  ensemble (the mean of g's and the teacher's probabilities). A choice the bundle cannot compute
  (no teacher) falls back to ``vfer`` and says so.
* ``adaptation.teacher: g | external | ensemble`` picks the per-frame probabilities Eq. 1 averages
  for pseudo labels: g's, the external teacher's, or their mean.

The default display is ``teacher`` when the bundle carries one: on the London set (102 unseen
people, neutral vs smiling) it calls 95% of neutral photos neutral and 53% of smiling photos
happiness, where the synthetic-trained g and v fall far below (docs/reproduce.md, "The teacher").
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Display = Literal["vfer", "ifer", "teacher", "ensemble"]
PseudoTeacher = Literal["g", "external", "ensemble"]
DISPLAYS: tuple[str, ...] = get_args(Display)
DEFAULT_DISPLAY: Display = "teacher"
DEFAULT_PSEUDO_TEACHER: PseudoTeacher = "g"


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
