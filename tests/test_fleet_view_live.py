"""The aggregator's /metrics and fleet page during a real round: a real mosquitto, the real
``broker_aggregator run`` process, raw MQTT nodes; the scraped values are checked against what the
round did (submissions, rejections by reason, the central version, the nodes' statuses)."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.aggregator import AggregatorProcess, personalized
from tests.support.mosquitto import Broker
from tests.support.raw_node import RawNode, subscriptions, update_frame, wait_subscribed
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import weights as wcodec
from vfer.messages import StatusMsg, to_json

pytestmark = pytest.mark.slow
PASSWORD = "fleet-pw-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, password: str | None = PASSWORD) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"ops:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def scrape(url: str) -> dict[str, float]:
    code, body = get(url + "/metrics")
    assert code == 200, body
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def wait_for(fn: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return False


def test_metrics_and_fleet_page_follow_a_real_round(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "metrics_pw").write_text(PASSWORD + "\n")
    cfg = tmp_path / "aggregator.yaml"
    cfg.write_text(
        f"broker_url: {broker.url}\nsigning_key_file: {fleet['priv']}\n"
        f"initial_weights: {fleet['initial']}\nstate_db: {tmp_path / 'agg.db'}\n"
        "round: {min_submissions: 2, max_submissions: 2, rounds: 2, deadline_s: 120}\n"
        f"metrics: {{enabled: true, port: {port}, password_file: {tmp_path / 'metrics_pw'}}}\n"
    )
    url = f"http://127.0.0.1:{port}"
    base = {k: v for k, v in wcodec.load(fleet["initial"]).items() if "moving" not in k}
    rng = np.random.default_rng(5)
    nodes = [RawNode(broker, f"pi-{i}") for i in range(2)]
    for node in nodes:  # retained, as a real node's status is
        status = StatusMsg(node_id=node.node_id, state="online", central_version=1, round_id=1)
        topic = f"fedvfer/nodes/{node.node_id}/status"
        node.client.publish(topic, to_json(status), qos=1, retain=True).wait_for_publish(10)
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        assert wait_for(lambda: get(url + "/metrics")[0] == 200), agg.log()[-2000:]
        assert get(url + "/metrics", password=None)[0] == 401
        assert get(url + "/", password="nope")[0] == 401

        def send(node: RawNode, **over: object) -> str:
            uid = uuid.uuid4().hex
            w = personalized(base, rng)
            node.publish(update_frame(node.node_id, 1, 1, 1, w, uid, **over))
            ack = node.wait_ack(uid)
            assert ack is not None, agg.log()[-2000:]
            return ack.reason or ack.status

        assert send(nodes[0], clips_per_class={"joy": 3}) == "unknown_class"
        assert send(nodes[1], base_version=7) == "stale_base"
        assert send(nodes[0]) == "stored"
        m = scrape(url)
        assert m["fedvfer_aggregator_round_id"] == 1
        assert m["fedvfer_aggregator_round_state{state=open}"] == 1
        assert m["fedvfer_aggregator_round_submissions"] == 1
        assert m["fedvfer_aggregator_rejections_total{reason=unknown_class}"] == 1
        assert m["fedvfer_aggregator_rejections_total{reason=stale_base}"] == 1
        assert m["fedvfer_aggregator_central_version"] == 1
        assert m["fedvfer_aggregator_nodes_online"] == 2

        assert send(nodes[1]) == "stored"  # the second update closes round 1
        assert wait_for(lambda: scrape(url)["fedvfer_aggregator_central_version"] == 2), agg.log()
        m = scrape(url)
        assert m["fedvfer_aggregator_rounds_finished_total"] == 1
        assert m["fedvfer_aggregator_submissions_total"] == 2
        assert m["fedvfer_aggregator_round_id"] == 2  # the next round is open
        assert m["fedvfer_aggregator_last_round_duration_seconds"] > 0
        data = json.loads(get(url + "/api/fleet")[1])
        assert data["central_version"] == 2
        assert {n["node_id"]: n["state"] for n in data["nodes"]} == {
            "pi-0": "online",
            "pi-1": "online",
        }
        finished = next(r for r in data["rounds"] if r["round_id"] == 1)
        assert finished["result_version"] == 2 and finished["submissions"] == 2
        assert finished["rejections"] == {"unknown_class": 1, "stale_base": 1}
    finally:
        for node in nodes:
            node.stop()
        agg.stop()


def test_both_endpoints_during_a_round_with_a_real_node(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A real `edge_node run` with federation beside the round: its /metrics shows the central it
    installed (v1, then the round's v2), and the aggregator's shows it online from its status."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import require
    from tests.support import paths
    from tests.support.edge_fixtures import build_bundles

    (tmp_path / "edge").mkdir()
    edge = build_bundles(tmp_path / "edge")
    bundle = tmp_path / "node" / "bundle"
    shutil.copytree(edge.a, bundle)
    agg_port, node_port = free_port(), free_port()
    (tmp_path / "agg.yaml").write_text(
        f"broker_url: {broker.url}\nsigning_key_file: {fleet['priv']}\n"
        f"initial_weights: {fleet['initial']}\nstate_db: {tmp_path / 'agg.db'}\n"
        "round: {min_submissions: 2, max_submissions: 2, rounds: 2, deadline_s: 120}\n"
        f"metrics: {{enabled: true, port: {agg_port}}}\n"
    )
    (tmp_path / "node.yaml").write_text(
        f"node_id: pi-9\nbundle: {bundle}\ndb: {tmp_path / 'n.db'}\n"
        f"camera: {{source: '{require(paths.CREMA_D / 'VideoFlash' / '1001_DFA_HAP_XX.flv')}', "
        "kind: file, realtime: false}\n"
        "kiosk: {enabled: false}\nadaptation: {enabled: false}\n"
        f"federation: {{enabled: true, broker_url: '{broker.url}', mqtt_version: '5', "
        f"fleet_public_key: '{fleet['pub']}'}}\n"
        f"metrics: {{enabled: true, port: {node_port}}}\n"
    )
    agg_url, node_url = f"http://127.0.0.1:{agg_port}", f"http://127.0.0.1:{node_port}"
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(tmp_path / "agg.yaml")], tmp_path / "agg.log").start()
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_node",
            "run",
            "--config",
            str(tmp_path / "node.yaml"),
            "--keep-running",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "node.log").open("wb"),
        env=edge.env(),
    )
    raw = [RawNode(broker, f"pi-{i}") for i in range(2)]
    base = {k: v for k, v in wcodec.load(fleet["initial"]).items() if "moving" not in k}
    rng = np.random.default_rng(9)

    def node_log() -> str:
        return (tmp_path / "node.log").read_text(errors="replace")[-3000:]

    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        assert wait_for(lambda: bool(scrape_open(node_url)), 60), node_log()
        assert wait_for(
            lambda: scrape_open(node_url).get("fedvfer_node_central_version") == 1, 90
        ), node_log()
        assert wait_for(
            lambda: scrape_open(agg_url).get("fedvfer_aggregator_nodes_online", 0) >= 1, 30
        ), agg.log()[-2000:]
        for r in raw:
            uid = uuid.uuid4().hex
            r.publish(update_frame(r.node_id, 1, 1, 1, personalized(base, rng), uid))
            ack = r.wait_ack(uid)
            assert ack is not None and ack.status == "stored", agg.log()[-2000:]
        assert wait_for(
            lambda: scrape_open(agg_url).get("fedvfer_aggregator_central_version") == 2, 30
        )
        assert wait_for(
            lambda: scrape_open(node_url).get("fedvfer_node_central_version") == 2, 90
        ), node_log()
        n = scrape_open(node_url)
        assert n["fedvfer_node_frames_total"] == 56 and n["fedvfer_node_clips_saved_total"] == 1
        assert n["fedvfer_node_outbox_depth"] == 0  # it personalizes nothing: nothing to send
        a = scrape_open(agg_url)
        assert a["fedvfer_aggregator_submissions_total"] == 2
        assert a["fedvfer_aggregator_round_id"] == 2
    finally:
        for r in raw:
            r.stop()
        node.terminate()
        node.wait(timeout=60)
        agg.stop()


def scrape_open(url: str) -> dict[str, float]:
    """Like :func:`scrape`, for an endpoint without a password; {} while it is not up."""
    try:
        code, body = get(url + "/metrics", None)
    except OSError:  # not listening yet
        return {}
    if code != 200:
        return {}
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out
