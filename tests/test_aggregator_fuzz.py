"""Issue 14's fuzzer: hypothesis draws hostile update messages (every envelope field, the body's
names, shapes, dtypes and values, the frame itself) and sends them to a real aggregator
(the service, in this process) on a real mosquitto.

Invariants: the aggregator stays alive; every message ends stored or with a reason (an ack,
a counted rejection, or 'no_answer' for an update of a round not known yet); nothing is poison
(no handler raised); after the fuzzing a restarted aggregator closes the round with honest
nodes and its central is finite. ``FUZZ_EXAMPLES`` sets the budget (50 in the test suite;
``make fuzz`` runs 5,000); ``FUZZ_REPORT=path.json`` writes the figures.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from broker_aggregator.config import AggregatorConfig
from broker_aggregator.service import AggregatorService
from broker_aggregator.store import State
from tests.support.aggregator import personalized
from tests.support.fuzz import FuzzMessage, control_messages, update_messages, valid_weights
from tests.support.mosquitto import Broker
from tests.support.raw_node import RawNode, subscriptions, update_frame, wait_subscribed
from tests.test_federation_e2e import broker  # noqa: F401
from vfer import weights as wcodec
from vfer.messages import CentralHeader, unpack

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
BASE = valid_weights(0)
#: What a message may end as: stored (or reported), a reason code, or no answer yet.
KNOWN = {
    "stored",
    "reported",
    "no_answer",
    "not_a_frame",
    "truncated",
    "oversized",
    "bad_header",
    "schema_version",
    "wrong_kind",
    "invalid_header",
    "checksum",
    "bad_topic",
    "forged_node_id",
    "wrong_round",
    "ahead",
    "round_closed",
    "stale_base",
    "replay",
    "rate_limited",
    "clip_count",
    "unknown_class",
    "bad_body",
    "missing_weights",
    "unexpected_weights",
    "wrong_shape",
    "wrong_dtype",
    "non_finite",
    "huge_values",
    "norm_bound",
    "no_samples",
}


def config(broker: Broker, tmp: Path, initial: Path, n: int) -> AggregatorConfig:  # noqa: F811
    return AggregatorConfig(
        broker_url=broker.url,
        insecure_unsigned=True,
        state_db=tmp / "agg.db",
        initial_weights=initial,
        round={"min_submissions": n, "max_submissions": n, "rounds": 1, "deadline_s": 3600},  # type: ignore[arg-type]
    )


def start(cfg: AggregatorConfig, broker: Broker) -> tuple[AggregatorService, threading.Thread]:  # noqa: F811
    before = subscriptions(broker)
    svc = AggregatorService(cfg)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    assert wait_subscribed(broker, before)
    return svc, thread


def wait_for(cond: object, timeout: float = 20.0) -> bool:
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        tick.wait(0.01)
    return False


def test_fuzzed_updates_never_stop_the_aggregator(broker: Broker, tmp_path: Path) -> None:  # noqa: F811
    initial = tmp_path / "v.safetensors"
    wcodec.save(initial, BASE)
    svc, thread = start(config(broker, tmp_path, initial, 10**6), broker)
    sender = RawNode(broker, "fz-sender", listen=False)
    notes: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(msg=update_messages(BASE))
    def one(msg: FuzzMessage) -> None:
        before = sum(svc.outcomes.values())
        sender.publish(msg.payload, node=msg.topic_node)
        assert wait_for(lambda: sum(svc.outcomes.values()) > before), f"no outcome: {msg.note}"
        assert thread.is_alive(), msg.note
        assert set(svc.outcomes) <= KNOWN, (svc.outcomes, msg.note)
        notes[msg.note.split("/")[0]] += 1

    try:
        one()
        fuzz_s = time.monotonic() - started
        assert svc.poisoned == 0 and svc.outcomes["poison"] == 0
        outcomes = dict(svc.outcomes)
        svc.stop_event.set()
        thread.join(timeout=20)
        assert not thread.is_alive() and svc.fatal is None
        # a restarted aggregator closes the round with two honest nodes
        state = State(tmp_path / "agg.db")
        counted = state.accepted_count(1)
        rejections = state.rejections()
        state.close()
        svc, thread = start(config(broker, tmp_path, initial, counted + 2), broker)
        rng = np.random.default_rng(1)
        for i in range(2):
            node = RawNode(broker, f"honest-{i}")
            uid = uuid.uuid4().hex
            node.publish(update_frame(node.node_id, 1, 1, 1, personalized(BASE, rng), uid))
            ack = node.wait_ack(uid)
            node.stop()
            assert ack is not None and ack.status == "stored"
        thread.join(timeout=60)
        assert not thread.is_alive() and svc.fatal is None
    finally:
        svc.stop_event.set()
        thread.join(timeout=20)
        sender.stop()
    state = State(tmp_path / "agg.db")
    latest = state.latest_central()
    state.close()
    assert latest is not None and latest[0] == 2
    header, body = unpack(latest[1], CentralHeader)
    central = wcodec.from_bytes(body)
    assert all(np.all(np.isfinite(a)) for a in central.values())
    report = os.environ.get("FUZZ_REPORT")
    if report:
        figures = {
            "examples": sum(outcomes.values()),
            "seconds": round(fuzz_s, 1),
            "outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])),
            "rejections_counted": rejections,
            "body_mutations": dict(notes),
            "poison": 0,
            "counted_in_round": counted,
            "central_version": header.version,
            "central_submissions": header.num_submissions,
        }
        Path(report).write_text(json.dumps(figures, indent=2))


def test_fuzzed_control_messages_never_stop_the_aggregator(broker: Broker, tmp_path: Path) -> None:  # noqa: F811
    """Rounds, centrals, progress, close and partial messages (what another aggregator login
    could send), each followed by a sentinel update: once the sentinel has an outcome, the
    control message before it was handled (one publisher, one queue, in order)."""
    initial = tmp_path / "v.safetensors"
    wcodec.save(initial, BASE)
    svc, thread = start(config(broker, tmp_path, initial, 10**6), broker)
    sender = RawNode(broker, "fz-control", listen=False)

    @settings(
        max_examples=max(10, EXAMPLES // 2),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(msg=control_messages(BASE))
    def one(msg: tuple[str, bytes]) -> None:
        topic, payload = msg
        before = sum(svc.outcomes.values())
        sender.client.publish(topic, payload, qos=1).wait_for_publish(10)
        sender.publish(b"sentinel", node="sentinel")
        assert wait_for(lambda: sum(svc.outcomes.values()) > before), topic
        assert thread.is_alive(), topic

    try:
        one()
        assert thread.is_alive() and svc.poisoned == 0, svc.outcomes
    finally:
        svc.stop_event.set()
        thread.join(timeout=20)
        sender.stop()
    assert svc.fatal is None
