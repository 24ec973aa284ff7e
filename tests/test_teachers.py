"""The teacher kinds: recognised by shape, refused with what was expected, one mapping table, and
the preprocessing of each kind pinned on real London photos (golden values)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import require
from tests.support import paths
from vfer import onnx_shapes
from vfer.align import BLAZEFACE_TEMPLATE, TEMPLATE_112, similarity
from vfer.classes import EMOTIONS_4, EMOTIONS_6
from vfer.faces import FaceCrop, FaceCropper
from vfer.teacher import Teacher, mapping, to_input
from vfer.teachers import (
    FER2013,
    KINDS,
    MOBILEFACENET,
    DnnTeacher,
    TeacherFileError,
    identify,
    mobilefacenet_input,
    open_teacher,
)

# --- the one mapping table ------------------------------------------------------------------

#: the models' own label strings, in their output order (fer's and OpenCV Zoo's demos)
UPSTREAM = {
    "fer2013": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    "mobilefacenet": ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"),
}
AS_CLASS = {"angry": "anger", "fearful": "fear", "happy": "happiness", "sad": "sadness"}
AS_CLASS |= {"surprised": "surprise"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_names_its_outputs_in_the_models_own_order(kind: str) -> None:
    table = KINDS[kind].source_classes
    assert table == tuple(AS_CLASS.get(c, c) for c in UPSTREAM[kind])
    for classes in (EMOTIONS_4, EMOTIONS_6):
        idx = mapping(table, classes)
        assert [table[i] for i in idx] == list(classes)  # the bundle's order
        assert table.index("surprise") not in idx  # dropped, the rest renormalized


# --- recognised by shape, refused with what was expected ------------------------------------


def test_kinds_are_recognised_by_their_shapes_not_their_names(tmp_path: Path) -> None:
    fer, mfn = require(paths.TEACHER), require(paths.TEACHER_MOBILEFACENET)
    assert identify(fer) is FER2013 and identify(mfn) is MOBILEFACENET
    swapped = tmp_path / "teacher.tflite"  # an ONNX file under a TFLite name
    shutil.copyfile(mfn, swapped)
    assert identify(swapped) is MOBILEFACENET
    shutil.copyfile(fer, tmp_path / "model.onnx")
    assert identify(tmp_path / "model.onnx") is FER2013


@pytest.mark.parametrize(
    ("model", "got"),
    [
        (paths.BACKBONE_INT8, r"tflite, input shape \[1, 224, 224, 3\], output \[1, 1001\]"),
        (paths.FACE_MODEL, r"input shape \[1, 128, 128, 3\], output \[1, 896, 16\]"),
        (paths.YUNET, r"onnx, input shape \[1, 3, 640, 640\]"),
    ],
)
def test_a_model_of_another_shape_is_refused_saying_what_was_expected(
    model: Path, got: str
) -> None:
    with pytest.raises(TeacherFileError, match=got) as err:
        identify(require(model))
    text = str(err.value)
    assert text.startswith(str(model)) and "not a teacher this software knows" in text
    assert "input shape [1, 64, 64, 1] grayscale" in text
    assert "input shape [1, 3, 112, 112] aligned RGB" in text


@pytest.mark.parametrize("model", [paths.TEACHER, paths.TEACHER_MOBILEFACENET])
def test_a_truncated_or_missing_file_is_refused_naming_the_published_file(
    model: Path, tmp_path: Path
) -> None:
    data = require(model).read_bytes()
    cut = tmp_path / model.name
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TeacherFileError) as err:
        identify(cut)
    text = str(err.value)
    assert text.startswith(str(cut)) and ("truncated" in text or "not a TFLite model" in text)
    with pytest.raises(TeacherFileError, match="no such file") as err:
        identify(tmp_path / "absent.onnx")
    assert MOBILEFACENET.published_sha256 in str(err.value)
    assert FER2013.published_sha256 in str(err.value)
    (tmp_path / "notes.txt").write_text("not a model at all\n")
    with pytest.raises(TeacherFileError, match="neither a TFLite nor an ONNX model"):
        identify(tmp_path / "notes.txt")


def test_every_cut_of_the_onnx_graph_is_an_error_never_a_guess() -> None:
    data = require(paths.TEACHER_MOBILEFACENET).read_bytes()
    inputs, outputs = onnx_shapes.read(data)
    assert [t.shape for t in inputs] == [(1, 3, 112, 112)] and inputs[0].elem_type == 1
    assert [t.shape for t in outputs] == [(1, 7)]
    for end in (0, 1, 2, 100, 5000, len(data) // 3, len(data) - 1_000):
        with pytest.raises(onnx_shapes.OnnxError):
            onnx_shapes.read(data[:end])


def _field(number: int, payload: bytes) -> bytes:
    def varint(v: int) -> bytes:
        out = b""
        while True:
            byte, v = v & 0x7F, v >> 7
            out += bytes([byte | (0x80 if v else 0)])
            if not v:
                return out

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_initializers_listed_as_inputs_are_not_inputs_and_free_dims_are_unknown() -> None:
    """A hand-built ModelProto: graph inputs 'x' [N, 3] (N free) and 'w' (a weight)."""
    dims = _field(1, _field(2, b"N")) + _field(1, b"\x08\x03")  # dim_param N, dim_value 3
    tensor = b"\x08\x01" + _field(2, dims)  # elem_type 1, shape
    x = _field(1, b"x") + _field(2, _field(1, tensor))
    w = _field(1, b"w") + _field(2, _field(1, tensor))
    weight = _field(8, b"w")  # TensorProto.name
    graph = _field(5, weight) + _field(11, x) + _field(11, w) + _field(12, x)
    inputs, outputs = onnx_shapes.read(b"\x08\x07" + _field(7, graph))  # ir_version 7
    assert [(t.name, t.shape) for t in inputs] == [("x", (onnx_shapes.UNKNOWN, 3))]
    assert [t.name for t in outputs] == ["x"]


# --- alignment ------------------------------------------------------------------------------


@given(
    st.floats(-np.pi, np.pi),
    st.floats(0.2, 5.0),
    st.tuples(st.floats(-300, 300), st.floats(-300, 300)),
    st.integers(0, 2**31 - 1),
)
def test_similarity_recovers_a_known_transform(
    angle: float, scale: float, shift: tuple[float, float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 500, (5, 2))
    if np.ptp(src, axis=0).min() < 5:
        return
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    truth = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
    dst = src @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(similarity(src, dst), truth, atol=1e-6 * max(1.0, scale))


def test_similarity_refuses_what_is_no_transform() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity(np.ones((4, 2)), BLAZEFACE_TEMPLATE)
    with pytest.raises(ValueError, match="point arrays"):
        similarity(np.ones((4, 2)), TEMPLATE_112)
    with pytest.raises(ValueError, match="finite"):
        similarity(np.array([[0, 0], [np.nan, 1]]), TEMPLATE_112[:2])


def test_the_mouth_centre_sits_on_the_midpoint_of_the_template_corners() -> None:
    assert np.allclose(BLAZEFACE_TEMPLATE[3], (TEMPLATE_112[3] + TEMPLATE_112[4]) / 2)
    assert np.allclose(BLAZEFACE_TEMPLATE[:3], TEMPLATE_112[:3])


# --- golden preprocessing on real photos ----------------------------------------------------

#: per photo, through the LiteRT BlazeFace (min_confidence 0.7, margin 0.25): the MobileFaceNet
#: input's channel means (R, G, B) and 4x4 block means of its channel mean, its 7 logits, and the
#: 4x4 block means of the FER2013 input. Inputs are in [-1, 1].
GOLDEN = {
    "neutral/001_03.jpg": {
        "rgb": [0.19, 0.05, -0.04],
        "grid": [
            [-0.26, 0.01, 0.12, -0.70],
            [0.04, 0.15, 0.19, -0.38],
            [0.42, 0.22, 0.28, -0.01],
            [0.51, 0.14, 0.16, 0.18],
        ],
        "logits": [-3.6, -0.1, -5.2, 1.8, 8.8, -2.1, -0.2],
        "fer": [
            [-0.32, 0.38, 0.27, -0.60],
            [0.18, 0.21, 0.17, -0.06],
            [0.31, 0.22, 0.25, 0.09],
            [0.54, 0.13, 0.08, 0.33],
        ],
    },
    "smiling/001_08.jpg": {
        "rgb": [0.23, 0.09, 0.00],
        "grid": [
            [-0.21, 0.04, 0.12, -0.71],
            [0.12, 0.17, 0.19, -0.24],
            [0.51, 0.20, 0.31, -0.01],
            [0.59, 0.33, 0.21, 0.10],
        ],
        "logits": [-4.2, -1.0, -2.4, 9.2, 2.1, -1.8, -1.1],
        "fer": [
            [-0.37, 0.47, 0.19, -0.62],
            [0.19, 0.21, 0.19, -0.06],
            [0.38, 0.22, 0.28, 0.07],
            [0.63, 0.19, 0.14, 0.25],
        ],
    },
    "smiling/010_08.jpg": {
        "rgb": [0.36, 0.22, 0.16],
        "grid": [
            [0.33, 0.13, 0.10, 0.18],
            [0.15, 0.25, 0.20, -0.05],
            [0.39, 0.28, 0.25, 0.19],
            [0.65, 0.24, 0.20, 0.47],
        ],
        "logits": [-1.1, 0.8, -1.3, 6.2, -0.7, -2.3, -1.0],
        "fer": [
            [0.13, 0.41, 0.27, 0.05],
            [0.22, 0.23, 0.17, 0.10],
            [0.54, 0.23, 0.20, 0.49],
            [0.64, 0.27, 0.11, 0.59],
        ],
    },
}


def grid(image: np.ndarray, n: int = 4) -> np.ndarray:
    h, w = image.shape
    return image.reshape(n, h // n, n, w // n).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def london_faces() -> dict[str, tuple[np.ndarray, FaceCrop]]:
    out = {}
    with FaceCropper.from_path(require(paths.FACE_MODEL)) as cropper:
        for name in GOLDEN:
            bgr = cv2.imread(str(require(paths.LONDON / name)))
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            face = cropper.crop(rgb)
            assert face is not None and len(face.keypoints) == 6
            out[name] = (rgb, face)
    return out


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_preprocessing_of_each_kind(
    london_faces: dict[str, tuple[np.ndarray, FaceCrop]], name: str
) -> None:
    rgb, face = london_faces[name]
    want = GOLDEN[name]
    x = mobilefacenet_input(rgb, face.keypoints)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_allclose(x[0].mean(axis=(1, 2)), want["rgb"], atol=0.02)  # RGB, not BGR
    np.testing.assert_allclose(grid(x[0].mean(axis=0)), want["grid"], atol=0.02)
    fer = to_input(face.image, (64, 64))
    np.testing.assert_allclose(grid(fer[0, :, :, 0]), want["fer"], atol=0.02)
    with DnnTeacher(require(paths.TEACHER_MOBILEFACENET), EMOTIONS_4) as teacher:
        np.testing.assert_allclose(teacher.raw_input(x), want["logits"], atol=0.3)


def test_the_aligned_teacher_calls_real_faces(
    london_faces: dict[str, tuple[np.ndarray, FaceCrop]],
) -> None:
    threads = cv2.getNumThreads()
    with open_teacher(require(paths.TEACHER_MOBILEFACENET), EMOTIONS_4) as teacher:
        assert isinstance(teacher, DnnTeacher) and teacher.kind is MOBILEFACENET
        calls = {}
        for name, (rgb, face) in london_faces.items():
            p = teacher.predict_face(rgb, face)
            assert p.shape == (4,) and np.isclose(p.sum(), 1, atol=1e-5)
            calls[name] = EMOTIONS_4[int(np.argmax(p))]
        with pytest.raises(ValueError, match="predict_face"):
            teacher.predict_crop(face.image)
    assert cv2.getNumThreads() == threads  # its one thread was the forward pass's only
    assert calls == {
        "neutral/001_03.jpg": "neutral",
        "smiling/001_08.jpg": "happiness",
        "smiling/010_08.jpg": "happiness",
    }


def test_the_fer2013_kind_is_todays_teacher(
    london_faces: dict[str, tuple[np.ndarray, FaceCrop]],
) -> None:
    with (
        open_teacher(require(paths.TEACHER), EMOTIONS_4) as teacher,
        Teacher.from_path(paths.TEACHER, EMOTIONS_4) as today,
    ):
        assert teacher.kind is FER2013
        for rgb, face in london_faces.values():
            np.testing.assert_array_equal(
                teacher.predict_face(rgb, face), today.predict_crop(face.image)
            )


def test_open_teacher_holds_the_file_to_the_recorded_kind_and_table() -> None:
    mfn = require(paths.TEACHER_MOBILEFACENET)
    with pytest.raises(
        TeacherFileError, match=r"MobileFaceNet.*but the manifest records the FER2013"
    ):
        open_teacher(mfn, EMOTIONS_4, kind="fer2013")
    shuffled = list(MOBILEFACENET.source_classes[::-1])
    with pytest.raises(TeacherFileError, match="its outputs are anger, disgust, fear"):
        open_teacher(mfn, EMOTIONS_4, source_classes=shuffled)
    with pytest.raises(ValueError, match="7 outputs, but the teacher's class list has 6"):
        open_teacher(mfn, EMOTIONS_4, source_classes=EMOTIONS_6)
    with pytest.raises(TeacherFileError, match="unknown teacher kind 'yunet'"):
        open_teacher(mfn, EMOTIONS_4, kind="yunet")
