"""Face crops from real videos through the real MediaPipe detector and backbone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import require
from tests.support import paths
from training.backbone_cut import cut_at_pool
from vfer.backbone import Backbone
from vfer.faces import Box, FaceCropper, crop_square, square_box


def frames(path: Path) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


@pytest.fixture(scope="module")
def cropper() -> Iterator[FaceCropper]:
    with FaceCropper.from_path(require(paths.FACE_MODEL)) as fc:
        yield fc


def test_every_crema_d_frame_gets_a_crop_and_an_embedding(
    cropper: FaceCropper, tmp_path: Path
) -> None:
    clip = require(paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv")
    backbone = tmp_path / "backbone.tflite"
    backbone.write_bytes(cut_at_pool(require(paths.BACKBONE_INT8).read_bytes()))
    embeddings = []
    with Backbone.from_path(backbone) as f:
        for rgb in frames(clip):
            crop = cropper.crop(rgb)
            assert crop is not None
            assert crop.image.shape == (224, 224, 3) and crop.image.dtype == np.uint8
            assert crop.score > 0.7
            embeddings.append(f.embed(crop.image))
    assert len(embeddings) == 56
    e = np.stack(embeddings)
    assert e.shape == (56, 1280) and np.isfinite(e).all() and (e.std(axis=0) > 0).any()


def test_no_face_video_gets_no_crop(cropper: FaceCropper) -> None:
    found = [cropper.crop(rgb) for rgb in frames(require(paths.VIDEO / "no_face.mp4"))]
    assert len(found) > 50
    assert all(c is None for c in found)


def test_bad_frames_and_closed_cropper_raise(face_model: Path) -> None:
    fc = FaceCropper.from_path(face_model)
    with pytest.raises(ValueError, match="RGB uint8"):
        fc.crop(np.zeros((10, 10), np.uint8))
    fc.close()
    with pytest.raises(ValueError, match="closed"):
        fc.crop(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="face_detection_short_range"):
        FaceCropper.from_path(face_model.parent / "nope.tflite")


def test_square_box_grows_by_margin_and_centers() -> None:
    x0, y0, side = square_box(Box(100, 50, 40, 60), 0.5, 640, 480)
    assert side == 90
    assert (x0 + side / 2, y0 + side / 2) == (120, 80)


def test_crop_square_pads_outside_the_frame() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    out = crop_square(frame, -50, -50, 100, size=100)
    assert out.shape == (100, 100, 3)
    assert out[10, 10].tolist() == [0, 0, 0]  # outside: black
    assert out[90, 90].tolist() == [200, 200, 200]  # inside: the frame


def test_crop_square_inside_the_frame_equals_the_padded_path() -> None:
    """The no-copy path for a box inside the frame gives exactly what padding would."""
    frame = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for x0, y0, side in ((10, 20, 300), (0, 0, 480), (340, 180, 300), (100, 100, 150)):
        padded = np.zeros((side, side, 3), np.uint8)
        padded[:] = frame[y0 : y0 + side, x0 : x0 + side]
        interp = cv2.INTER_AREA if side > 224 else cv2.INTER_LINEAR
        want = cv2.resize(padded, (224, 224), interpolation=interp)
        np.testing.assert_array_equal(crop_square(frame, x0, y0, side), want)


def test_mediapipe_comes_without_tensorflow_or_matplotlib_and_both_stay_importable() -> None:
    """The capture process's import of the detector (a fresh interpreter, as the node's)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vfer.faces import import_mediapipe\n"
        "import_mediapipe()\n"
        "from mediapipe.tasks.python.vision import FaceDetector\n"
        "assert 'tensorflow' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "from mediapipe.tasks.python.vision import drawing_utils\n"
        "try:\n"
        "    drawing_utils.plt.figure\n"
        "except ImportError as exc:\n"
        "    assert 'kept out' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('the stand-in answered')\n"
        "import matplotlib.pyplot as plt\n"
        "assert callable(plt.figure)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
