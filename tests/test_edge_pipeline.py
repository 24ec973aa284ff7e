"""The capture pipeline on real videos with the real detector, backbone and heads (LiteRT)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_node.config import load_node_config
from edge_node.models import Models, bundle_fingerprint
from edge_node.pipeline import Pipeline, PipelineOptions
from edge_node.segmenter import SegmentPolicy
from edge_node.service import resolve_face_model, run_node
from edge_node.sources import Frame, VideoFileSource
from edge_node.state import NodeState
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles
from vfer.bundle import Bundle
from vfer.cli import UserError
from vfer.faces import FaceCropper
from vfer.runtime import VferStep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())  # built once per session


HAP = paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv"
POLICY = SegmentPolicy(gap_s=1.0, max_s=10.0, min_frames=8)


def frames_of(path: Path) -> list[Frame]:
    return list(VideoFileSource(require(path)).frames(threading.Event()))


@pytest.fixture(scope="module")
def hap() -> list[Frame]:
    return frames_of(HAP)


@pytest.fixture(scope="module")
def cropper(edge_bundles: EdgeBundles) -> Iterator[FaceCropper]:
    with FaceCropper.from_path(edge_bundles.face_model) as fc:
        yield fc


def ingest(bundles: EdgeBundles, video: Path, db: Path, **cfg: object) -> tuple[object, ClipStore]:
    config = load_node_config(
        None, **{"bundle": str(bundles.a), "db": str(db), "kiosk.enabled": False, **cfg}
    )
    source = VideoFileSource(require(video))
    summary = run_node(config, face_model=bundles.face_model, source=source)
    return summary, ClipStore(db)


def test_crema_d_clip_is_one_clip_of_56_frames(edge_bundles: EdgeBundles, tmp_path: Path) -> None:
    _, store = ingest(edge_bundles, HAP, tmp_path / "n.db")
    with store:
        [row] = store.clips()
        assert row.frame_count == 56 and row.face_ratio == 1.0
        assert row.bundle_id == Bundle.load(edge_bundles.a).bundle_id
        emb, ifer = store.frame_embeddings(row.id), store.frame_ifer(row.id)
        assert emb.shape == (56, 1280) and ifer.shape == (56, 6)
        np.testing.assert_allclose(ifer.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(row.ifer_mean, ifer.mean(axis=0), atol=1e-6)
        # v on the stored float16 embeddings gives what the node computed on float32 ones
        with VferStep.from_path(edge_bundles.a / "vfer_step.tflite") as v:
            np.testing.assert_allclose(v.predict_clip(emb), row.vfer_probs, atol=2e-3)
        assert abs(row.ended_at - row.started_at - 55 / 29.97) < 0.01


def test_face_then_no_face_stores_only_the_face_part(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    summary, store = ingest(edge_bundles, paths.VIDEO / "face_noface.mov", tmp_path / "n.db")
    with store:
        assert [(c.frame_count, c.face_ratio) for c in store.clips()] == [(72, 1.0)]
    summary, store = ingest(edge_bundles, paths.VIDEO / "no_face.mp4", tmp_path / "m.db")
    with store:
        assert store.count() == 0
    assert summary.frames == 95 and summary.face_frames == 0  # type: ignore[attr-defined]


def test_a_bundle_switched_by_symlink_is_used_for_the_next_clip(
    edge_bundles: EdgeBundles,
    cropper: FaceCropper,
    hap: list[Frame],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = tmp_path / "current"
    link.symlink_to(edge_bundles.a)
    state = NodeState()
    with ClipStore(tmp_path / "n.db") as store:
        pipe = Pipeline(link, cropper, store, state, PipelineOptions(POLICY))
        for f in hap[:20]:
            pipe.process(f)
        tmp = tmp_path / "current.tmp"
        tmp.symlink_to(edge_bundles.b)
        os.replace(tmp, link)  # the lead's atomic switch
        for f in hap[20:30]:  # the open clip keeps its models
            pipe.process(f)
        assert pipe.models.bundle.path == Path(os.path.realpath(edge_bundles.a))
        with caplog.at_level(logging.INFO, logger="edge_node.pipeline"):
            for i, f in enumerate(hap[30:56]):
                pipe.process(Frame(f.rgb, 100 + i / 30, 100 + i, cut=i == 0))
        pipe.finish()
        pipe.close()
        ids = [c.bundle_id for c in store.clips()]
        assert ids == [Bundle.load(edge_bundles.a).bundle_id, Bundle.load(edge_bundles.b).bundle_id]
    assert pipe.counters.reloads == 1 and "bundle switched" in caplog.text
    assert state.snapshot().model.head_version == "test-b"
    assert bundle_fingerprint(link)[0] == os.path.realpath(edge_bundles.b)


def test_live_state_pause_and_forget(
    edge_bundles: EdgeBundles,
    cropper: FaceCropper,
    hap: list[Frame],
    tmp_path: Path,
) -> None:
    state = NodeState()
    with ClipStore(tmp_path / "n.db") as store:
        pipe = Pipeline(
            edge_bundles.a,
            cropper,
            store,
            state,
            PipelineOptions(POLICY, preview=True, preview_fps=1000),
        )
        pipe.process(hap[0])
        assert state.preview() == (0, None)  # nobody watched yet: no JPEG was encoded
        for f in hap[1:10]:  # that read made the node encode previews from now on
            pipe.process(f)
        snap = state.snapshot()
        assert snap.face_present and snap.recording and snap.clip_frames == 10
        assert (
            set(snap.ifer_probs) == set(snap.vfer_probs) == set(Bundle.load(edge_bundles.a).classes)
        )
        assert snap.emotion == max(snap.vfer_probs, key=snap.vfer_probs.__getitem__)
        x, y, w, h = snap.face_box or (0, 0, 0, 0)
        assert snap.frame_size == (480, 360) and 0 <= x < x + w <= 480 and 0 <= y < y + h <= 360
        seq, jpeg = state.preview()
        assert seq == 9 and jpeg is not None and jpeg[:2] == b"\xff\xd8"
        assert snap.model.bundle_id and snap.clips_stored == 0

        state.pause_requested.set()  # the open clip is now not recorded; inference goes on
        for f in hap[10:56]:
            pipe.process(f)
        pipe.finish()
        assert store.count() == 0 and state.snapshot().emotion is None
        pipe.process(hap[0])
        assert state.snapshot().emotion is not None and not state.snapshot().recording

        state.pause_requested.clear()
        for i, f in enumerate(hap):
            pipe.process(Frame(f.rgb, 50 + i / 30, 500 + i, cut=i == 0))
        pipe.finish()
        assert store.count() == 1 and state.snapshot().clips_stored == 1

        done: list[bool] = []
        asker = threading.Thread(target=lambda: done.append(state.request_forget(timeout=30)))
        asker.start()
        while not state.forget_requested.is_set():
            state.forget_requested.wait(0.01)
        pipe.process(hap[0])
        asker.join(timeout=30)
        assert done == [True] and store.count() == 0 and state.snapshot().clips_stored == 0
        pipe.close()


def test_a_full_disk_stops_recording_and_keeps_the_database(
    edge_bundles: EdgeBundles,
    cropper: FaceCropper,
    hap: list[Frame],
    tmp_path: Path,
) -> None:
    """Simulated with SQLite's max_page_count: no size-limited mount without root."""
    db = tmp_path / "n.db"
    with ClipStore(db) as store:
        pipe = Pipeline(
            edge_bundles.a, cropper, store, NodeState(), PipelineOptions(POLICY, thumbnails=3)
        )
        for f in hap:
            pipe.process(f)
        pipe.finish()
        [first] = store.clips()
        assert len(store.thumbnails(first.id)) == 3  # opted in
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages + 5}")
        for i, f in enumerate(hap):
            pipe.process(Frame(f.rgb, 50 + i / 30, 500 + i, cut=i == 0))
        pipe.finish()
        assert pipe.recording_suspended and store.count() == 1
        for i, f in enumerate(hap[:10]):
            pipe.process(Frame(f.rgb, 90 + i / 30, 900 + i, cut=i == 0))
        assert not pipe.state.snapshot().recording  # stopped, inference goes on
        pipe.retry_recording()
        pipe.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_face_model_resolution(
    edge_bundles: EdgeBundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDVFER_FACE_MODEL", raising=False)
    (tmp_path / "models").mkdir()
    bundle = tmp_path / "bundle"
    bundle.symlink_to(edge_bundles.a)
    with pytest.raises(UserError, match=r"face detector model not found.*--face-model"):
        resolve_face_model(None, bundle)
    beside = tmp_path / "models" / "face_detection_short_range.tflite"
    beside.symlink_to(edge_bundles.face_model)
    assert resolve_face_model(None, bundle) == beside
    monkeypatch.setenv("FEDVFER_FACE_MODEL", str(edge_bundles.face_model))
    assert resolve_face_model(None, bundle) == edge_bundles.face_model
    with pytest.raises(UserError, match=r"nope\.tflite"):
        resolve_face_model(tmp_path / "nope.tflite", bundle)


def test_models_load_reports_the_bundle(edge_bundles: EdgeBundles) -> None:
    m = Models.load(edge_bundles.b)
    try:
        info = m.info()
        assert info.head_version == "test-b" and len(info.classes) == 6
    finally:
        m.close()


def test_run_node_serves_the_kiosk_and_stops_on_the_event(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    import json
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = load_node_config(
        None,
        **{
            "bundle": str(edge_bundles.a),
            "db": str(tmp_path / "n.db"),
            "kiosk.port": port,
            "clips.min_frames": 1,
        },
    )
    state, stop = NodeState(), threading.Event()
    source = VideoFileSource(require(HAP), loop=True, realtime=True)
    result: list[object] = []
    node = threading.Thread(
        target=lambda: result.append(
            run_node(
                config,
                face_model=edge_bundles.face_model,
                stop=stop,
                state=state,
                source=source,
                kiosk=True,
            )
        )
    )
    node.start()
    try:
        deadline = threading.Event()
        for _ in range(600):  # until the first preview is out (at most 60 s)
            if state.preview()[0] > 0:
                break
            deadline.wait(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as r:
            live = json.loads(r.read())
        assert live["face_present"] is True and live["model"]["head_version"] == "test-a"
    finally:
        stop.set()
        node.join(timeout=60)
    assert not node.is_alive()
    [summary] = result
    assert summary.stopped and summary.frames > 0  # type: ignore[attr-defined]
    with ClipStore(tmp_path / "n.db") as store:
        assert store.count() == len(summary.clips_saved) >= 1  # type: ignore[attr-defined]


def test_the_deployments_notice_reaches_the_live_state(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    from edge_node.state import NodeState

    config = load_node_config(
        None,
        **{
            "bundle": str(edge_bundles.a),
            "db": str(tmp_path / "n.db"),
            "kiosk.enabled": False,
            "deployment.operator": "City Museum",
            "deployment.notice": "Emotion recognition in use.",
        },
    )
    state = NodeState()
    run_node(
        config,
        face_model=edge_bundles.face_model,
        source=VideoFileSource(require(HAP)),
        state=state,
        max_frames=3,
    )
    notice = state.as_json()["notice"]
    assert notice == {
        "text": "Emotion recognition in use.",
        "operator": "City Museum",
        "privacy": None,  # adaptation.privacy is off: no epsilon sentence
    }
