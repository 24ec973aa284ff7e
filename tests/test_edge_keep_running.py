"""`edge_node run --keep-running` with the kiosk on: the page outlives a file source that ended."""

from __future__ import annotations

import json
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

from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles

HAP = paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv"


@pytest.fixture(scope="module")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.mktemp("keep-running"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as res:
            return dict(json.loads(res.read()))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_the_kiosk_stays_up_after_the_source_ends(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"camera: {{source: '{require(HAP)}', kind: file, realtime: false}}\n"
        f"bundle: {edge_bundles.a}\ndb: {tmp_path / 'node.db'}\n"
        f"kiosk: {{enabled: true, port: {port}}}\nclips: {{min_frames: 4}}\n"
        "adaptation: {enabled: false}\n"
    )
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_node", "run", "--config", str(cfg), "--keep-running"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=edge_bundles.env(),
        )
    try:
        deadline = time.monotonic() + 180
        while "source ended; staying up" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"node exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        time.sleep(2.0)  # the node's own stop would have ended it by now
        assert proc.poll() is None, f"the node stopped with its source: {log.read_text()[-3000:]}"
        page = state(port)
        assert page is not None and page["process"]["pid"] == proc.pid  # the kiosk still answers
        assert page["activity"]["clips_saved"] == 1, page["activity"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        assert state(port) is None  # and goes with the node
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
