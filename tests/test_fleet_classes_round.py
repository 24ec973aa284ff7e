"""A 4-class fleet end to end with no --classes anywhere: init-fleet takes the classes, the
generated aggregator.yaml and node.yaml carry them, and a real round on the generated broker config
closes with a 4-class central."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_node.config import load_node_config
from tests.support.aggregator import random_v
from tests.support.federation import wait_acked
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Fleet, start_fleet
from tests.test_provisioning_identity import TIMEOUT, node_client, submit
from vfer import weights as wcodec
from vfer.classes import EMOTIONS_4

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    pytest.mark.slow,
]


@pytest.fixture
def fleet4(tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(tmp_path, nodes=("pi-1", "pi-2"), classes=EMOTIONS_4)
    try:
        yield f
    finally:
        f.broker.stop()


def test_a_4_class_round_needs_no_classes_flag(fleet4: Fleet, tmp_path: Path) -> None:
    from tests.support.aggregator import AggregatorProcess

    agg_yaml = yaml.safe_load((fleet4.dir / "aggregator" / "aggregator.yaml").read_text())
    assert agg_yaml["classes"] == list(EMOTIONS_4)
    for name in ("pi-1", "pi-2"):
        assert load_node_config(fleet4.dir / "nodes" / name / "node.yaml").classes == list(
            EMOTIONS_4
        )
    initial = tmp_path / "vfer_head.safetensors"
    wcodec.save(initial, random_v(4, np.random.default_rng(0), trainable_only=False))
    cfg = tmp_path / "aggregator-test.yaml"
    cfg.write_text(
        yaml.safe_dump(
            agg_yaml
            | {
                "state_db": str(tmp_path / "agg.db"),
                "initial_weights": str(initial),
                "round": {"min_submissions": 2, "max_submissions": 2, "rounds": 1},
            }
        )
    )
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    nodes = [node_client(fleet4, n, tmp_path) for n in ("pi-1", "pi-2")]
    rng = np.random.default_rng(2)
    try:
        ids = {n.node_id: submit(n, rng) for n in nodes}
        for n in nodes:
            assert wait_acked(n, ids[n.node_id], timeout=TIMEOUT) == "stored", agg.log()[-3000:]
        central = nodes[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert central is not None and central.version == 2
        assert central.classes == EMOTIONS_4
        assert central.weights["v_out.bias"].shape == (4,)
        assert agg.wait(timeout=60) == 0, agg.log()[-3000:]
    finally:
        for n in nodes:
            n.stop()
        agg.stop()
