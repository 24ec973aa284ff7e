"""The teacher on the node: on a tracked face every ``teacher.every`` frames, held in between.

:class:`TeacherCadence` decides, frame by frame, whether the bundle's external teacher runs on the
face or its last probabilities are held: it runs on the first frame of a face (after a frame
without one, a cut in the source, or a gap in the frame numbers) and then on every ``every``-th
frame while the face stays. :class:`TeacherAhead` is the pipeline stage (:mod:`edge_node.stages`)
that does this in a thread of its own between stage E and stage B, with a teacher instance of its
own; stage B (:meth:`edge_node.pipeline.Pipeline.infer`) runs the same cadence itself when there is
no such stage (stages in turn) or the open clip's bundle carries another teacher.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from vfer.faces import FaceCrop
from vfer.teachers import TeacherModel

if TYPE_CHECKING:
    from edge_node.models import Models
    from edge_node.pipeline import Detected


def teacher_sha256(models: Models) -> str:
    """The sha256 of the bundle's teacher file ("" without one): probabilities computed by the
    same file can be reused."""
    info = models.bundle.manifest.teacher
    return models.bundle.manifest.files.get(info.file, "") if info is not None else ""


class TeacherCadence:
    """Whether the teacher runs on this frame's face or its last result is held."""

    def __init__(self, teacher: TeacherModel, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"teacher.every must be at least 1, got {every}")
        self.teacher, self.every = teacher, every
        self._held: np.ndarray | None = None
        self._last = -2  # frame index of the last call
        self._age = 0  # frames the held result has been shown
        self.runs = 0

    def __call__(
        self, rgb: np.ndarray, face: FaceCrop, index: int, cut: bool = False
    ) -> np.ndarray:
        """The teacher's probabilities for the face of frame ``index`` (run or held)."""
        same_face = index == self._last + 1 and not cut
        self._last = index
        if self._held is None or not same_face or self._age >= self.every:
            self._held = self.teacher.predict_face(rgb, face)
            self._age = 0
            self.runs += 1
        self._age += 1
        return self._held


class TeacherAhead:
    """Stage T: the teacher's probabilities for the face, computed ahead of stage B at the
    pipeline's cadence, with the active bundle's teacher in an instance of its own (one thread).
    Stage B takes them only while its own teacher is the same file."""

    def __init__(self, models: Models, every: int) -> None:
        self.sha256 = teacher_sha256(models)
        from edge_node.models import verified_teacher

        teacher = verified_teacher(models.bundle)
        if teacher is None:
            raise ValueError(f"{models.bundle.path}: stage T needs a bundle with a teacher")
        self.cadence = TeacherCadence(teacher, every)

    def __call__(self, d: Detected) -> Detected:
        if d.face is None:
            return d
        probs = self.cadence(d.frame.rgb, d.face, d.frame.index, d.frame.cut)
        return replace(d, teacher=probs, teacher_from=self.sha256)

    def close(self) -> None:
        self.cadence.teacher.close()
