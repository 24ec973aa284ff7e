"""Issue 17 played for real on a mosquitto with persistence: every counted update is told
'stored' (again, whatever happened to its first ack), and every round's central is published
before the service exits. Each moment is hit by watching the state db or the nodes' outboxes,
never by sleeping; each central is compared bit for bit with the no-fault mean.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_node.federation import NodeUpdate
from tests.support.aggregator import AggregatorProcess, personalized
from tests.support.mosquitto import Broker, start_mosquitto
from tests.support.raw_node import RawNode, subscriptions, update_frame, wait_subscribed
from tests.test_federation_e2e import BROKER_CONF, aggregator_args, clients, fleet  # noqa: F401
from vfer import weights as wcodec
from vfer.fedavg import aggregate
from vfer.messages import CentralHeader, unpack

pytestmark = pytest.mark.slow

W = dict[str, np.ndarray]


def persistent_broker(tmp: Path, port: int | None = None) -> Broker:
    store = tmp / "mosquitto-data"
    store.mkdir(exist_ok=True)
    conf = BROKER_CONF + f"persistence true\npersistence_location {store}/\nautosave_interval 1\n"
    return start_mosquitto(tmp / "mosquitto", conf, port=port)


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        conn.close()


def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        tick.wait(0.05)
    return cond()


def round_state(db: Path, round_id: int = 1) -> str | None:
    rows = query(db, f"SELECT state FROM rounds WHERE round_id={round_id}")
    return str(rows[0][0]) if rows else None


def counted(db: Path, round_id: int = 1) -> dict[str, str]:
    rows = query(db, f"SELECT node_id, worker_id FROM accepted WHERE round_id={round_id}")
    return {str(r[0]): str(r[1]) for r in rows}


def rejections(db: Path) -> dict[str, int]:
    return {
        str(r[0]): int(r[1])
        for r in query(db, "SELECT reason, sum(count) FROM rejections GROUP BY reason")
    }  # type: ignore[arg-type]


def base_weights(fleet: dict[str, Path]) -> W:  # noqa: F811
    return {k: v for k, v in wcodec.load(fleet["initial"]).items() if "moving" not in k}


def retained_central(broker: Broker, timeout: float = 20.0) -> tuple[CentralHeader, W] | None:
    """Read the retained central back from the broker with a fresh client."""
    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"reader-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )

    def on_message(client: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    c.on_message = on_message
    c.connect("127.0.0.1", broker.port, clean_start=True)
    c.subscribe("fedvfer/central/bundle", qos=1)
    c.loop_start()
    try:
        if not done.wait(timeout):
            return None
    finally:
        c.loop_stop()
        c.disconnect()
    header, body = unpack(got[0], CentralHeader)
    return header, wcodec.from_bytes(body)


def assert_same(a: W, b: W) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def submit(
    nodes: list[RawNode], base: W, rng: np.random.Generator
) -> tuple[W, dict[str, tuple[str, bytes]]]:
    """Each node sends one update for round 1; returns what was sent and (update_id, frame)."""
    sent, frames = {}, {}
    for node in nodes:
        w = personalized(base, rng)
        uid = uuid.uuid4().hex
        frame = update_frame(node.node_id, 1, 1, 1, w, uid)
        node.publish(frame)
        sent[node.node_id] = w
        frames[node.node_id] = (uid, frame)
    return sent, frames


def mean_of(sent: dict[str, W]) -> W:
    return aggregate([(sent[n], 1) for n in sorted(sent)])


def test_a_lost_first_ack_then_a_resend_after_the_close_is_answered_stored(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = persistent_broker(tmp_path)
    db = tmp_path / "agg.db"
    args = aggregator_args(broker, fleet, tmp_path, rounds=2, min_submissions=3, max_submissions=3)
    before = subscriptions(broker)
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    lossy = RawNode(broker, "pi-0", listen=False)  # its first ack is lost
    nodes = [lossy, RawNode(broker, "pi-1"), RawNode(broker, "pi-2")]
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        sent, frames = submit(nodes, base_weights(fleet), np.random.default_rng(1))
        assert wait_until(lambda: round_state(db, 2) == "open"), agg.log()[-3000:]
        lossy.listen()
        uid, frame = frames["pi-0"]
        lossy.publish(frame)  # resend after the close: round 2 is open now
        ack = lossy.wait_ack(uid)
        assert ack is not None and (ack.status, ack.reason) == ("stored", None), agg.log()[-2000:]
        lossy.publish(frame)  # and again: the same answer, still no rejection
        ack = lossy.wait_ack(uid)
        assert ack is not None and ack.status == "stored"
        got = retained_central(broker)
        assert got is not None and got[0].version == 2
        assert_same(got[1], mean_of(sent))
        assert rejections(db) == {}
    finally:
        for n in nodes:
            n.stop()
        agg.stop()
        broker.stop()


def resend_until_counted(
    nodes: list[RawNode], frames: dict[str, tuple[str, bytes]], db: Path, timeout: float = 60.0
) -> bool:
    """What a node does when no ack comes: the same frame again, until every update counts.

    A worker that gets an update before it has taken in the round and its central (both arrive
    with the update when everything starts at once) defers it, and the leader gives no answer
    to such a lagging view ("it comes again"; broker_aggregator.answers), so only a resend
    makes it count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wait_until(lambda: len(counted(db)) == len(nodes), 3.0):
            return True
        done = counted(db)
        for node in nodes:
            if node.node_id not in done:
                node.publish(frames[node.node_id][1])
    return len(counted(db)) == len(nodes)


def test_kill9_of_the_leader_while_closing_resends_the_unsent_ack(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = persistent_broker(tmp_path)
    db = tmp_path / "agg.db"
    # Close at the deadline (not at max_submissions), so the test can freeze agg-2 first.
    args = aggregator_args(
        broker, fleet, tmp_path, rounds=1, min_submissions=3, max_submissions=50, deadline_s=8
    )
    w2_args = [str(tmp_path / "w2.db") if a == str(db) else a for a in args]
    w2_args += ["--worker-id", "agg-2"]
    before = subscriptions(broker)
    worker = AggregatorProcess(w2_args, tmp_path / "w2.log", command="worker").start()
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    lossy = RawNode(broker, "pi-0", listen=False)
    nodes = [lossy, RawNode(broker, "pi-1"), RawNode(broker, "pi-2")]
    try:
        assert wait_subscribed(broker, before + 1), agg.log()[-2000:]
        sent, frames = submit(nodes, base_weights(fleet), np.random.default_rng(2))
        assert resend_until_counted(nodes, frames, db), agg.log()[-3000:]
        assert round_state(db) == "open" and "agg-2" in counted(db).values(), counted(db)
        os.kill(worker.pid, signal.SIGSTOP)  # its partial sum will not come
        assert wait_until(lambda: round_state(db) == "closing"), agg.log()[-3000:]
        agg.kill9()  # at the closing sum, with pi-0's ack never received
        lossy.listen()
        agg = AggregatorProcess(args, tmp_path / "agg2.log").start()
        ack = lossy.wait_ack(frames["pi-0"][0])
        assert ack is not None and ack.status == "stored", agg.log()[-3000:]
        os.kill(worker.pid, signal.SIGCONT)
        assert agg.wait(timeout=40) == 0, agg.log()[-3000:]
        got = retained_central(broker)
        assert got is not None and got[0].version == 2 and got[0].num_submissions == 3
        assert_same(got[1], mean_of(sent))
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
        for n in nodes:
            n.stop()
        agg.stop()
        worker.stop()
        broker.stop()


def test_last_round_closed_with_the_broker_down_is_published_before_exit(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = persistent_broker(tmp_path)
    db = tmp_path / "agg.db"
    args = aggregator_args(
        broker, fleet, tmp_path, rounds=1, min_submissions=3, max_submissions=50, deadline_s=8
    )
    before = subscriptions(broker)
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    nodes = [RawNode(broker, f"pi-{i}") for i in range(3)]
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        sent, frames = submit(nodes, base_weights(fleet), np.random.default_rng(3))
        for node in nodes:
            ack = node.wait_ack(frames[node.node_id][0])
            assert ack is not None and ack.status == "stored"
        assert round_state(db) == "open"
        broker.proc.kill()  # kill -9 of the broker; the round closes at its deadline without it
        broker.proc.wait(timeout=10)
        assert wait_until(lambda: round_state(db) == "finished"), agg.log()[-3000:]
        assert wait_until(lambda: "confirming round 1" in agg.log(), 10)
        assert agg.proc is not None and agg.proc.poll() is None, (
            "exited with the central unpublished"
        )
        agg.kill9()  # and a restart while the broker is still down
        agg = AggregatorProcess(args, tmp_path / "agg2.log").start()
        assert agg.wait_for_log("confirming round 1 and central v2", 20), agg.log()[-2000:]
        assert agg.proc is not None and agg.proc.poll() is None
        broker = persistent_broker(tmp_path, port=broker.port)
        assert agg.wait(timeout=40) == 0, agg.log()[-3000:]
        assert "are on the broker" in agg.log()
        got = retained_central(broker)
        assert got is not None and got[0].version == 2
        assert_same(got[1], mean_of(sent))
    finally:
        for n in nodes:
            n.stop()
        agg.stop()
        broker.stop()


def test_a_frozen_aggregator_completes_its_round_without_spurious_rejections(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = persistent_broker(tmp_path)
    db = tmp_path / "agg.db"
    args = aggregator_args(broker, fleet, tmp_path, rounds=1, min_submissions=3, max_submissions=3)
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    nodes = clients(broker, fleet, tmp_path, 3)
    for node in nodes:
        node.resend_s = 0.5
    rng = np.random.default_rng(4)
    try:
        sent = {}
        for node in nodes:
            rnd, central = node.wait_round(timeout=20), node.wait_central(timeout=20)
            assert rnd is not None and central is not None
        os.kill(agg.pid, signal.SIGSTOP)
        for node in nodes:
            w = personalized(central.weights, rng)
            node.submit(NodeUpdate(1, 1, w, {"fear": 4}))
            sent[node.node_id] = w
        outboxes = [tmp_path / f"outbox-{i}.db" for i in range(3)]

        def sends() -> list[int]:
            return [
                int(query(o, "SELECT max(sent_count) FROM outbox")[0][0] or 0) for o in outboxes
            ]

        assert wait_until(lambda: min(sends()) >= 4), sends()  # resent copies pile up
        os.kill(agg.pid, signal.SIGCONT)
        for node in nodes:
            got = node.wait_central(timeout=30, newer_than=1)
            assert got is not None, agg.log()[-3000:]
            assert_same(got.weights, mean_of(sent))
        assert wait_until(lambda: all(n.pending() == 0 for n in nodes), 20)
        assert agg.wait(timeout=30) == 0
        assert rejections(db) == {}, rejections(db)
    finally:
        if agg.proc is not None and agg.proc.poll() is None:
            os.kill(agg.pid, signal.SIGCONT)
        for node in nodes:
            node.stop()
        agg.stop()
        broker.stop()


def test_sigterm_before_the_final_central_is_confirmed_exits_non_zero(
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = persistent_broker(tmp_path)
    args = aggregator_args(broker, fleet, tmp_path, rounds=1, min_submissions=1, max_submissions=1)
    before = subscriptions(broker)
    agg = AggregatorProcess(args, tmp_path / "agg.log").start()
    node = RawNode(broker, "pi-0")
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        submit([node], base_weights(fleet), np.random.default_rng(5))
        assert agg.wait(timeout=30) == 0, agg.log()[-2000:]
        assert "round 1 and central v2 are on the broker" in agg.log()
        broker.stop()  # the next start finds all rounds done and no broker
        agg = AggregatorProcess(args, tmp_path / "agg2.log").start()
        assert agg.wait_for_log("broker not reachable", 20), agg.log()[-2000:]
        agg.stop()  # SIGTERM
        assert agg.proc is not None and agg.proc.returncode == 1
        assert "Error: stopped before the final round and central were confirmed" in agg.log()
    finally:
        node.stop()
        agg.stop()
        broker.stop()
