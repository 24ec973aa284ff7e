"""Issue 15, item 3: the two-stage pipeline keeps frame order and clip semantics exactly.

The same folder of real videos (cuts between files, a face that leaves, CREMA-D clips) through the
node with the stages overlapped and not: the same clips, the same frames in them, the same
embeddings and predictions. Stage A stops with stage B (a frame limit), and an error in stage A
reaches the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_node.config import load_node_config
from edge_node.service import run_node
from edge_node.sources import Frame, FrameSource, VideoFileSource
from edge_node.stages import detected_frames
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())


def folder(tmp_path: Path) -> Path:
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, src in enumerate(
        [
            paths.VIDEO / "face_noface.mov",
            paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv",
            paths.VIDEO / "single_face.mp4",
            paths.CREMA_D / "VideoFlash" / "1001_DFA_SAD_XX.flv",
        ]
    ):
        (videos / f"{i}{src.suffix}").symlink_to(require(src))
    return videos


def run(
    edge_bundles: EdgeBundles, videos: Path, db: Path, overlap: bool, **extra: object
) -> object:
    config = load_node_config(
        None,
        **{
            "camera.source": str(videos),
            "camera.kind": "folder",
            "camera.realtime": False,
            "bundle": str(edge_bundles.a),
            "db": str(db),
            "kiosk.enabled": False,
            "overlap_stages": overlap,
            "clips.min_frames": 4,
        },
    )
    return run_node(config, face_model=edge_bundles.face_model, **extra)  # type: ignore[arg-type]


def test_overlapped_stages_store_exactly_the_same_clips(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    videos = folder(tmp_path)
    stored = []
    for overlap in (False, True):
        db = tmp_path / f"{overlap}.db"
        summary = run(edge_bundles, videos, db, overlap)
        with ClipStore(db) as store:
            rows = store.clips()
            stored.append(
                (
                    (summary.frames, summary.face_frames),  # type: ignore[attr-defined]
                    [(r.frame_count, r.face_ratio, r.prediction) for r in rows],
                    [store.frame_embeddings(r.id) for r in rows],
                    [r.vfer_probs for r in rows],
                )
            )
    (counts_a, clips_a, emb_a, v_a), (counts_b, clips_b, emb_b, v_b) = stored
    assert counts_a == counts_b and clips_a == clips_b and len(clips_a) >= 4
    for a, b in zip(emb_a + v_a, emb_b + v_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_stage_a_stops_with_stage_b_and_hands_over_its_errors(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    videos = folder(tmp_path)
    summary = run(edge_bundles, videos, tmp_path / "n.db", True, max_frames=50)
    assert summary.frames == 50  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name in ("detect", "embed")]

    class Broken(FrameSource):
        name = "broken"

        def frames(self, stop: threading.Event) -> Iterator[Frame]:
            yield from VideoFileSource(require(paths.VIDEO / "single_face.mp4")).frames(stop)
            raise OSError("camera unplugged")

    class Detect:
        def detect(self, frame: Frame) -> int:
            return frame.index

    got: list[object] = []
    with pytest.raises(OSError, match="camera unplugged"):
        for d in detected_frames(Broken(), Detect(), threading.Event(), depth=2, embed=False):  # type: ignore[arg-type]
            got.append(d)
    assert got == list(range(72))  # every frame, in order, before the error


def test_with_stage_e_the_capture_loops_own_f_is_never_opened(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    """Stage E embeds every face; stage B's f stays unopened (memory), and without stage E it
    opens on the first face."""
    from edge_node.pipeline import Pipeline
    from edge_node.state import NodeState
    from edge_node.store import ClipStore
    from vfer.faces import FaceCropper

    video = require(paths.VIDEO / "single_face.mp4")
    for embed in (True, False):
        with (
            ClipStore(tmp_path / f"{embed}.db") as store,
            FaceCropper.from_path(edge_bundles.face_model) as cropper,
        ):
            pipe = Pipeline(edge_bundles.a, cropper, store, NodeState())
            stop = threading.Event()
            faces = 0
            for d in detected_frames(VideoFileSource(video), pipe, stop, embed=embed):
                faces += pipe.infer(d).embedding is not None
            pipe.finish()
            assert faces > 20
            assert pipe.models.backbone.loaded is not embed
            pipe.close()
