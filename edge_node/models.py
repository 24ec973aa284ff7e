"""One bundle's models as the node runs them: f, g, v's streaming step and the optional teacher.

:class:`Models` is what the capture loop (:mod:`edge_node.pipeline`) and ``python -m edge_node
evaluate`` (:mod:`edge_node.evaluate`) both run: :meth:`Models.predict` takes one face crop through
every model, so a frame is scored the same way live and offline. :func:`bundle_fingerprint` tells
the loop when the bundle on disk changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_node.bundles import BundleHome
from edge_node.state import ModelInfo
from vfer.backbone import Backbone, file_sha256
from vfer.bundle import BACKBONE, IFER_TFLITE, MANIFEST, VFER_STEP, Bundle, BundleError
from vfer.faces import FaceCrop
from vfer.runtime import IferHead, VferStep
from vfer.teachers import TeacherModel


def bundle_fingerprint(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(resolved folder, manifest.json mtime in ns): changes when a symlink is switched."""
    real = os.path.realpath(path)
    try:
        return real, os.stat(os.path.join(real, MANIFEST)).st_mtime_ns
    except OSError:
        return real, -1


def verified_teacher(bundle: Bundle, num_threads: int = 1) -> TeacherModel | None:
    """The bundle's teacher, opened only after its file's sha256 matched the manifest's again
    (cheap: about 1.4 MB), even for a bundle verified when it was installed; None without one."""
    info = bundle.manifest.teacher
    if info is None:
        return None
    path, expected = bundle.file(info.file), bundle.manifest.files.get(info.file, "")
    actual = file_sha256(path) if path.is_file() else "missing"
    if actual != expected:
        raise BundleError(
            f"{path}: the teacher's sha256 is {actual}, the manifest expects {expected or 'none'}"
            " (the file was changed after the bundle was written: reinstall the bundle)"
        )
    teacher: TeacherModel = bundle.teacher(num_threads=num_threads)
    return teacher


class LazyBackbone:
    """f, opened on its first use. With stage E embedding ahead (:mod:`edge_node.stages`) the
    capture loop's own f runs only without stage E, or after a switch to a bundle whose f differs
    from stage E's, so its interpreter (10-25 MB) is not held until then."""

    def __init__(self, path: Path, num_threads: int) -> None:
        self.path, self.num_threads = path, num_threads
        self._backbone: Backbone | None = None

    def embed(self, crop: np.ndarray) -> np.ndarray:
        if self._backbone is None:
            self._backbone = Backbone.from_path(self.path, self.num_threads)
        return self._backbone.embed(crop)

    @property
    def loaded(self) -> bool:
        return self._backbone is not None

    def close(self) -> None:
        if self._backbone is not None:
            self._backbone.close()
            self._backbone = None


@dataclass
class Predictions:
    """Every model's output for one face frame; more heads add fields here."""

    embedding: np.ndarray  # f
    ifer: np.ndarray  # g, this frame
    vfer: np.ndarray  # v, the clip so far (v's step carries its state between frames)
    teacher: np.ndarray | None = None  # the bundle's external teacher, this frame


@dataclass
class Models:
    """One bundle's f, g and v-step, loaded together (f when first used)."""

    bundle: Bundle
    backbone: LazyBackbone
    ifer: IferHead
    vfer: VferStep
    fingerprint: tuple[str, int]
    teacher: TeacherModel | None = None  # the bundle's external teacher, run on each face

    @classmethod
    def load(cls, path: str | os.PathLike[str], num_threads: int = 2) -> Models:
        fingerprint = bundle_fingerprint(path)
        bundle = BundleHome(path).open(fingerprint[0])  # verified once per installed version
        return cls(
            bundle,
            LazyBackbone(bundle.file(BACKBONE), num_threads),
            IferHead.from_path(bundle.file(IFER_TFLITE)),
            VferStep.from_path(bundle.file(VFER_STEP)),
            fingerprint,
            verified_teacher(bundle),
        )

    @property
    def backbone_sha256(self) -> str:
        """The sha256 of f's file: an embedding computed by the same file can be reused."""
        return self.bundle.manifest.files[BACKBONE]

    def predict(
        self,
        rgb: np.ndarray,
        face: FaceCrop,
        embedding: np.ndarray | None = None,
        teacher: np.ndarray | None = None,
    ) -> Predictions:
        """One face of an RGB frame through f (unless ``embedding`` is f of its crop already), g,
        v's step and the teacher (unless ``teacher`` is its output already; it reads the frame:
        the aligned kind needs the keypoints). v carries its state to the next call until
        :meth:`VferStep.reset`."""
        if embedding is None:
            embedding = self.backbone.embed(face.image)
        if teacher is None and self.teacher is not None:
            teacher = self.teacher.predict_face(rgb, face)
        return Predictions(
            embedding,
            self.ifer.predict_frame(embedding),
            self.vfer.step(embedding),
            teacher if self.teacher is not None else None,
        )

    def info(self) -> ModelInfo:
        m = self.bundle.manifest
        return ModelInfo(
            head_version=m.head_version,
            federation_round=m.federation_round,
            personalized=m.personalized,
            bundle_id=self.bundle.bundle_id,
            classes=self.bundle.classes,
        )

    def close(self) -> None:
        for model in (self.backbone, self.ifer, self.vfer, self.teacher):
            if model is not None:
                model.close()
