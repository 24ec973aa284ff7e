"""Issue 14, 'Why' 1: no integer out of range, and no message whose handling raises, stops the
aggregator. Envelopes are bounded (pure tests); on a real mosquitto a seq of 2**63 and other
out-of-range headers are rejected with a reason while the round completes; a message whose
handling raises goes to the ``poison`` table, is answered ``rejected``/``poison``, and is
answered the same way, without being handled again, after a restart.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

import broker_aggregator.service as service_mod
from broker_aggregator.config import AggregatorConfig
from broker_aggregator.service import AggregatorService
from broker_aggregator.store import State
from broker_aggregator.validate import CheckedUpdate
from broker_aggregator.worker import Worker
from tests.support.aggregator import (
    AggregatorProcess,
    fleet_config,
    personalized,
    poison_rows,
    trainable_weights,
)
from tests.support.mosquitto import Broker
from tests.support.raw_node import (
    RawNode,
    raw_frame,
    subscriptions,
    update_frame,
    wait_subscribed,
)
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import weights as wcodec
from vfer.fedavg import aggregate
from vfer.messages import MAX_ID, AckMsg, MessageError, UpdateHeader, from_json, unpack

GOOD = {
    "schema": 1,
    "kind": "update",
    "node_id": "pi-1",
    "round_id": 1,
    "base_version": 1,
    "update_id": "abcdef012345",
    "seq": 1,
    "created_at": 1.0,
    "clips_per_class": {"anger": 2},
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 2**63),
        ("seq", MAX_ID + 1),
        ("round_id", 2**64),
        ("base_version", -1),
        ("clips_per_class", {"anger": 10**308}),
        ("clips_per_class", {"anger": -1}),
        ("clips_per_class", {f"c{i}": 1 for i in range(300)}),
        ("metrics", {"loss": float("nan")}),
        ("created_at", float("inf")),
        ("update_id", "x" * 65),
    ],
)
def test_out_of_range_header_fields_are_invalid_header(field: str, value: object) -> None:
    body = b"\x00" * 8
    with pytest.raises(MessageError) as err:
        unpack(raw_frame({**GOOD, field: value}, body), UpdateHeader)
    assert err.value.reason == "invalid_header"


def test_the_largest_ids_in_range_are_accepted() -> None:
    header, _ = unpack(raw_frame({**GOOD, "seq": MAX_ID, "round_id": MAX_ID}, b""), UpdateHeader)
    assert header.seq == MAX_ID and header.round_id == MAX_ID


@pytest.mark.parametrize(
    "raw",
    [
        b'{"schema":1,"kind":"ack","x":' + b"9" * 5000 + b"}",  # int literal past Python's limit
        b'{"schema":1,"kind":"ack","x":' + b"[" * 20000 + b"]" * 20000 + b"}",  # deep nesting
        b'{"schema":1,"kind":"ack","node_id":"pi-1","round_id":1,"update_id":"u","status":"stored"'
        b',"reason":NaN}',
    ],
)
def test_json_that_python_chokes_on_is_a_reason_not_an_exception(raw: bytes) -> None:
    with pytest.raises(MessageError) as err:
        from_json(raw, AckMsg)
    assert err.value.reason in ("bad_header", "invalid_header")


@pytest.mark.slow
def test_seq_2_63_and_other_out_of_range_updates_kill_nothing_even_after_a_restart(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = fleet_config(
        tmp_path,
        broker.url,
        fleet,
        "max_clips_per_class: 1000\n"
        "round: {min_submissions: 2, max_submissions: 2, rounds: 1, deadline_s: 120}\n",
    )
    base = trainable_weights(fleet["initial"])
    rng = np.random.default_rng(4)
    good = personalized(base, rng)
    body = wcodec.to_bytes(good)
    hostile = [
        raw_frame({**GOOD, "node_id": "evil", "seq": 2**63}, body),
        raw_frame({**GOOD, "node_id": "evil", "round_id": 2**63, "seq": 2}, body),
        raw_frame({**GOOD, "node_id": "evil", "clips_per_class": {"anger": 10**308}}, body),
        raw_frame(
            {},
            body,
            header_json=json.dumps({**GOOD, "node_id": "evil"})[:-1].encode()
            + b',"created_at":NaN}',
        ),
    ]
    evil = RawNode(broker, "evil")
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    nodes = [RawNode(broker, f"pi-{i}") for i in range(2)]
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        for payload in hostile:
            evil.publish(payload)
        claim = update_frame("evil", 1, 1, 7, good, clips_per_class={"anger": 10**6})
        evil.publish(claim)
        ack = evil.wait_ack(
            json.loads(claim[8 : 8 + int.from_bytes(claim[4:8], "big")])["update_id"]
        )
        assert ack is not None and (ack.status, ack.reason) == ("rejected", "clip_count"), (
            agg.log()[-2000:]
        )
        assert agg.wait_for_log("reason=invalid_header", 10)
        agg.kill9()
        before = subscriptions(broker)
        agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg2.log").start()
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        for payload in hostile:  # the same messages again, to the restarted aggregator
            evil.publish(payload)
        sent = {}
        for node in nodes:
            w = personalized(base, rng)
            uid = uuid.uuid4().hex
            node.publish(update_frame(node.node_id, 1, 1, 1, w, uid))
            got = node.wait_ack(uid)
            assert got is not None and got.status == "stored", agg.log()[-2000:]
            sent[node.node_id] = w
        assert agg.wait(timeout=30) == 0, agg.log()[-2000:]
    finally:
        for n in (evil, *nodes):
            n.stop()
        agg.stop()
    state = State(tmp_path / "agg.db")
    try:
        counts = state.rejections()
        row = state.current_round()
        latest = state.latest_central()
    finally:
        state.close()
    assert counts.get("invalid_header", 0) >= 2 * len(hostile), counts
    assert row is not None and row.state == "finished" and latest is not None and latest[0] == 2
    assert "Traceback" not in agg.log()


class _FaultyWorker(Worker):
    """A worker with a bug that raises on one update id (fault injection for the poison path)."""

    poison_id = "poison0123456789"
    calls = 0

    def handle_update(self, checked: CheckedUpdate):  # type: ignore[no-untyped-def]
        if checked.header.update_id == self.poison_id:
            type(self).calls += 1
            raise RuntimeError("a bug that only this message triggers")
        return super().handle_update(checked)


def _service(cfg: AggregatorConfig) -> tuple[AggregatorService, threading.Thread]:
    svc = AggregatorService(cfg)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    return svc, thread


@pytest.mark.slow
def test_a_message_whose_handling_raises_is_poison_and_stays_poison_after_a_restart(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_mod, "Worker", _FaultyWorker)
    cfg = AggregatorConfig(
        broker_url=broker.url,
        insecure_unsigned=True,
        state_db=tmp_path / "agg.db",
        initial_weights=fleet["initial"],
        round={"min_submissions": 2, "max_submissions": 2, "rounds": 1, "deadline_s": 120},  # type: ignore[arg-type]
    )
    base = trainable_weights(fleet["initial"])
    rng = np.random.default_rng(9)
    poison = update_frame("pi-bad", 1, 1, 1, personalized(base, rng), _FaultyWorker.poison_id)
    bad = RawNode(broker, "pi-bad")
    nodes = [RawNode(broker, f"pi-{i}") for i in range(2)]
    before = subscriptions(broker)
    svc, thread = _service(cfg)
    try:
        assert wait_subscribed(broker, before)
        bad.publish(poison)
        ack = bad.wait_ack(_FaultyWorker.poison_id)
        assert ack is not None and (ack.status, ack.reason) == ("rejected", "poison")
        assert _FaultyWorker.calls >= 1 and thread.is_alive()
        svc.stop_event.set()
        thread.join(timeout=20)
        assert not thread.is_alive()
        calls = _FaultyWorker.calls
        before = subscriptions(broker)
        svc, thread = _service(cfg)  # a restart: the same message is delivered again
        assert wait_subscribed(broker, before)
        bad.publish(poison)
        ack = bad.wait_ack(_FaultyWorker.poison_id)
        assert ack is not None and (ack.status, ack.reason) == ("rejected", "poison")
        assert _FaultyWorker.calls == calls  # answered from the poison table, not handled
        sent = {}
        for node in nodes:
            w = personalized(base, rng)
            uid = uuid.uuid4().hex
            node.publish(update_frame(node.node_id, 1, 1, 1, w, uid))
            got = node.wait_ack(uid)
            assert got is not None and got.status == "stored"
            sent[node.node_id] = w
        thread.join(timeout=30)
        assert not thread.is_alive() and svc.fatal is None
    finally:
        svc.stop_event.set()
        thread.join(timeout=20)
        for n in (bad, *nodes):
            n.stop()
    state = State(tmp_path / "agg.db")
    try:
        rows = poison_rows(state)
        latest = state.latest_central()
    finally:
        state.close()
    assert len(rows) == 1 and rows[0][1] == _FaultyWorker.poison_id and rows[0][2] == "poison"
    assert latest is not None and latest[0] == 2
    central = wcodec.from_bytes(latest[1][8 + int.from_bytes(latest[1][4:8], "big") :])
    expected = aggregate([(sent[n], 1) for n in sorted(sent)])
    for name, arr in expected.items():
        np.testing.assert_array_equal(central[name], arr, err_msg=name)
