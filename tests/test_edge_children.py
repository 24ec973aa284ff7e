"""Issue 15, item 1: the capture process never imports TensorFlow; adaptation runs in a child.

A real node process (``python -m edge_node run``) on a real video, with its kiosk page on: its
``/api/state`` reports the process's own ``"tensorflow" in sys.modules`` and memory. Adaptation
is enabled with a 24-hour window, so the node's personalizer starts ``python -m edge_node adapt``
as a child while capture goes on; the node then shows the personalized bundle.
"""

from __future__ import annotations

import json
import os
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
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_state(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "api/state", timeout=2) as res:
            return dict(json.loads(res.read()))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_capture_process_runs_without_tensorflow_while_a_child_adapts(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    video = require(paths.VIDEO / "face_noface.mov")
    bundle = tmp_path / "node" / "bundle"
    shutil.copytree(edge_bundles.a, bundle)
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"bundle: {bundle}\ndb: {tmp_path / 'node.db'}\n"
        f"camera: {{source: '{video}', kind: file, loop: true}}\n"
        f"face: {{model: '{edge_bundles.face_model}'}}\n"
        f"kiosk: {{enabled: true, port: {port}}}\n"
        "adaptation: {gate: 'off', window_start: '00:00', window_end: '00:00', p: 2, p_threshold: 0.0, "
        "epochs: 1, min_clips: 1}\n"
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
    seen: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"node exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never personalized: {log.read_text()[-3000:]}"
            state = get_state(url)
            if state is not None and state["process"]["pid"] == proc.pid:
                seen.append(state)
                if state["model"]["personalized"]:
                    break
            time.sleep(0.5)  # polling the node's page while it captures and adapts
        # capture goes on with the new bundle, and the node still holds no TensorFlow
        frames_at_switch = seen[-1]["updated_at"]
        while (state := get_state(url)) is None or state["updated_at"] <= frames_at_switch + 1:
            assert proc.poll() is None and time.monotonic() < deadline + 60
            time.sleep(0.2)
        seen.append(state)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert all(s["process"]["tensorflow_loaded"] is False for s in seen)
    assert all(s["process"]["mediapipe_loaded"] is False for s in seen)  # detector on LiteRT
    assert seen[-1]["model"]["head_version"].startswith("local-")
    assert seen[-1]["process"]["rss_mb"] > 0
    text = log.read_text()
    assert "child adapt" in text and "bundle switched" in text, text[-3000:]
    home = BundleHome(bundle)
    assert home.active().manifest.personalized and home.night_done() is not None


def test_adapt_in_child_reports_its_own_peak_memory(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    """The child's peak RSS is its own (wait4); its result carries v's trainable weights."""
    from edge_node.config import load_node_config
    from edge_node.personalization.child import adapt_in_child
    from edge_node.personalization.params import AdaptParams
    from edge_node.service import run_node

    bundle = tmp_path / "bundle"
    shutil.copytree(edge_bundles.a, bundle)
    db = tmp_path / "n.db"
    os.environ.setdefault("FEDVFER_FACE_MODEL", str(edge_bundles.face_model))
    cfg = load_node_config(
        None,
        **{
            "camera.source": str(require(paths.CREMA_D / "VideoFlash")),
            "camera.kind": "folder",
            "camera.realtime": False,
            "bundle": str(bundle),
            "db": str(db),
            "kiosk.enabled": False,
        },
    )
    run_node(cfg, face_model=edge_bundles.face_model)
    result, run = adapt_in_child(
        db, bundle, AdaptParams(p=2, p_threshold=0.0, min_clips=2, gate=None)
    )
    assert run.returncode == 0 and result.status == "adapted", result.reason
    assert set(result.trainable) and result.new_version == BundleHome(bundle).installed().active
    assert run.peak_rss_mb > 300  # TensorFlow was loaded there, not here


def test_a_forget_during_adaptation_throws_the_new_head_away(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    """Forget me while the child adapts: its head was built from forgotten clips, so it goes."""
    import threading

    from edge_node.config import load_node_config
    from edge_node.personalization.loop import Personalizer
    from edge_node.service import run_node
    from edge_node.state import NodeState

    bundle = tmp_path / "bundle"
    shutil.copytree(edge_bundles.a, bundle)
    db = tmp_path / "n.db"
    cfg = load_node_config(
        None,
        **{
            "camera.source": str(require(paths.CREMA_D / "VideoFlash")),
            "camera.kind": "folder",
            "camera.realtime": False,
            "bundle": str(bundle),
            "db": str(db),
            "kiosk.enabled": False,
        },
    )
    run_node(cfg, face_model=edge_bundles.face_model)
    state = NodeState()
    personalizer = Personalizer(cfg, state, threading.Event())
    from edge_node.personalization.params import AdaptParams

    done: list[object] = []
    worker = threading.Thread(
        target=lambda: done.append(
            personalizer.adapt_now(AdaptParams(p=2, p_threshold=0.0, min_clips=2, gate=None))
        )
    )
    worker.start()
    import psutil

    deadline = time.monotonic() + 60

    def child_running() -> bool:
        try:
            return any("adapt" in p.cmdline() for p in psutil.Process().children())
        except psutil.Error:  # a child that just exited
            return False

    while not child_running():
        assert worker.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)  # waiting for the child process to exist
    state.forget_completed()  # the capture loop finished a "forget me" while the child runs
    worker.join(timeout=300)
    [result] = done
    assert result.status == "rejected" and "forgotten" in result.reason  # type: ignore[attr-defined]
    assert result.trainable == {}  # type: ignore[attr-defined]
    home = BundleHome(bundle)
    assert not home.active().manifest.personalized and not list(home.versions.glob("local-*"))
    from edge_node.personalization.results import history
    from edge_node.store import ClipStore

    with ClipStore(db) as store:  # the verdict the node gave is the one kept
        [kept] = history(store)
    assert kept.report.status == "rejected" and "forgotten" in kept.report.reason
