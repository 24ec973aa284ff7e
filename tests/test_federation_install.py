"""Issue 26: one owner for the installed central. A real ``edge_node run`` with federation, its
kiosk and its /metrics on, beside a real mosquitto: it installs a signed central v1, then
receives a validly signed v2 whose install child fails (its classes are not the bundle's). The
status topic, the kiosk's /api/state and /metrics must all still say v1: the fleet is never told
the node runs a model it does not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require
from tests.support import paths
from tests.support.aggregator import random_v
from tests.support.edge_fixtures import build_bundles
from tests.support.mosquitto import Broker, free_port
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import signing
from vfer import weights as wcodec
from vfer.classes import EMOTIONS_6
from vfer.messages import CentralHeader, StatusMsg, from_json, sign_central
from vfer.topics import Topics

pytestmark = pytest.mark.slow
NODE = "pi-9"


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.5)  # polling a real node process's HTTP endpoints and its log
    return cond()


def get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as res:
            return dict(json.loads(res.read()))
    except (OSError, ValueError):
        return {}


def metric(url: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as res:
            text = res.read().decode()
    except OSError:
        return None
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    return None


class StatusWatch:
    """The node's retained status topic, as the fleet sees it."""

    def __init__(self, broker: Broker) -> None:  # noqa: F811
        self.last: StatusMsg | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="status-watch")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(Topics("fedvfer").node_status(NODE), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.last = from_json(bytes(msg.payload), StatusMsg)

    def version(self) -> int | None:
        s = self.last
        return s.central_version if s is not None and s.state == "online" else None

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_central(broker: Broker, key: Path, version: int, classes: list[str]) -> None:  # noqa: F811
    header = CentralHeader(
        version=version, round_id=version - 1, classes=classes, created_at=time.time()
    )
    weights = random_v(len(classes), np.random.default_rng(version))
    frame = sign_central(header, wcodec.to_bytes(weights), signing.load_private_key(key))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"central-v{version}")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(Topics("fedvfer").central_bundle, frame, qos=1, retain=True).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_a_central_whose_install_fails_leaves_v1_everywhere(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "edge").mkdir()
    edge = build_bundles(tmp_path / "edge")
    bundle = tmp_path / "node" / "bundle"
    shutil.copytree(edge.a, bundle)
    kiosk_port, metrics_port = free_port(), free_port()
    video = require(paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv")
    (tmp_path / "node.yaml").write_text(
        f"node_id: {NODE}\nbundle: {bundle}\ndb: {tmp_path / 'n.db'}\n"
        f"camera: {{source: '{video}', kind: file, loop: true}}\n"
        f"kiosk: {{enabled: true, port: {kiosk_port}}}\nadaptation: {{enabled: false}}\n"
        f"federation: {{enabled: true, broker_url: '{broker.url}', mqtt_version: '5', "
        f"fleet_public_key: '{fleet['pub']}'}}\n"
        f"metrics: {{enabled: true, port: {metrics_port}}}\n"
    )
    log = tmp_path / "node.log"
    kiosk = f"http://127.0.0.1:{kiosk_port}/api/state"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    status = StatusWatch(broker)
    publish_central(broker, fleet["priv"], 1, list(EMOTIONS_6))
    node = subprocess.Popen(
        [sys.executable, "-m", "edge_node", "run", "--config", str(tmp_path / "node.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=edge.env(),
    )

    def node_log() -> str:
        return log.read_text(errors="replace")[-3000:]

    def all_three() -> tuple[object, object, object]:
        fed = get_json(kiosk).get("federation", {})
        got = metric(metrics, "fedvfer_node_central_version")
        return status.version(), fed.get("central_version"), got

    try:
        assert wait_for(lambda: all_three() == (1, 1, 1.0), 180), (all_three(), node_log())
        publish_central(broker, fleet["priv"], 2, list(reversed(EMOTIONS_6)))
        assert wait_for(lambda: "central v2 not installed" in node_log(), 180), node_log()
        assert node.poll() is None, node_log()  # a failed install does not stop the node
        assert all_three() == (1, 1, 1.0), node_log()
    finally:
        status.stop()
        node.terminate()
        node.wait(timeout=60)
