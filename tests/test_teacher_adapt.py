"""Pseudo labels from the aligned real-face teacher, end to end: the node records
WolfgangLanger_Pexels.mp4 with a MobileFaceNet bundle (the teacher's probabilities stored with
each frame, at its cadence), then ``python -m edge_node adapt --teacher external|ensemble`` picks
its Eq. 1 labels from them: the candidates per class are the argmax of each clip's mean of the
stored teacher (or teacher-and-g) probabilities, and the adaptation runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_node.display import ensemble
from edge_node.pipeline import Pipeline, PipelineOptions
from edge_node.segmenter import SegmentPolicy
from edge_node.sources import VideoFileSource
from edge_node.state import NodeState
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.bundles import cut_backbone, random_head
from vfer.bundle import write_bundle
from vfer.classes import EMOTIONS_4
from vfer.faces import FaceCropper
from vfer.heads_spec import ifer_spec, vfer_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("taught-node")
    bundle = write_bundle(
        root / "bundle",
        classes=EMOTIONS_4,
        backbone=cut_backbone(root / "backbone.tflite"),
        ifer_weights=random_head(ifer_spec(4), 1),
        vfer_weights=random_head(vfer_spec(4), 2),
        head_version="central-r0",
        teacher=require(paths.TEACHER_MOBILEFACENET),
    )
    db = root / "n.db"
    policy = SegmentPolicy(gap_s=1.0, max_s=5.0, min_frames=8)  # four clips of the video
    with (
        ClipStore(db) as store,
        FaceCropper.from_path(require(paths.FACE_MODEL), detect_every=4) as cropper,
    ):
        pipe = Pipeline(bundle.path, cropper, store, NodeState(), PipelineOptions(policy=policy))
        video = require(paths.VIDEO / "WolfgangLanger_Pexels.mp4")
        for frame in VideoFileSource(video).frames(threading.Event()):
            pipe.process(frame)
        pipe.finish()
        pipe.close()
    return bundle.path, db


def expected(db: Path, teacher: str) -> dict[str, int]:
    """The oracle: each clip's Eq. 1 class from the stored per-frame probabilities."""
    calls: Counter[str] = Counter()
    with ClipStore(db) as store:
        for row in store.clips():
            t, g = store.frame_teacher(row.id), store.frame_ifer(row.id)
            assert t is not None
            probs = t if teacher == "external" else ensemble(g, t)
            calls[EMOTIONS_4[int(np.argmax(probs.mean(axis=0)))]] += 1
    return {c: calls[c] for c in EMOTIONS_4}


def adapt(bundle: Path, db: Path, teacher: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(paths.REPO)}
    cmd = [sys.executable, "-m", "edge_node", "adapt", "--db", str(db), "--bundle", str(bundle)]
    cmd += ["--teacher", teacher, "--p-threshold", "0", "--min-clips", "1", "--gate", "off"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("teacher", ["external", "ensemble"])
def test_adaptation_takes_its_pseudo_labels_from_the_aligned_teacher(
    recorded: tuple[Path, Path], teacher: str, tmp_path: Path
) -> None:
    import shutil

    bundle, db = recorded
    mine = tmp_path / "bundle"
    shutil.copytree(bundle, mine)
    want = expected(db, teacher)
    assert sum(want.values()) == 4
    if teacher == "external":
        assert want["happiness"] >= 2  # she smiles from frame 260 on: the last two clips
    result = adapt(mine, db, teacher)
    assert result["candidates_per_class"] == want
    assert result["status"] == "adapted", result["reason"]


def test_distill_labels_with_the_nodes_preprocessing_of_the_aligned_teacher(tmp_path: Path) -> None:
    """``training distill --teacher`` with the MobileFaceNet: each photo's probabilities are what
    the kind's one preprocessing function (``mobilefacenet_input``, the node's) and the model give
    on the node's face, and the labels follow the photos (12 London people, neutral and smiling)."""
    import cv2

    from training.distill import label_sources
    from vfer.teachers import DnnTeacher, mobilefacenet_input

    photos = tmp_path / "photos"
    for n in range(1, 13):
        person = photos / f"{n:03d}"
        person.mkdir(parents=True)
        for folder, shot in (("neutral", "03"), ("smiling", "08")):
            src = require(paths.LONDON / folder / f"{n:03d}_{shot}.jpg")
            (person / f"{folder}.jpg").symlink_to(src)
    model, face_model = require(paths.TEACHER_MOBILEFACENET), require(paths.FACE_MODEL)
    got = label_sources(photos, model, face_model, EMOTIONS_4, subject_from="folder")
    assert len(got.probs) == 24
    with FaceCropper.from_path(face_model) as cropper, DnnTeacher(model, EMOTIONS_4) as t:
        for src, probs in list(got.probs.items())[:4]:
            rgb = cv2.cvtColor(cv2.imread(src), cv2.COLOR_BGR2RGB)
            face = cropper.crop(rgb)
            assert face is not None
            want = t.predict_input(mobilefacenet_input(rgb, face.keypoints))
            np.testing.assert_allclose(probs, want, atol=1e-4)
    labels = [(r.path.stem, r.label) for r in got.corpus.records]
    right = sum(1 for stem, label in labels if label == {"smiling": "happiness"}.get(stem, stem))
    assert right >= 20, sorted(labels)  # measured on all 102: .97 neutral, .86 smiling
