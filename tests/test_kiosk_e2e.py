"""End to end: ``python -m edge_node run`` on a real video with the kiosk, and the real page in
headless Chromium: screenshots at both sizes, the emotion and the bars move as the video plays,
"forget me" empties the node's database. Slow: TensorFlow exports a bundle, the node runs ~30 s."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.support import paths
from tests.support.browser import SIZES, launch_browser, open_page, skip_reason
from tests.support.bundles import random_head

pytestmark = pytest.mark.slow
CLASSES = ("happiness", "sadness", "anger", "neutral")
VIDEO = paths.VIDEO / "WolfgangLanger_Pexels.mp4"


def node_has_run_command() -> bool:
    from edge_node.cli import cli

    return "run" in getattr(cli, "commands", {})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.backbone_cut import cut_at_pool
    from vfer.bundle import write_bundle
    from vfer.heads_spec import ifer_spec, vfer_spec

    root = tmp_path_factory.mktemp("kiosk-bundle")
    backbone = root / "backbone.tflite"
    backbone.write_bytes(cut_at_pool(require(paths.BACKBONE_INT8).read_bytes()))
    write_bundle(
        root / "bundle",
        classes=CLASSES,
        backbone=backbone,
        ifer_weights=random_head(ifer_spec(4), 1, 0.3),
        vfer_weights=random_head(vfer_spec(4), 2, 0.3),
        head_version="kiosk-e2e",
    )
    return root / "bundle"


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


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    url: str
    db: Path
    log: Path

    def clips(self) -> int:
        from edge_node.store import ClipStore

        with ClipStore(self.db) as store:
            return store.count()


@pytest.fixture
def node(bundle: Path, tmp_path: Path) -> Iterator[Node]:
    if not node_has_run_command():
        pytest.skip("`python -m edge_node run` is not there yet (the edge node issue)")
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    require(VIDEO)
    port = free_port()
    db = tmp_path / "node.db"
    log = tmp_path / "node.log"
    cmd = [
        sys.executable, "-m", "edge_node", "run",
        "--source", str(VIDEO), "--bundle", str(bundle), "--db", str(db),
        "--kiosk-port", str(port), "--face-model", str(require(paths.FACE_MODEL)), "--loop",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while get_state(url) is None:
            assert proc.poll() is None, f"node exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"kiosk never answered: {log.read_text()[-2000:]}"
            time.sleep(0.2)  # polling a port that is not open yet
        yield Node(proc, url, db, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_real_node_drives_the_page_and_forget_me_empties_its_database(
    node: Node, tmp_path: Path
) -> None:
    with launch_browser() as browser:
        for name, size in SIZES.items():
            page = open_page(browser, node.url, size)
            page.wait_for_function("document.querySelectorAll('#bars .bar-row').length === 4")
            page.wait_for_selector("#no-preview", state="hidden", timeout=20_000)
            page.wait_for_timeout(500)  # let the bars settle for the picture
            shot = tmp_path / f"e2e-{name}-{size[0]}x{size[1]}.png"
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            page.context.close()

        page = open_page(browser, node.url, SIZES["pi"])
        page.wait_for_function("document.querySelectorAll('#bars .bar-row').length === 4")
        emotions: set[str] = set()
        samples: list[dict[str, float]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(emotions) < 2 or len(samples) < 8):
            emotions.add(page.inner_text("#emotion").lower())
            samples.append(
                {
                    r.get_attribute("data-cls"): float(r.get_attribute("data-clip") or 0)
                    for r in page.query_selector_all("#bars .bar-row")
                }
            )
            page.wait_for_timeout(300)
        named = emotions & set(CLASSES)
        assert len(named) >= 2, f"the emotion text never changed: {emotions}"
        moved = max(abs(a[c] - b[c]) for a in samples for b in samples for c in CLASSES)
        assert moved > 0.02, f"the bars never moved: {samples[:3]}"

        deadline = time.monotonic() + 40  # clips end after at most clips.max_s (10 s)
        while node.clips() == 0:
            assert time.monotonic() < deadline, "the node stored no clip"
            page.wait_for_timeout(500)
        page.click("#pause-btn")  # so no new clip lands between "forget" and our count
        page.wait_for_selector("#paused:not([hidden])")
        page.click("#forget-btn")
        page.click("#confirm-ok")
        page.wait_for_function("document.body.dataset.forgotten === '1'", timeout=30_000)
        assert node.clips() == 0
        state = get_state(node.url)
        assert state is not None and state["clips_stored"] == 0 and state["paused"] is True
        page.context.close()
