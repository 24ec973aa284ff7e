"""Stage T (edge_node.teacher_stage): the teacher at ``teacher.every`` in a thread of its own gives
exactly what stage B gives running the same cadence itself, and runs once per N face frames."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge_node.config import load_node_config
from edge_node.service import run_node
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles
from vfer.bundle import BACKBONE, Bundle, write_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> tuple[EdgeBundles, Path]:
    bundles = build_bundles(tmp_path_factory.getbasetemp())
    plain = Bundle.load(bundles.a)
    out = tmp_path_factory.mktemp("taught") / "bundle"
    write_bundle(
        out,
        classes=plain.classes,
        backbone=plain.file(BACKBONE),
        ifer_weights=plain.ifer_weights(),
        vfer_weights=plain.vfer_weights(),
        head_version="taught",
        teacher=require(paths.TEACHER_MOBILEFACENET),
    )
    return bundles, out


def stored(bundles: EdgeBundles, bundle: Path, db: Path, overlap: bool, every: int) -> list:
    videos = db.parent / "videos"
    if not videos.exists():
        videos.mkdir()
        for i, src in enumerate(
            [paths.VIDEO / "face_noface.mov", paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv"]
        ):
            (videos / f"{i}{src.suffix}").symlink_to(require(src))
    config = load_node_config(
        None,
        **{
            "camera.source": str(videos),
            "camera.kind": "folder",
            "camera.realtime": False,
            "bundle": str(bundle),
            "db": str(db),
            "kiosk.enabled": False,
            "overlap_stages": overlap,
            "clips.min_frames": 4,
            "teacher.every": every,
        },
    )
    run_node(config, face_model=bundles.face_model)
    assert not [t for t in threading.enumerate() if t.name == "teacher"]
    with ClipStore(db) as store:
        return [store.frame_teacher(r.id) for r in store.clips()]


def test_stage_t_stores_exactly_what_stage_b_computes(
    taught: tuple[EdgeBundles, Path], tmp_path: Path
) -> None:
    bundles, bundle = taught
    serial = stored(bundles, bundle, tmp_path / "serial.db", False, 4)
    overlapped = stored(bundles, bundle, tmp_path / "overlap.db", True, 4)
    assert len(serial) >= 2
    for a, b in zip(serial, overlapped, strict=True):
        np.testing.assert_array_equal(a, b)
    every_frame = stored(bundles, bundle, tmp_path / "every1.db", True, 1)
    for held, fresh in zip(overlapped, every_frame, strict=True):
        assert held is not None and fresh is not None and held.shape == fresh.shape
        np.testing.assert_array_equal(held[::4], fresh[::4])  # run on the same frames
        runs = sum(1 for i in range(1, len(held)) if not np.array_equal(held[i], held[i - 1]))
        assert runs <= len(held) // 4  # held in between
        assert len({row.tobytes() for row in fresh}) > len({row.tobytes() for row in held})
