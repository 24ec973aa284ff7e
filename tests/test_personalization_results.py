"""Issue 26: the adaptation child's typed report, and every report kept in the clip database.

Real SQLite (the node's ClipStore and its migrations); the report is what the child writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_node.personalization.protocol import (
    PROTOCOL_VERSION,
    AdaptReport,
    ProtocolError,
    read_report,
    write_report,
)
from edge_node.personalization.results import history, record
from edge_node.personalization.run import AdaptResult
from edge_node.store import ClipStore

CLASSES = ("anger", "happiness", "neutral")


def blocked() -> AdaptResult:
    return AdaptResult(
        status="blocked",
        reason="safety gate: collapsed",
        classes=CLASSES,
        selected_per_class={"anger": 0, "happiness": 9, "neutral": 1},
        candidates_per_class={"anger": 2, "happiness": 12, "neutral": 3},
        below_threshold=4,
        clips_total=21,
        base_version="central-v3",
        base_round=2,
        loss_before=0.9,
        loss_after=0.4,
        gate={
            "passed": False,
            "reasons": ["collapsed"],
            "notes": [],
            "metrics": {"entropy_new": 0.1, "entropy_central": 0.8, "holdout": 11.0},
        },
    )


def test_results_and_gate_verdicts_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    adapted = blocked()
    adapted.status, adapted.reason, adapted.gate = "adapted", "fine-tuned on 10 clips", {}
    adapted.new_version = "local-20261207T030000-abcdef"
    with ClipStore(db) as store:
        record(store, blocked().report(), finished_at=1000.0)
        record(store, adapted.report("result.trainable.safetensors"), finished_at=2000.0)
    with ClipStore(db) as store:  # the node restarted
        kept = history(store)
    assert [r.finished_at for r in kept] == [1000.0, 2000.0]
    first, second = kept[0].report, kept[1].report
    assert first.status == "blocked" and first.gate is not None
    assert first.gate.reasons == ["collapsed"] and first.gate.metrics["entropy_new"] == 0.1
    assert first.selected_per_class == {"anger": 0, "happiness": 9, "neutral": 1}
    assert second.status == "adapted" and second.gate is None
    assert second.new_version == "local-20261207T030000-abcdef"
    assert second.weights_file is None  # the file was the child's, gone once read
    assert AdaptResult.from_report(first).summary() == blocked().summary()


def test_the_report_file_round_trips_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    result = blocked()
    result.loss_after = float("nan")  # a NaN loss is what the guard rejects: it must travel
    write_report(path, result.report())
    back = read_report(path)
    assert back.protocol == PROTOCOL_VERSION and back.status == "blocked"
    assert back.loss_after is not None and np.isnan(back.loss_after)
    data = json.loads(path.read_text())
    data["protocol"] = PROTOCOL_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(ProtocolError, match="protocol"):
        read_report(path)
    path.write_text('{"status": "adapted"}')
    with pytest.raises(ProtocolError, match="not an adaptation report"):
        read_report(path)
    with pytest.raises(ProtocolError, match="no report"):
        read_report(tmp_path / "missing.json")
    assert AdaptReport.model_fields["protocol"].default == PROTOCOL_VERSION
