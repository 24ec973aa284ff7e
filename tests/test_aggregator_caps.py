"""Issue 14, 'Storage caps': at most ``max_replacements_per_round`` stored copies per node and
round after its first; beyond that ``rate_limited``, and the round file stops growing."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

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
from vfer import weights as wcodec

pytestmark = pytest.mark.slow


def test_replacements_beyond_the_cap_are_rate_limited_and_not_written(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = fleet_config(
        tmp_path,
        broker.url,
        fleet,
        "max_replacements_per_round: 3\n"
        "round: {min_submissions: 2, max_submissions: 2, deadline_s: 600}\n",
    )
    base = trainable_weights(fleet["initial"])
    rng = np.random.default_rng(5)
    node = RawNode(broker, "pi-flood")
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    answers = []
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        for seq in range(1, 13):
            uid = uuid.uuid4().hex
            node.publish(update_frame("pi-flood", 1, 1, seq, personalized(base, rng), uid))
            ack = node.wait_ack(uid)
            assert ack is not None, agg.log()[-2000:]
            answers.append(ack.reason or ack.status)
        round_file = tmp_path / "agg.db.payloads" / "round-000001.bin"
        size = round_file.stat().st_size
    finally:
        node.stop()
        agg.stop()
    assert answers == ["stored"] * 4 + ["rate_limited"] * 8
    body = len(wcodec.to_bytes(base))
    assert size == 4 * body  # the first copy and three replacements, nothing more
    state = State(tmp_path / "agg.db")
    try:
        assert state.accepted(1) == {"pi-flood": ("agg-1", 4)}  # the last one stored counts
        assert state.rejections() == {"rate_limited": 8}
    finally:
        state.close()
