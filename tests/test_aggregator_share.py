"""Scale-out: a leader and a second worker split the updates via $share and combine partial sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.aggregator import AggregatorProcess
from tests.support.mosquitto import Broker
from tests.test_federation_e2e import (  # noqa: F401
    aggregator_args,
    assert_central_is_mean,
    broker,
    clients,
    fleet,
    play_round,
)

pytestmark = pytest.mark.slow


def test_two_workers_share_the_stream_and_the_central_is_the_mean(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    lead = AggregatorProcess(
        aggregator_args(broker, fleet, tmp_path, rounds=1, min_submissions=8, max_submissions=8),
        tmp_path / "lead.log",
    ).start()
    worker_args = [
        "--broker",
        broker.url,
        "--classes",
        "6",
        "--state-db",
        str(tmp_path / "w2.db"),
        "--signing-key",
        str(fleet["priv"]),
        "--worker-id",
        "agg-2",
    ]
    worker = AggregatorProcess(worker_args, tmp_path / "w2.log", command="worker").start()
    assert lead.wait_for_log("connected to", 20) and worker.wait_for_log("connected to", 20)
    nodes = clients(broker, fleet, tmp_path, 8)
    try:
        _, sent = play_round(nodes, 0, np.random.default_rng(11))
        for node in nodes:
            central = node.wait_central(timeout=30, newer_than=1)
            assert central is not None, lead.log()[-3000:] + worker.log()[-3000:]
            assert_central_is_mean(central.weights, sent)
        assert lead.wait(timeout=20) == 0
    finally:
        for node in nodes:
            node.stop()
        lead.stop()
        worker.stop()
    log = lead.log()
    via_1, via_2 = log.count("(via agg-1)"), log.count("(via agg-2)")
    assert via_1 > 0 and via_2 > 0 and via_1 + via_2 >= 8, log
