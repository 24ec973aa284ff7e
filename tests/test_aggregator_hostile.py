"""Hostile and malformed updates: each is rejected with a log line and counted; the round completes."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_aggregator.store import State
from edge_node.federation import NodeUpdate
from tests.support.aggregator import (
    AggregatorProcess,
    fleet_config,
    personalized,
)
from tests.support.mosquitto import Broker
from tests.test_federation_e2e import broker, clients, fleet  # noqa: F401
from vfer import weights as wcodec
from vfer.fedavg import aggregate
from vfer.messages import MAGIC, CentralHeader, UpdateHeader, pack

pytestmark = pytest.mark.slow

W = dict[str, np.ndarray]


def frame(node: str, round_id: int, base: int, seq: int, weights: W, **over: object) -> bytes:
    fields: dict[str, object] = {
        "node_id": node,
        "round_id": round_id,
        "base_version": base,
        "seq": seq,
        "update_id": uuid.uuid4().hex,
        "created_at": 1.0,
        "clips_per_class": {"anger": 2},
    }
    fields.update(over)
    return pack(UpdateHeader.model_construct(**fields), wcodec.to_bytes(weights))  # type: ignore[arg-type]


def raw_frame(header: dict[str, object], body: bytes) -> bytes:
    """A frame with any header (checksum and size of ``body`` filled in)."""
    header = {**header, "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    head = json.dumps(header).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + body


def hostile_cases(base: W, ok: Callable[..., bytes]) -> list[tuple[str, str, bytes]]:
    """(reason code expected, node id in the topic, payload); round 2 is open from central v2."""
    good = personalized(base, np.random.default_rng(5))
    first = next(iter(good))
    header = json.loads(ok(good)[8 : 8 + struct.unpack(">I", ok(good)[4:8])[0]])
    body = wcodec.to_bytes(good)

    def mod(fn: Callable[[W], None]) -> W:
        w = {n: a.copy() for n, a in good.items()}
        fn(w)
        return w

    tampered = bytearray(ok(good))
    tampered[-10] ^= 0xFF
    return [
        ("not_a_frame", "evil", b"\x00garbage\xff" * 50),
        ("not_a_frame", "evil", b""),
        ("truncated", "evil", ok(good)[:-1000]),
        ("oversized", "evil", MAGIC + b"\x00" * 1_200_000),
        ("bad_header", "evil", MAGIC + struct.pack(">I", 5) + b"{{{{{" + body),
        ("schema_version", "evil", raw_frame({**header, "schema": 2}, body)),
        (
            "wrong_kind",
            "evil",
            pack(CentralHeader(version=9, round_id=1, classes=["a", "b"], created_at=0), body),
        ),
        ("checksum", "evil", bytes(tampered)),
        ("forged_node_id", "evil", frame("pi-0", 2, 2, 50, good)),
        ("wrong_round", "evil", frame("evil", 1, 1, 51, good)),
        ("stale_base", "evil", frame("evil", 2, 1, 52, good)),
        ("ahead", "evil", frame("evil", 99, 2, 53, good)),
        ("replay", "evil", frame("evil", 2, 2, 5, good)),  # seq 5 < the stored seq 100
        ("wrong_shape", "evil", ok(mod(lambda w: w.update({first: np.zeros((3, 3), np.float32)})))),
        ("missing_weights", "evil", ok(mod(lambda w: w.pop(first)))),
        (
            "unexpected_weights",
            "evil",
            ok(mod(lambda w: w.update({"x.kernel": np.zeros(2, np.float32)}))),
        ),
        ("wrong_dtype", "evil", ok({n: a.astype(np.int16) for n, a in good.items()})),
        (
            "wrong_dtype",
            "evil",
            ok({n: a.astype(np.float16) for n, a in good.items()}, dtype="float16"),
        ),
        ("non_finite", "evil", ok(mod(lambda w: w[first].flat.__setitem__(0, np.nan)))),
        ("non_finite", "evil", ok(mod(lambda w: w[first].flat.__setitem__(0, np.inf)))),
        ("huge_values", "evil", ok(mod(lambda w: w[first].flat.__setitem__(0, 1e9)))),
        ("norm_bound", "evil", ok({n: a + 1.0 for n, a in good.items()})),
        ("bad_body", "evil", raw_frame(header, b"not safetensors")),
        ("invalid_header", "evil", ok(good, clips_per_class={"anger": -3})),
        ("unknown_class", "evil", ok(good, clips_per_class={"joy": 3})),
        ("bad_topic", "bad.id", ok(good)),
    ]


def test_hostile_updates_are_each_rejected_and_the_round_completes(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = fleet_config(
        tmp_path,
        broker.url,
        fleet,
        "max_payload_bytes: 1000000\nmax_update_norm: 50\n"
        "round: {min_submissions: 4, max_submissions: 4, rounds: 2, deadline_s: 120}\n",
    )
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    nodes = clients(broker, fleet, tmp_path, 3)
    rng = np.random.default_rng(3)
    attacker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="evil", protocol=mqtt.MQTTv5)
    attacker.connect("127.0.0.1", broker.port)
    attacker.loop_start()
    try:
        # Round 1 with four honest submissions, so that round 2 has stale rounds and bases.
        central = _play_honest(nodes, rng, round_id=1, extra=None, attacker=attacker)
        base = nodes[0].wait_central(timeout=20, newer_than=1)
        assert base is not None and base.version == 2 and nodes[0].wait_round(20, after=1)
        ok: Callable[..., bytes] = lambda w, **o: frame("evil", 2, 2, 100, w, **o)  # noqa: E731
        legit = personalized(base.weights, rng)
        _publish(attacker, "fedvfer/nodes/evil/update", frame("evil", 2, 2, 100, legit))
        assert agg.wait_for_log("round 2: evil submitted", 20), agg.log()[-2000:]
        cases = hostile_cases(base.weights, ok)
        assert len(cases) >= 20
        for n, (reason, node, payload) in enumerate(cases):
            before = agg.log().count(f"reason={reason} ")
            _publish(attacker, f"fedvfer/nodes/{node}/update", payload)
            seen = _wait(lambda r=reason, b=before: agg.log().count(f"reason={r} ") > b)
            assert seen, f"case {n} ({reason}) not rejected:\n{agg.log()[-1500:]}"
        central = _play_honest(nodes, rng, round_id=2, extra=legit, attacker=attacker)
        assert agg.wait(timeout=20) == 0
    finally:
        attacker.loop_stop()
        attacker.disconnect()
        for node in nodes:
            node.stop()
        agg.stop()
    assert central is not None
    counts = State(tmp_path / "agg.db").rejections()
    assert counts["non_finite"] == 2 and counts["wrong_dtype"] == 2
    # 'ahead' is no verdict (no ack, the node sends again later), so it is not counted
    assert "ahead" not in counts and sum(counts.values()) >= len(cases) - 1


def _play_honest(
    nodes: list, rng: np.random.Generator, round_id: int, extra: W | None, attacker: mqtt.Client
) -> W:  # type: ignore[type-arg]
    sent: dict[str, W] = {}
    for node in nodes:
        rnd = node.wait_round(timeout=20, after=round_id - 1)
        central = node.wait_central(timeout=20, newer_than=round_id - 1)
        assert rnd is not None and central is not None and rnd.round_id == round_id
        w = personalized(central.weights, rng)
        node.submit(NodeUpdate(rnd.round_id, rnd.base_version, w, {"anger": 1}))
        sent[node.node_id] = w
    if extra is None:  # round 1: the fourth submission comes from the raw client
        extra = personalized(central.weights, rng)
        _publish(attacker, "fedvfer/nodes/evil/update", frame("evil", 1, 1, 1, extra))
    sent["evil"] = extra
    result = nodes[0].wait_central(timeout=30, newer_than=round_id)
    assert result is not None
    expected = aggregate([(sent[n], 1) for n in sorted(sent)])
    for name, arr in result.weights.items():
        np.testing.assert_array_equal(arr, expected[name], err_msg=name)
    return result.weights


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(10)


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        done.wait(0.05)
    return cond()
