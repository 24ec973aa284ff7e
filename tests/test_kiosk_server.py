"""The kiosk server against real things: HTTP on a free loopback port, a real ClipStore file,
a NodeState driven from the test (the node's capture loop is tested in its own files)."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_node.config import KioskConfig
from edge_node.kiosk import KioskHandle, start_kiosk
from edge_node.state import ModelInfo, NodeState
from edge_node.store import ClipStore, NewClip

CLASSES = ("happiness", "sadness", "anger", "neutral")
PASSWORD = "correct horse"


def add_clips(db: Path, predictions: list[int], start: float = 1_700_000_000.0) -> None:
    """Real clips in a real store: clip i predicts class ``predictions[i]``."""
    rng = np.random.default_rng(0)
    with ClipStore(db) as store:
        for i, k in enumerate(predictions):
            t = 12
            probs = np.full(len(CLASSES), 0.1, np.float32)
            probs[k] = 0.7
            store.add_clip(
                NewClip(
                    started_at=start + 600 * i,
                    ended_at=start + 600 * i + 2.5,
                    face_ratio=1.0,
                    bundle_id="test",
                    classes=CLASSES,
                    times=np.arange(t) / 10,
                    embeddings=rng.normal(size=(t, 1280)).astype(np.float32),
                    ifer=np.full((t, len(CLASSES)), 0.25, np.float32),
                    vfer_probs=probs,
                )
            )


def clip_count(db: Path) -> int:
    with ClipStore(db) as store:
        return store.count()


class ForgetWorker:
    """What the node does on "forget me": delete every clip, VACUUM, report done (own thread)."""

    def __init__(self, state: NodeState, db: Path, stop: threading.Event) -> None:
        self.state, self.db, self.stop = state, db, stop
        self.thread = threading.Thread(target=self._run, name="forget-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.state.forget_requested.wait(0.05):
                with ClipStore(self.db) as store:
                    store.delete_all()
                self.state.update(clips_stored=0)
                self.state.forget_completed()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(5)


@dataclass
class Kiosk:
    handle: KioskHandle
    state: NodeState
    db: Path
    stop: threading.Event

    @property
    def port(self) -> int:
        return self.handle.port

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()


def auth(password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"op:{password}".encode()).decode()}


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[Kiosk]:
    db = tmp_path / "node.db"
    add_clips(db, [0, 0, 2])
    pw = tmp_path / "operator.pw"
    pw.write_text(PASSWORD + "\n")
    state = NodeState()
    state.update(model=ModelInfo(head_version="central-r3", federation_round=3, classes=CLASSES))
    stop = threading.Event()
    config = KioskConfig(port=0, operator_password_file=pw, forget_timeout_s=5)
    handle = start_kiosk(state, config, db, stop)
    try:
        yield Kiosk(handle, state, db, stop)
    finally:
        stop.set()
        handle.stop()


def test_state_json_follows_the_node_state(kiosk: Kiosk) -> None:
    kiosk.state.update(
        emotion="anger",
        face_present=True,
        recording=True,
        vfer_probs={"anger": 0.8, "happiness": 0.2},
    )
    status, headers, body = kiosk.request("GET", "/api/state")
    assert status == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["emotion"] == "anger" and data["face_present"] and data["recording"]
    assert data["vfer_probs"]["anger"] == 0.8
    assert data["model"]["head_version"] == "central-r3"
    assert data["paused"] is False


def test_page_and_assets_are_served_with_a_self_only_policy(kiosk: Kiosk) -> None:
    status, headers, body = kiosk.request("GET", "/")
    assert status == 200 and b'<div id="emotion"' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    for asset in ("/static/kiosk.css", "/static/kiosk.js"):
        assert kiosk.request("GET", asset)[0] == 200
    assert kiosk.request("GET", "/static/../server.py")[0] == 404
    assert kiosk.request("GET", "/nope")[0] == 404


def test_pause_and_resume_set_the_event_the_node_reads(kiosk: Kiosk) -> None:
    status, _, body = kiosk.request("POST", "/api/pause", {})
    assert status == 200 and json.loads(body)["paused"] is True
    assert kiosk.state.pause_requested.is_set()
    assert json.loads(kiosk.request("GET", "/api/state")[2])["paused"] is True
    kiosk.request("POST", "/api/resume", {})
    assert not kiosk.state.pause_requested.is_set()


def test_posts_must_be_same_origin_json(kiosk: Kiosk) -> None:
    assert kiosk.request("POST", "/api/pause", None)[0] == 415  # no JSON body type
    evil = {"Origin": "http://evil.example"}
    assert kiosk.request("POST", "/api/pause", {}, evil)[0] == 403
    assert not kiosk.state.pause_requested.is_set()
    same = {"Origin": f"http://127.0.0.1:{kiosk.port}"}
    assert kiosk.request("POST", "/api/pause", {}, same)[0] == 200


def test_forget_needs_confirmation_then_empties_the_database(kiosk: Kiosk) -> None:
    worker = ForgetWorker(kiosk.state, kiosk.db, threading.Event())
    try:
        status, _, body = kiosk.request("POST", "/api/forget", {})
        assert status == 400 and b"confirm" in body
        assert clip_count(kiosk.db) == 3
        status, _, body = kiosk.request("POST", "/api/forget", {"confirm": True})
        assert status == 200 and json.loads(body)["ok"] is True
        assert clip_count(kiosk.db) == 0
    finally:
        worker.join()


def test_forget_reports_a_node_that_never_answers(tmp_path: Path) -> None:
    stop = threading.Event()
    handle = start_kiosk(NodeState(), KioskConfig(port=0, forget_timeout_s=0.2), None, stop)
    try:
        kiosk = Kiosk(handle, NodeState(), tmp_path / "x.db", stop)
        status, _, body = kiosk.request("POST", "/api/forget", {"confirm": True})
        assert status == 504 and b"did not confirm" in body
    finally:
        handle.stop()


def read_until(res: http.client.HTTPResponse, marker: bytes, limit: int = 1 << 20) -> bytes:
    buf = b""
    while marker not in buf and len(buf) < limit:
        chunk = res.read1(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def test_event_stream_pushes_changes(kiosk: Kiosk) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", kiosk.port, timeout=10)
    try:
        conn.request("GET", "/api/events")
        res = conn.getresponse()
        assert res.getheader("Content-Type") == "text/event-stream"
        first = read_until(res, b"\n\n")
        assert first.startswith(b"data: ") and b'"central-r3"' in first
        kiosk.state.update(emotion="sadness", face_present=True)
        later = read_until(res, b'"sadness"')
        assert b'"emotion": "sadness"' in later
    finally:
        conn.close()


def test_mjpeg_stream_sends_the_latest_preview(kiosk: Kiosk) -> None:
    jpeg = b"\xff\xd8fake-jpeg-bytes\xff\xd9"
    kiosk.state.set_preview(jpeg)
    conn = http.client.HTTPConnection("127.0.0.1", kiosk.port, timeout=10)
    try:
        conn.request("GET", "/preview.mjpg")
        res = conn.getresponse()
        assert res.getheader("Content-Type", "").startswith("multipart/x-mixed-replace")
        part = read_until(res, b"\xff\xd9")
        assert b"Content-Type: image/jpeg" in part and jpeg in part
    finally:
        conn.close()
    status, _, body = kiosk.request("GET", "/preview.jpg")
    assert status == 200 and body == jpeg


def test_operator_page_needs_the_password(kiosk: Kiosk) -> None:
    status, headers, _ = kiosk.request("GET", "/operator")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert kiosk.request("GET", "/operator", headers=auth("wrong"))[0] == 401
    assert kiosk.request("GET", "/operator/api/summary", headers=auth("wrong"))[0] == 401
    status, _, body = kiosk.request("GET", "/operator", headers=auth())
    assert status == 200 and b"Recent clips" in body


def test_operator_summary_reads_the_clip_store(kiosk: Kiosk) -> None:
    status, _, body = kiosk.request("GET", "/operator/api/summary?bucket_s=3600", headers=auth())
    assert status == 200
    data = json.loads(body)
    assert data["counts"] == {"happiness": 2, "sadness": 0, "anger": 1, "neutral": 0}
    assert data["total"] == 3
    assert [r["prediction"] for r in data["recent"]] == ["anger", "happiness", "happiness"]
    assert sum(sum(b["counts"].values()) for b in data["timeline"]["buckets"]) == 3
    assert kiosk.request("GET", "/operator/api/summary?bucket_s=1", headers=auth())[0] == 400


def test_wrong_passwords_are_throttled(kiosk: Kiosk) -> None:
    statuses = [kiosk.request("GET", "/operator", headers=auth("guess"))[0] for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    assert (
        kiosk.request("GET", "/operator", headers=auth())[0] == 429
    )  # even the right one, for now


def test_operator_page_without_a_password_file_is_disabled_with_a_reason() -> None:
    stop = threading.Event()
    handle = start_kiosk(NodeState(), KioskConfig(port=0), None, stop)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
        conn.request("GET", "/operator", headers=auth())
        res = conn.getresponse()
        assert res.status == 403 and b"operator_password_file" in res.read()
        conn.close()
    finally:
        handle.stop()


def test_bad_password_file_and_busy_port_are_clear_errors(tmp_path: Path, kiosk: Kiosk) -> None:
    stop = threading.Event()
    with pytest.raises(ValueError, match="operator_password_file"):
        start_kiosk(
            NodeState(), KioskConfig(port=0, operator_password_file=tmp_path / "no"), None, stop
        )
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{kiosk.port}"):
        start_kiosk(NodeState(), KioskConfig(port=kiosk.port), None, stop)


def test_stop_ends_open_streams(tmp_path: Path) -> None:
    stop = threading.Event()
    handle = start_kiosk(NodeState(), KioskConfig(port=0), None, stop)
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
    conn.request("GET", "/api/events")
    res = conn.getresponse()
    read_until(res, b"\n\n")
    t0 = time.monotonic()
    handle.stop()
    handle.stop()  # idempotent
    res.read()  # returns only once the server closed the stream (else: timeout error)
    assert res.isclosed()
    assert time.monotonic() - t0 < 5
    conn.close()
