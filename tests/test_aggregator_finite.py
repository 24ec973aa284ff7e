"""Issue 14, 'Finite before signing': the leader never signs a central that is not finite or is
outside ``max_abs_weight``; it logs why and keeps the previous central.

The envelope bounds stop the clip-count route (a claim of 10**308 clips is ``invalid_header``,
``tests/test_aggregator_bounds.py``), so here the overflow comes from the other input of the
mean: a partial sum. A worker gone rogue (it holds the aggregator login and the fleet key: a bug,
or a taken aggregator host) poses as worker ``agg-2``, reports one update, and answers the close
with that update's sum weighted by 1e300, the effect of an enormous weight claim: the float32
mean overflows to Inf. (Without the fleet key the leader never hears it:
``tests/test_aggregator_internal_signing.py``.)
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_aggregator.store import State
from tests.support.aggregator import (
    AggregatorProcess,
    fleet_config,
    personalized,
    trainable_weights,
)
from tests.support.mosquitto import Broker
from tests.support.raw_node import RawNode, subscriptions, update_frame, wait_subscribed
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import signing
from vfer import weights as wcodec
from vfer.fedavg import central_problem
from vfer.messages import (
    CloseMsg,
    PartialHeader,
    ProgressMsg,
    from_json,
    pack_signed,
    sign_message,
    to_json,
)


def test_central_problem_names_non_finite_and_huge_values() -> None:
    ok = {"a": np.ones((2, 2), np.float32), "b": np.zeros(0, np.float32)}
    assert central_problem(ok, 10.0) is None
    assert "NaN or Inf" in (
        central_problem({**ok, "a": np.full(3, np.inf, np.float32)}, 10.0) or ""
    )
    assert "NaN or Inf" in (
        central_problem({**ok, "a": np.full(3, np.nan, np.float32)}, 10.0) or ""
    )
    assert "> 10.0" in (central_problem({**ok, "a": np.full(3, -11, np.float32)}, 10.0) or "")


@pytest.mark.slow
def test_an_overflowing_mean_is_not_signed_and_the_previous_central_stays(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = fleet_config(
        tmp_path,
        broker.url,
        fleet,
        "round: {min_submissions: 2, max_submissions: 2, rounds: 1, deadline_s: 120}\n",
    )
    base = trainable_weights(fleet["initial"])
    rng = np.random.default_rng(6)
    evil_sum = {n: a.astype(np.float64) * 1e300 for n, a in personalized(base, rng).items()}
    answered = threading.Event()
    key = signing.load_private_key(fleet["priv"])
    fake = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-agg-2", protocol=mqtt.MQTTv5)

    def on_close(client: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        close = from_json(bytes(msg.payload), CloseMsg)
        nodes = close.assignments.get("agg-2", {})
        header = PartialHeader(
            worker_id="agg-2", round_id=close.round_id, nodes=nodes, total_weight=1.0
        )
        frame = pack_signed(header, wcodec.to_bytes(evil_sum), key)
        client.publish("fedvfer/aggregator/partial", frame, 1)
        answered.set()

    fake.on_message = on_close
    fake.connect("127.0.0.1", broker.port, clean_start=True)
    fake.subscribe("fedvfer/aggregator/close", qos=1)
    fake.loop_start()
    honest = RawNode(broker, "pi-0")
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        claim = ProgressMsg(
            node_id="pi-x", worker_id="agg-2", round_id=1, seq=1, update_id=uuid.uuid4().hex
        )
        signed = to_json(sign_message(claim, key))
        fake.publish("fedvfer/aggregator/progress", signed, 1).wait_for_publish(10)
        uid = uuid.uuid4().hex
        honest.publish(update_frame("pi-0", 1, 1, 1, personalized(base, rng), uid))
        ack = honest.wait_ack(uid)
        assert ack is not None and ack.status == "stored", agg.log()[-2000:]
        assert answered.wait(20), agg.log()[-2000:]
        assert agg.wait(timeout=30) == 0, agg.log()[-2000:]
    finally:
        fake.loop_stop()
        fake.disconnect()
        honest.stop()
        agg.stop()
    log = agg.log()
    assert "refusing to sign its central (" in log and "keeping central v1" in log, log[-2000:]
    state = State(tmp_path / "agg.db")
    try:
        latest = state.latest_central()
        row = state.current_round()
    finally:
        state.close()
    assert latest is not None and latest[0] == 1  # the initial central, still the newest
    assert row is not None and row.round_id == 1 and row.state == "finished"
