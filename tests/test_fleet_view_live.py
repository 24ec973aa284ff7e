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
