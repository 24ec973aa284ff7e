"""Issue 14, item 8: "forget me" forgets the person, not only the data.

A real node process on a real video (a face in every frame), its kiosk page on, a personalized
head active in a real bundle home, a real SQLite database. Clips are recorded before; after
``POST /api/forget`` the database stays empty while the same face keeps looking at the camera
(recording is paused for ``forget.pause_s``, the page shows the countdown), and the active head
is the central one, with no personalized version left to roll back to.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge_node.bundles import BundleHome
from edge_node.forget import forget_everything
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles
from tests.test_kiosk_server import add_clips
from vfer.bundle import REQUIRED, Bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, body: Any = None) -> dict[str, Any] | None:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return dict(json.loads(res.read()))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def personalized_home(edge_bundles: EdgeBundles, bundle: Path) -> str:
    """A managed home whose active head is personalized (bundle b's heads, marked personalized)."""
    shutil.copytree(edge_bundles.a, bundle)
    home = BundleHome(bundle)
    b = Bundle.load(edge_bundles.b)
    home.write_version(
        "local-20260101T000000-aaaaaa",
        {name: b.file(name) for name in REQUIRED},
        classes=b.classes,
        head_version="local-20260101T000000-aaaaaa",
        federation_round=0,
        personalized=True,
        parent="central-r0",
        notes={},
    )
    home.switch_to("local-20260101T000000-aaaaaa")
    central = home.installed().central
    assert central is not None and home.active().manifest.personalized
    return central


def test_forget_everything_empties_the_store_then_the_personalized_heads(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    central = personalized_home(edge_bundles, bundle)
    db = tmp_path / "n.db"
    add_clips(db, [0, 1, 2])
    with ClipStore(db) as store:
        only_clips = forget_everything(store, None)  # no bundle: the heads stay
        assert only_clips.clips == 3 and only_clips.heads == () and store.count() == 0
        assert BundleHome(bundle).active().manifest.personalized
        add_clips(db, [3])
        done = forget_everything(store, bundle)
        assert done.clips == 1 and done.heads == ("local-20260101T000000-aaaaaa",)
        assert store.count() == 0
    home = BundleHome(bundle)
    assert home.installed().active == central and not home.active().manifest.personalized


def test_forget_pauses_recording_and_drops_the_personalized_head(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    bundle = tmp_path / "node" / "bundle"
    central = personalized_home(edge_bundles, bundle)
    db = tmp_path / "node.db"
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"bundle: {bundle}\ndb: {db}\n"
        f"camera: {{source: '{require(paths.VIDEO / 'single_face.mp4')}', kind: file, loop: true}}\n"
        f"face: {{model: '{edge_bundles.face_model}'}}\n"
        f"kiosk: {{enabled: true, port: {port}}}\n"
        "clips: {gap_s: 0.3, max_s: 1.0, min_frames: 8}\n"
        "adaptation: {enabled: false}\nforget: {pause_s: 60}\n"
    )
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_node", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=edge_bundles.env(),
        )
    url = f"http://127.0.0.1:{port}/"

    def clips() -> int:
        with ClipStore(db) as store:
            return store.count()

    try:
        deadline = time.monotonic() + 120
        while not (db.exists() and clips() >= 2):  # the visitor is being recorded
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)  # polling the node's database
        assert call(url + "api/forget", {"confirm": True}) == {"ok": True}
        after = call(url + "api/state")
        assert after is not None and after["paused"] and 50 < after["forget_pause_s"] <= 60
        assert clips() == 0
        # the same face stays in front of the camera for several clip lengths: nothing is kept
        t_end = time.monotonic() + 4.0
        frames_seen = 0
        while time.monotonic() < t_end:
            state = call(url + "api/state")
            assert state is not None and state["paused"] and not state["recording"]
            frames_seen += bool(state["face_present"])
            time.sleep(0.25)  # sampling the page's state while the face is there
        assert frames_seen >= 8
        assert clips() == 0
        state = call(url + "api/state")
        assert state is not None and not state["model"]["personalized"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    home = BundleHome(bundle)
    st = home.installed()
    assert st.active == central and home.active().manifest.personalized is False
    assert st.previous is None and not list(home.versions.glob("local-*"))
    assert clips() == 0
