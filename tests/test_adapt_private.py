"""Issue 24's acceptance: a real `edge_node adapt` with ``adaptation.privacy`` on.

The node's own child (``python -m edge_node adapt ... --result``, :func:`adapt_in_child`) and the
operator's command (``--config node.yaml``) run on a real bundle and a real SQLite store whose
clips form visits (face tracks cut at clips.max_s). Checked: every per-visit gradient was clipped
to the bound, the noise's std is z times the clip (as planned and as drawn), the epsilon in
``/metrics``, in the update and on the kiosk page is the accountant's, and a node whose window is
spent neither adapts nor submits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from edge_node.bundles import BundleHome
from edge_node.config import FederationConfig, KioskConfig, NodeConfig, load_node_config
from edge_node.federation import FederationClient
from edge_node.kiosk import start_kiosk
from edge_node.metrics import start_node_metrics
from edge_node.personalization.child import adapt_in_child
from edge_node.personalization.ledger import (
    kiosk_notice,
    load_budget,
    night_number,
    status_privacy,
)
from edge_node.personalization.loop import Personalizer, may_submit, update_metrics
from edge_node.personalization.private import group_visits
from edge_node.personalization.results import history
from edge_node.personalization.run import AdaptResult
from edge_node.schedule import night_of
from edge_node.state import NodeState
from edge_node.store import ClipStore, NewClip
from tests.support.bundles import build_bundle
from tests.support.mosquitto import Broker
from vfer import signing
from vfer.bundle import Bundle
from vfer.envelope import unpack
from vfer.messages import (
    Personalization,
    RoundMsg,
    StatusMsg,
    UpdateHeader,
    from_json,
    sign_round,
    to_json,
)
from vfer.privacy.accountant import dpsgd_epsilon

pytestmark = pytest.mark.slow
CLASSES = ("happiness", "sadness", "anger", "neutral")
CLIP = 0.05  # small, so that clipping certainly shortens gradients


def test_visits_are_clips_closer_than_gap_s() -> None:
    starts = np.array([0.0, 10.2, 20.5, 100.0, 110.0, 300.0])
    ends = np.array([10.0, 20.0, 30.0, 105.0, 120.0, 301.0])
    assert group_visits(starts, ends, 1.0) == [[0, 1, 2], [3], [4], [5]]
    assert group_visits(starts, ends, 6.0) == [[0, 1, 2], [3, 4], [5]]
    assert group_visits(np.zeros(0), np.zeros(0), 1.0) == []


def fill_visits(db: Path, bundle_id: str, visits: int, seed: int = 0) -> None:
    """``visits`` face tracks of 1-3 clips each, each track favouring one class."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    centers = np.abs(rng.normal(0, 1, (k, 1280))).astype(np.float32)
    t = time.time() - 7200
    with ClipStore(db) as store:
        for v in range(visits):
            c = v % k
            for _ in range(int(rng.integers(1, 4))):
                n = int(rng.integers(30, 60))
                ifer = np.full((n, k), 0.1, np.float32)
                ifer[:, c] = 0.7
                emb = np.abs(centers[c] + rng.normal(0, 0.3, (n, 1280))).astype(np.float32)
                store.add_clip(
                    NewClip(t, t + n / 15, 1.0, bundle_id, CLASSES, np.arange(n) / 15, emb,
                            ifer, np.full(k, 1 / k, np.float32))
                )  # fmt: skip
                t += n / 15 + 0.1  # the same track: cut at max_s, the face still there
            t += 30.0  # the face left: the next clip is another visit


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as res:
        text = res.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def node_config(tmp_path: Path, bundle: Path, db: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(
        f"bundle: {bundle}\ndb: {db}\n"
        "metrics: {enabled: true, port: 0}\n"
        "adaptation:\n  p_threshold: 0.5\n  gate: report\n"
        f"  privacy: {{enabled: true, epsilon_per_night: 3, epsilon_window: 3, clip: {CLIP}, "
        "window_nights: 30, clips_per_visit: 2}\n",
        encoding="utf-8",
    )
    return path


def check_dp_sgd(p: dict[str, object]) -> None:
    """Every per-visit gradient clipped to the bound; the noise std is z * clip."""
    z, clip = float(p["noise_multiplier"]), float(p["clip"])  # type: ignore[arg-type]
    assert clip == CLIP and p["gradients"] and float(p["max_norm_before"]) > clip  # type: ignore[arg-type]
    assert float(p["max_norm_after"]) <= clip * (1 + 1e-5)  # type: ignore[arg-type]
    assert p["step_noise_std"] == pytest.approx([z * clip, z * clip], rel=1e-9)
    assert float(p["noise_drawn_std"]) == pytest.approx(z * clip, rel=0.05)  # type: ignore[arg-type]


def test_private_night_then_a_spent_window(tmp_path: Path, backbone_src: Path) -> None:
    b = build_bundle(tmp_path / "node" / "bundle", CLASSES, seed=7).path
    db = tmp_path / "node" / "clips.db"
    fill_visits(db, Bundle.load(b).bundle_id, visits=14)
    cfg = load_node_config(node_config(tmp_path, b, db))
    now = datetime.now()
    yesterday = night_of(now - timedelta(days=1), cfg.adaptation.window_start)

    # night 1: the node's loop runs its child (python -m edge_node adapt ... --result)
    params = Personalizer(cfg, NodeState(), threading.Event()).params()
    result, _ = adapt_in_child(db, b, params, night=yesterday)
    p = result.privacy
    assert p is not None and p["submit"] and p["visits"] == 14, result.reason
    check_dp_sgd(p)
    with ClipStore(db) as store:
        budget = load_budget(store, cfg.adaptation.privacy)
    n1 = night_number(yesterday)
    assert [s.night for s in budget.spends] == [n1]
    eps = dpsgd_epsilon(p["sampling_rate"], p["noise_multiplier"], p["steps"], 1e-5)  # type: ignore[arg-type]
    assert p["epsilon_night"] == pytest.approx(eps) and 0 < eps <= 3.0
    spent = budget.spent(night_number(night_of(now, cfg.adaptation.window_start)))
    assert p["epsilon_spent"] == pytest.approx(spent)

    assert may_submit(result) and update_metrics(result)["epsilon_night"] == pytest.approx(eps)
    assert update_metrics(result)["epsilon_spent"] == pytest.approx(spent)
    check_shown(cfg, spent)

    # night 2: the window (3) cannot hold another night of 3: no adaptation, nothing to send
    active = BundleHome(b).active().bundle_id
    tonight = night_of(now, cfg.adaptation.window_start)
    out = subprocess.run(
        [sys.executable, "-m", "edge_node", "adapt", "--config", str(tmp_path / "node.yaml"),
         "--night", tonight, "--json"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    second = json.loads(out.stdout)
    assert second["status"] == "skipped" and "privacy budget spent" in second["reason"]
    assert second["privacy"]["submit"] is False and second["new_version"] is None
    assert BundleHome(b).active().bundle_id == active
    assert BundleHome(b).night_done() == tonight  # refused for tonight: not retried all night
    with ClipStore(db) as store:
        assert len(load_budget(store, cfg.adaptation.privacy).spends) == 1
        stored = AdaptResult.from_report(history(store)[-1].report)
    assert stored.status == "skipped" and not may_submit(stored)
    check_shown(cfg, spent)  # unchanged: nothing was spent


def check_shown(cfg: NodeConfig, spent: float) -> None:
    """/metrics and the kiosk page's notice say what the accountant composed."""
    state = NodeState()
    metrics = start_node_metrics(cfg, state)
    try:
        got = scrape(metrics.url)
    finally:
        metrics.stop()
    assert got["fedvfer_node_privacy_epsilon_spent"] == pytest.approx(spent)
    assert got["fedvfer_node_privacy_epsilon_left"] == pytest.approx(max(0.0, 3.0 - spent))
    assert got["fedvfer_node_privacy_epsilon_per_night"] == 3.0
    status = status_privacy(cfg)  # what the node's status message carries to the fleet page
    assert status is not None and status.epsilon_spent == pytest.approx(spent)
    state.update(notice=kiosk_notice(cfg))
    stop = threading.Event()
    kiosk = start_kiosk(state, KioskConfig(port=0), cfg.db, stop)
    try:
        url = f"http://127.0.0.1:{kiosk.port}/api/state"
        with urllib.request.urlopen(url, timeout=10) as res:
            notice = json.loads(res.read())["notice"]["privacy"]
    finally:
        stop.set()
        kiosk.stop()
    assert "epsilon = 3 about one visit" in notice and f"{spent:.2f} of 3" in notice
    assert "over 30 nights" in notice


def test_the_update_and_the_status_carry_the_accountants_epsilon(
    tmp_path: Path, backbone_src: Path, mosquitto: Broker
) -> None:
    """The node's loop through a real broker: the update's metrics and the node's status say what
    the ledger holds; a spent window sends nothing."""
    b = build_bundle(tmp_path / "node" / "bundle", CLASSES, seed=8).path
    db = tmp_path / "node" / "clips.db"
    fill_visits(db, Bundle.load(b).bundle_id, visits=10, seed=1)
    cfg = load_node_config(node_config(tmp_path, b, db))
    priv, key = signing.generate_keypair(tmp_path / "fleet")
    fleet_key = signing.load_private_key(priv)
    got: dict[str, list[bytes]] = {"update": [], "status": []}
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, m: got[m.topic.rsplit("/", 1)[-1]].append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe([(f"fedvfer/nodes/{cfg.node_id}/update", 1), ("fedvfer/nodes/+/status", 1)])
    sub.loop_start()
    settings = FederationConfig(broker_url=mosquitto.url, fleet_public_key=key)
    personalizer = Personalizer(cfg, NodeState(), threading.Event())
    try:
        with FederationClient(cfg.node_id, settings, tmp_path / "outbox.db") as fed:
            personalizer.attach(fed)
            personalizer._personalize_for(fed, announce(sub, fed, open_round(1), fleet_key))
            assert wait(lambda: got["update"]), "no update sent"
            header, _ = unpack(got["update"][-1], UpdateHeader)
            with ClipStore(db) as store:
                budget = load_budget(store, cfg.adaptation.privacy)
            (spend,) = budget.spends
            today = night_number(night_of(datetime.now(), cfg.adaptation.window_start))
            spent = budget.spent(today)
            assert header.metrics["epsilon_night"] == pytest.approx(spend.epsilon)
            assert header.metrics["epsilon_spent"] == pytest.approx(spent)
            assert header.metrics["epsilon_left"] == pytest.approx(3.0 - spent)
            assert wait(lambda: any(privacy_of(p) == pytest.approx(spent) for p in got["status"]))

            rnd = announce(sub, fed, open_round(2), fleet_key)
            personalizer._personalize_for(fed, rnd)  # the window (3) is spent
            assert personalizer.results[-1].status == "skipped"
            assert fed.pending() == 1 and 2 not in BundleHome(b).rounds_done()
            sent = {unpack(u, UpdateHeader)[0].round_id for u in got["update"]}
            assert sent == {1}  # round 1's update may be resent (no ack here); nothing for 2
    finally:
        sub.loop_stop()
        sub.disconnect()


def open_round(round_id: int) -> RoundMsg:
    return RoundMsg(
        round_id=round_id,
        base_version=1,
        opened_at=0,
        deadline=1e12,
        min_submissions=1,
        max_submissions=9,
        classes=list(CLASSES),
        personalization=Personalization(p_threshold=0.5),
    )


def announce(pub: mqtt.Client, fed: FederationClient, rnd: RoundMsg, key: Any) -> RoundMsg:
    """Publish the signed round as the aggregator does; the node's client has it."""
    pub.publish(
        "fedvfer/round", to_json(sign_round(rnd, key)), qos=1, retain=True
    ).wait_for_publish(5)
    assert wait(lambda: (r := fed.current_round()) is not None and r.round_id == rnd.round_id)
    return fed.current_round()  # type: ignore[return-value]


def privacy_of(payload: bytes) -> float | None:
    msg = from_json(payload, StatusMsg)
    return None if msg.privacy is None else msg.privacy.epsilon_spent


def wait(cond: Callable[[], object], timeout: float = 15.0) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        ev.wait(0.05)
    return bool(cond())
