"""The node's /metrics from a real `edge_node run` process on a real video: the scraped totals
match what the node stored in its real SQLite database; the password and the Host are checked."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles

pytestmark = pytest.mark.slow
HAP = paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv"


@pytest.fixture(scope="module")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.mktemp("nm"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, password: str | None) -> tuple[int, dict[str, float]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if password:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(f"p:{password}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            text = res.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {}
    except OSError:
        return 0, {}
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return 200, out


def test_node_metrics_match_the_database(edge_bundles: EdgeBundles, tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "N.db"
    (tmp_path / "pw").write_text("node-metrics-pw\n")
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        "camera: {realtime: false}\nclips: {min_frames: 4}\n"
        f"metrics: {{enabled: true, port: {port}, password_file: {tmp_path / 'pw'}}}\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_node",
            "run",
            "--config",
            str(cfg),
            "--no-kiosk",
            "--source",
            str(require(HAP)),
            "--bundle",
            str(edge_bundles.a),
            "--db",
            str(db),
            "--keep-running",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=edge_bundles.env(),
    )
    try:
        deadline, m = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            code, m = scrape(port, "node-metrics-pw")
            if (
                code == 200
                and m.get("fedvfer_node_frames_total", 0) >= 56
                and m.get("fedvfer_node_clips_saved_total")
            ):
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        else:
            proc.send_signal(signal.SIGTERM)
            pytest.fail(f"no metrics: {m}\n{proc.communicate(timeout=60)[1][-3000:]}")
        assert scrape(port, None)[0] == 401 and scrape(port, "wrong")[0] == 401
        with ClipStore(db) as store:
            stored = store.count()
            frames = sum(c.frame_count for c in store.clips())
        assert m["fedvfer_node_frames_total"] == 56
        assert m["fedvfer_node_face_frames_total"] == frames == 56
        assert m["fedvfer_node_clips_saved_total"] == stored == 1
        assert m["fedvfer_node_clips_stored"] == stored
        assert m["fedvfer_node_database_bytes"] >= db.stat().st_size > 0
        assert m["fedvfer_node_outbox_depth"] == 0
        assert m["fedvfer_node_adaptations_total{result=adapted}"] == 0
        assert 0 < m["fedvfer_node_resident_memory_bytes"] < 2**31
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
