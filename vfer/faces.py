"""Face detection and cropping: MediaPipe's BlazeFace short-range detector.

One call from a decoded RGB frame to a square 224x224 face crop with a margin, or None.
mediapipe 1.2 ships no model files: get ``face_detection_short_range.tflite`` as the README says
and pass its path.

Two runtimes run the same model file with the same result (``tests/test_blazeface.py``: the same
faces on every frame of the real videos, boxes within a pixel): ``litert`` (the default,
:mod:`vfer.blazeface`), on the LiteRT interpreter the node already holds for f, and
``mediapipe``, the Tasks ``FaceDetector``, which maps ``libmediapipe.so`` (38-73 MB resident) into
the process for it. Both give each face's 6 keypoints (:data:`vfer.blazeface.KEYPOINTS`) in frame
pixels (:class:`Face`, ``FaceCrop.keypoints``), what the aligned teacher is aligned by.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from vfer.blazeface import BlazeFace, Keypoints
from vfer.tracking import BoxFollower, move_keypoints

CROP_SIZE = 224
#: Where MediaPipe publishes the model (README: how a user gets it).
MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/"
    "float16/latest/blaze_face_short_range.tflite"
)


class _NotLoaded(types.ModuleType):
    """Stands in for a module mediapipe imports but the face detector never uses."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError(
            f"{self.__name__} was kept out of this process when mediapipe was imported "
            "(vfer.faces.import_mediapipe); mediapipe's drawing helpers are not available here"
        )


def import_mediapipe() -> Any:
    """``mediapipe``, without importing TensorFlow or matplotlib as a side effect.

    ``mediapipe.tasks.python.metadata`` tries ``import tensorflow`` only to open files through
    ``tf.io.gfile`` and falls back to ``open`` on ImportError. In a process that has not loaded
    TensorFlow (the node's capture process) TensorFlow is masked for the duration of the import,
    which keeps about 900 MB out of the capture process; a process that already holds TensorFlow
    imports mediapipe as usual. ``mediapipe.tasks.python.vision`` also imports its drawing
    helpers, which import ``matplotlib.pyplot`` (and Pillow): about 40 MB the detector never uses.
    While mediapipe is imported they see a stand-in that raises if ever used. TensorFlow and
    matplotlib stay importable afterwards.
    """
    if "mediapipe" in sys.modules or "tensorflow" in sys.modules:
        import mediapipe

        return mediapipe
    stand_ins: dict[str, types.ModuleType] = {}
    if "matplotlib" not in sys.modules:
        mpl, plt = _NotLoaded("matplotlib"), _NotLoaded("matplotlib.pyplot")
        mpl.__dict__["pyplot"] = plt
        stand_ins = {"matplotlib": mpl, "matplotlib.pyplot": plt}
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # `import tensorflow` -> ImportError
    sys.modules.update(stand_ins)
    try:
        import mediapipe
        import mediapipe.tasks.python.vision  # the part that reaches metadata.py and matplotlib
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return mediapipe


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the frame it was found in."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2


@dataclass(frozen=True)
class Face:
    """One detected face: box, score and the 6 keypoints (vfer.blazeface.KEYPOINTS, frame px)."""

    box: Box
    score: float
    keypoints: Keypoints


@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray  # (224, 224, 3) uint8 RGB
    box: Box  # the face box (detected, or followed from the last detection)
    score: float  # the detector's score (of the last detection when followed)
    followed: bool = False  # True: found by following the box, not by the detector
    #: the 6 keypoints (vfer.blazeface.KEYPOINTS) in pixels of the frame, moved with the box
    #: when followed; what the aligned teacher (vfer.align) is aligned by
    keypoints: Keypoints = ()


@dataclass(frozen=True)
class FaceCropperOptions:
    model_path: Path
    #: 0.7: on the test videos real faces score 0.84 and up, the worst false positive 0.61
    min_confidence: float = 0.7
    margin: float = 0.25
    #: which face when several: the largest one, or the one nearest the previous crop's center
    select: Literal["largest", "tracked"] = "largest"
    #: run the detector every N frames and follow the box in between (1: detect every frame);
    #: a lost box (follow score below ``follow_min_score``) is detected again on that frame
    detect_every: int = 1
    follow_min_score: float = 0.6
    #: which runtime runs the detector model (the same faces either way; module docstring)
    detector: Literal["litert", "mediapipe"] = "litert"


def square_box(box: Box, margin: float, frame_w: int, frame_h: int) -> tuple[int, int, int]:
    """A square (x0, y0, side) around ``box`` grown by ``margin`` of its longer side.

    The square may reach outside the frame; :func:`crop_square` pads with black there.
    """
    cx, cy = box.center
    side = max(1, round(max(box.width, box.height) * (1.0 + margin)))
    return round(cx - side / 2), round(cy - side / 2), side


def crop_square(
    frame: np.ndarray, x0: int, y0: int, side: int, size: int = CROP_SIZE
) -> np.ndarray:
    """Cut ``side`` x ``side`` at (x0, y0), zero-padded outside the frame, resized to ``size``."""
    h, w = frame.shape[:2]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    if x0 >= 0 and y0 >= 0 and x0 + side <= w and y0 + side <= h:  # inside: no padded copy
        return cv2.resize(frame[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=interp)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (size, size), interpolation=interp)


class FaceCropper:
    """Finds the face in a frame and returns a square 224x224 crop of it.

    Use as a context manager or call :meth:`close`. The detector sees one frame at a time, so
    frames need no timestamps and any order is fine.
    """

    def __init__(self, options: FaceCropperOptions) -> None:
        if not Path(options.model_path).is_file():
            raise FileNotFoundError(
                f"face detector model {options.model_path} not found; get "
                f"face_detection_short_range.tflite from {MODEL_URL} (see README)"
            )
        if not 0.0 < options.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in (0, 1), got {options.min_confidence}")
        if options.detector not in ("litert", "mediapipe"):
            raise ValueError(f"detector must be litert or mediapipe, got {options.detector!r}")
        if options.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {options.detect_every}")
        self.options = options
        self._detector: Any = (
            _mediapipe_detector(options) if options.detector == "mediapipe" else None
        )
        self._blazeface: BlazeFace | None = (
            BlazeFace(options.model_path, options.min_confidence)
            if options.detector == "litert"
            else None
        )
        self._last_center: tuple[float, float] | None = None
        self._follower = BoxFollower(min_score=options.follow_min_score)
        self._followed = 0  # frames followed since the last detection
        self._anchor: tuple[Face, int, int] | None = None  # detected face, offset x, y
        self.detections = 0  # detector runs (the benchmark counts them)

    @classmethod
    def from_path(
        cls,
        model_path: str | os.PathLike[str],
        min_confidence: float = 0.7,
        margin: float = 0.25,
        select: Literal["largest", "tracked"] = "largest",
        detect_every: int = 1,
        detector: Literal["litert", "mediapipe"] = "litert",
    ) -> FaceCropper:
        return cls(
            FaceCropperOptions(
                Path(model_path), min_confidence, margin, select, detect_every, detector=detector
            )
        )

    def detect(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        """Every face in an RGB uint8 frame, as (box, score)."""
        return [(f.box, f.score) for f in self.detect_faces(rgb)]

    def detect_faces(self, rgb: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 frame, best first, with its keypoints in frame pixels."""
        if self._detector is None and self._blazeface is None:
            raise ValueError("this FaceCropper is closed")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(
                f"detect() takes an RGB uint8 (H, W, 3) frame, got {rgb.dtype} {rgb.shape}"
            )
        self.detections += 1
        if self._blazeface is not None:
            return [
                Face(Box(d.x, d.y, d.width, d.height), d.score, d.keypoints)
                for d in self._blazeface.detect(rgb)
            ]
        mp = sys.modules["mediapipe"]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._detector.detect(image)
        h, w = rgb.shape[:2]
        faces = []
        for det in result.detections:
            bb = det.bounding_box
            score = float(det.categories[0].score) if det.categories else 0.0
            # MediaPipe gives keypoints normalized to the frame: to pixels, as the LiteRT path
            kps = tuple((float(k.x) * w, float(k.y) * h) for k in det.keypoints or ())
            faces.append(Face(Box(bb.origin_x, bb.origin_y, bb.width, bb.height), score, kps))
        return faces

    def crop(self, rgb: np.ndarray) -> FaceCrop | None:
        """The chosen face as a 224x224 crop, or None when there is no face.

        With ``detect_every`` N > 1 the box found by the detector is followed on the next N - 1
        frames (:class:`vfer.tracking.BoxFollower`); the detector runs again after that, and at
        once when the follower loses the face.
        """
        followed = self._follow(rgb)
        if followed is not None:
            return followed
        faces = self.detect_faces(rgb)
        self._followed = 0
        if not faces:
            self._last_center = None
            self._anchor = None
            self._follower.reset()
            return None
        face = self._choose(faces)
        box = face.box
        self._last_center = box.center
        if self.options.detect_every > 1:
            self._follower.anchor(rgb, (box.x, box.y, box.width, box.height))
            if self._follower.anchored:
                ox, oy = self._follower.origin
                self._anchor = (face, ox - box.x, oy - box.y)
        return self._cut(rgb, face, followed=False)

    def _follow(self, rgb: np.ndarray) -> FaceCrop | None:
        if self._anchor is None or self._followed >= self.options.detect_every - 1:
            return None
        found = self._follower.follow(rgb)
        if found is None:
            return None
        anchor, ox, oy = self._anchor
        a = anchor.box
        box = Box(found.x - ox, found.y - oy, a.width, a.height)
        self._followed += 1
        self._last_center = box.center
        kps = move_keypoints(anchor.keypoints, (a.x, a.y, a.width, a.height), _xywh(box))
        return self._cut(rgb, Face(box, anchor.score, kps), followed=True)

    def _cut(self, rgb: np.ndarray, face: Face, *, followed: bool) -> FaceCrop:
        box = face.box
        x0, y0, side = square_box(box, self.options.margin, rgb.shape[1], rgb.shape[0])
        image = crop_square(rgb, x0, y0, side)
        return FaceCrop(image, box, face.score, followed, face.keypoints)

    def _choose(self, faces: list[Face]) -> Face:
        if self.options.select == "tracked" and self._last_center is not None:
            lx, ly = self._last_center
            return min(
                faces, key=lambda f: (f.box.center[0] - lx) ** 2 + (f.box.center[1] - ly) ** 2
            )
        return max(faces, key=lambda f: f.box.area)

    def reset(self) -> None:
        """Forget the tracked face (a new clip starts): the next frame is detected."""
        self._last_center = None
        self._anchor = None
        self._followed = 0
        self._follower.reset()

    def close(self) -> None:
        self._blazeface = None
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceCropper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _xywh(box: Box) -> tuple[int, int, int, int]:
    return box.x, box.y, box.width, box.height


def _mediapipe_detector(options: FaceCropperOptions) -> Any:
    """MediaPipe's Tasks ``FaceDetector`` in IMAGE mode (frames need no timestamps)."""
    import_mediapipe()
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import FaceDetector, FaceDetectorOptions, RunningMode

    return FaceDetector.create_from_options(
        FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(options.model_path)),
            running_mode=RunningMode.IMAGE,
            min_detection_confidence=options.min_confidence,
        )
    )
