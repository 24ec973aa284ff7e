"""The external teacher: class mapping (pure), the real FER2013 model on real faces, the bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import paths
from tests.support.bundles import build_bundle
from vfer.bundle import Bundle, BundleError, TeacherInfo, check_teacher
from vfer.classes import EMOTIONS_4, EMOTIONS_6
from vfer.teacher import FER2013_CLASSES, Teacher, map_probs, mapping, to_input


def teacher_file() -> Path:
    if not paths.TEACHER.is_file():
        pytest.skip("the FER2013 teacher is absent (../shared/models)")
    return paths.TEACHER


def test_mapping_drops_surprise_and_keeps_the_bundle_order() -> None:
    idx = mapping(FER2013_CLASSES, EMOTIONS_4)
    assert [FER2013_CLASSES[i] for i in idx] == list(EMOTIONS_4)
    assert "surprise" not in [FER2013_CLASSES[i] for i in mapping(FER2013_CLASSES, EMOTIONS_6)]
    with pytest.raises(ValueError, match="no class contempt"):
        mapping(FER2013_CLASSES, ("happiness", "contempt"))


@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=7, max_size=7),
    st.permutations(range(7)),
    st.integers(2, 6),
)
def test_map_probs_is_the_renormalized_subset(raw: list[float], order: list[int], k: int) -> None:
    idx = np.array(order[:k])
    out = map_probs(np.array(raw), idx)
    assert out.shape == (k,) and np.isclose(out.sum(), 1, atol=1e-5)
    kept = np.array(raw)[idx]
    if kept.sum() > 0:
        np.testing.assert_allclose(out, kept / kept.sum(), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(out, np.full(k, 1 / k))


def test_input_is_gray_64_in_minus_one_to_one() -> None:
    crop = np.zeros((224, 224, 3), np.uint8)
    crop[:, 112:] = 255
    x = to_input(crop, (64, 64))
    assert x.shape == (1, 64, 64, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    with pytest.raises(ValueError, match="RGB uint8"):
        to_input(np.zeros((64, 64), np.uint8), (64, 64))


@pytest.mark.slow
def test_real_teacher_on_real_faces() -> None:
    from vfer.faces import FaceCropper

    if not paths.FACE_MODEL.is_file() or not (paths.LONDON / "faces.csv").is_file():
        pytest.skip("face model or London set absent")
    with (
        FaceCropper.from_path(paths.FACE_MODEL) as cropper,
        Teacher.from_path(teacher_file(), EMOTIONS_4) as teacher,
    ):
        assert teacher.size == (64, 64)
        calls = {}
        for name in ("neutral/001_03.jpg", "smiling/001_08.jpg", "smiling/010_08.jpg"):
            bgr = cv2.imread(str(paths.LONDON / name))
            crop = cropper.crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            assert crop is not None
            p = teacher.predict_crop(crop.image)
            assert p.shape == (4,) and np.isclose(p.sum(), 1, atol=1e-5)
            assert teacher.raw(crop.image).shape == (7,)
            calls[name] = EMOTIONS_4[int(np.argmax(p))]
    assert calls["neutral/001_03.jpg"] == "neutral"
    assert "happiness" in (calls["smiling/001_08.jpg"], calls["smiling/010_08.jpg"])


@pytest.mark.slow
def test_models_that_do_not_fit_are_refused(backbone_src: Path) -> None:
    with pytest.raises(ValueError, match=r"input shape \[1, 224, 224, 3\].*grayscale"):
        Teacher.from_path(backbone_src, EMOTIONS_4)
    with pytest.raises(ValueError, match="7 outputs, but the teacher's class list has 6"):
        Teacher.from_path(teacher_file(), EMOTIONS_4, source_classes=EMOTIONS_6)
    with pytest.raises(ValueError, match="no class contempt"):
        Teacher.from_path(teacher_file(), ("neutral", "contempt"))
    with pytest.raises(BundleError, match=r"teacher .*input shape"):
        check_teacher(backbone_src, EMOTIONS_4)


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("taught")
    plain = build_bundle(root / "plain", EMOTIONS_4)
    out = root / "taught"
    env = {"PYTHONPATH": str(paths.REPO), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "training", "export-bundle", "--from-bundle", str(plain.path)]
    cmd += ["--teacher", str(teacher_file()), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher" in proc.stdout
    return Bundle.load(out)


@pytest.mark.slow
def test_export_bundle_carries_the_teacher_with_its_hash(taught: Bundle) -> None:
    from vfer.backbone import file_sha256

    m = taught.manifest
    assert m.files["teacher.tflite"] == file_sha256(paths.TEACHER)
    assert m.teacher is not None and m.teacher.source_classes == list(FER2013_CLASSES)
    assert set(taught.carried_files()) >= {"teacher.tflite", "backbone.tflite"}
    with taught.teacher() as t:
        assert t.classes == EMOTIONS_4


@pytest.mark.slow
def test_a_bundle_with_a_bad_teacher_is_refused(taught: Bundle, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(taught.path, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["teacher"]["source_classes"] = list(EMOTIONS_6)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"unusable teacher: .*7 outputs"):
        Bundle.load(bad)
    del manifest["files"]["teacher.tflite"]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no hash for the teacher"):
        Bundle.load(bad)
    assert TeacherInfo(source_classes=["a", "b"]).file == "teacher.tflite"


@pytest.mark.slow
def test_export_bundle_refuses_a_teacher_that_does_not_fit(
    taught: Bundle, backbone_src: Path, tmp_path: Path
) -> None:
    env = {"PYTHONPATH": str(paths.REPO), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "training", "export-bundle", "--from-bundle", str(taught.path)]
    cmd += ["--teacher", str(backbone_src), "--out", str(tmp_path / "x")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "Error:" in proc.stderr and "grayscale" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_distill_trains_a_bundle_from_unlabelled_photos(tmp_path: Path) -> None:
    from training.distill import teacher_label

    assert teacher_label(np.array([0.2, 0.6, 0.2]), ("a", "b", "c"), 0.5) == "b"
    assert teacher_label(np.array([0.4, 0.3, 0.3]), ("a", "b", "c"), 0.5) is None
    if not (paths.LONDON / "faces.csv").is_file() or not paths.FACE_MODEL.is_file():
        pytest.skip("London set or face model absent")
    photos = tmp_path / "photos"
    for n in range(1, 13):
        person = photos / f"{n:03d}"
        person.mkdir(parents=True)
        for folder, shot in (("neutral", "03"), ("smiling", "08")):
            (person / f"{shot}.jpg").symlink_to(paths.LONDON / folder / f"{n:03d}_{shot}.jpg")
    env = {**os.environ, "PYTHONPATH": str(paths.REPO), "FEDVFER_MODELS": str(paths.MODELS)}
    cmd = [sys.executable, "-m", "training", "distill", "--teacher", str(teacher_file())]
    cmd += ["--videos", str(photos), "--cache", str(tmp_path / "cache"), "--out"]
    cmd += [str(tmp_path / "bundle"), "--subject-from", "folder", "--quick"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.split("teacher labels: ", 1)[1].splitlines()[0])
    assert counts["label_neutral"] >= 8 and counts["label_happiness"] >= 3
    assert (
        sum(v for k, v in counts.items() if k.startswith("label_"))
        + counts.get("below_threshold", 0)
        + counts.get("no_face", 0)
        == 24
    )  # every photo is accounted for
    bundle = Bundle.load(tmp_path / "bundle")
    assert bundle.has_teacher and bundle.manifest.notes["corpus"] == "distilled"


@pytest.mark.slow
def test_a_derived_bundle_keeps_the_teacher(taught: Bundle, tmp_path: Path) -> None:
    """What the node's personalization and central installs do: carried files plus a new v."""
    from vfer.bundle import VFER_STEP, VFER_WEIGHTS, write_files

    files = {
        **taught.carried_files(),
        VFER_STEP: taught.file(VFER_STEP),
        VFER_WEIGHTS: taught.file(VFER_WEIGHTS),
    }
    derived = write_files(
        tmp_path / "derived",
        files,
        classes=taught.classes,
        head_version="local-x",
        federation_round=0,
        personalized=True,
        parent=taught.manifest.head_version,
        notes={},
        teacher=taught.manifest.teacher,
    )
    assert derived.has_teacher
    assert derived.manifest.files["teacher.tflite"] == taught.manifest.files["teacher.tflite"]
    with pytest.raises(BundleError, match="go together"):
        write_files(
            tmp_path / "bad",
            files,
            classes=taught.classes,
            head_version="x",
            federation_round=0,
            personalized=True,
            parent=None,
            notes={},
        )
