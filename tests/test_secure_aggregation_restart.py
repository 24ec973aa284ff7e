"""Issue 23 live, a restart mid-protocol: the aggregator is killed (SIGKILL) while a secure
group waits for its last masked upload, started again on the same state database, resumes the
group from its stored state (republishing the current stage's message, which makes every node
send its answer again) and finishes the round with the central right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.aggregator import personalized, trainable_weights
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Fleet
from tests.support.secure_fleet import (  # noqa: F401 - fleet is a fixture
    NAMES,
    SPEC,
    TIMEOUT,
    Capture,
    ScriptedNode,
    assert_central_right,
    central_of,
    fleet,
    node_client,
    start_aggregator,
    submit,
)
from vfer.envelope import to_json
from vfer.secagg import flatten

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    pytest.mark.slow,
]


def test_a_killed_aggregator_resumes_the_group(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    capture = Capture.start(fleet)
    agg = start_aggregator(fleet, tmp_path, len(NAMES))
    honest = [node_client(fleet, n, tmp_path) for n in NAMES[:-1]]
    base = trainable_weights(tmp_path / "vfer_head.safetensors")
    mine = personalized(base, np.random.default_rng(99))
    s = ScriptedNode(fleet, NAMES[-1], lambda: flatten(mine, SPEC) - flatten(base, SPEC))
    assert s.session is None
    try:
        sent = {n.node_id: submit(n, seed=i)[0] for i, n in enumerate(honest)}
        sent[s.name] = mine
        s.join(round_id=1)
        session = s.session
        assert session is not None
        s.send(to_json(session.on_groups(s.groups())))
        s.send(to_json(session.on_keys(s.keys())))
        frame = s.masked(s.shares())
        capture.wait_kind("secagg_masked", 7)  # the honest uploads reached the aggregator
        agg.kill9()
        agg = start_aggregator(fleet, tmp_path, len(NAMES))
        assert agg.wait_for_log("resumed 1 secure groups", TIMEOUT), agg.log()[-3000:]
        s.send(frame)
        s.send(to_json(session.on_survivors(s.survivors())))
        s.send(to_json(session.on_unmask(s.unmask())))
        new = honest[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert new is not None and new.version == 2, agg.log()[-3000:]
        log = agg.log()
    finally:
        for node in honest:
            node.stop()
        s.stop()
        capture.client.stop()
        agg.stop()
    assert "round 1 finished: central v2 from 8 submissions" in log, log[-3000:]
    assert "refused" not in log.split("resumed 1 secure groups")[1]  # resent answers are no refusal
    assert_central_right(central_of(tmp_path), sent)
