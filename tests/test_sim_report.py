"""The simulation report's fleet figures and gate verdicts, on hand-made node rows (no models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.experiments.stats import summarize_gains
from training.sim.node import ADAPTATIONS, keep_results, read_adaptations
from training.sim.report import fleet_summary, gate_summary, gate_text, kept, markdown, node_gate


def gate(passed: bool, *reasons: str, notes: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"passed": passed, "reasons": list(reasons), "notes": list(notes), "metrics": {}}


def adaptation(status: str, new_version: str | None, g: dict[str, Any] | None) -> dict[str, Any]:
    return {"status": status, "reason": "", "new_version": new_version, "gate": g or {}}


def row(name: str, change: float, personalized: bool = True, g: Any = None) -> dict[str, Any]:
    before = 0.4
    return {
        "node": name,
        "subject": f"s-{name}",
        "recorded_clips": 30,
        "selected_clips": 12,
        "eval_clips": 36,
        "personalized": personalized,
        "gate": g,
        "micro_f1_before": before,
        "micro_f1_after": before + change,
        "micro_f1_change": change,
        "macro_f1_before": before / 2,
        "macro_f1_after": before / 2 + change / 2,
        "macro_f1_change": change / 2,
    }


def test_the_verdict_is_the_one_the_node_recorded_for_the_scored_head() -> None:
    mine = [
        adaptation("skipped", None, None),
        adaptation("adapted", "local-1", gate(False, "single_class_selection")),
        adaptation("adapted", "local-2", gate(True)),
    ]
    assert node_gate(mine, "local-1") == {
        "passed": False,
        "reasons": ["single_class_selection"],
        "notes": [],
    }
    assert node_gate(mine, "local-2") == {"passed": True, "reasons": [], "notes": []}
    assert node_gate(mine, "local-3") is None  # a head the node has no record of
    assert node_gate(mine, None) is None  # the node never personalized
    assert node_gate([adaptation("adapted", "local-4", None)], "local-4") is None  # gate: off
    assert gate_text(node_gate(mine, "local-1")) == "would block: single_class_selection"
    assert gate_text(node_gate(mine, "local-2")) == "passed"
    assert gate_text(None) == "-"


def test_fleet_summary_is_the_bootstrap_over_every_node() -> None:
    nodes = [row("n1", 0.1), row("n2", -0.05), row("n3", 0.0, personalized=False), row("n4", 0.2)]
    fleet = fleet_summary(nodes)
    assert fleet is not None
    assert (fleet["nodes"], fleet["personalized"]) == (4, 3)
    micro = fleet["micro_f1_change"]
    assert micro == summarize_gains(np.array([0.1, -0.05, 0.0, 0.2])).as_dict()
    assert (micro["n"], micro["gained"], micro["lost"], micro["same"]) == (4, 2, 1, 1)
    assert micro["mean"] == pytest.approx(0.0625)
    assert micro["ci_low"] <= micro["mean"] <= micro["ci_high"]
    assert micro["ci_low"] >= -0.05 and micro["ci_high"] <= 0.2  # a mean of resamples
    assert fleet["macro_f1_change"]["mean"] == pytest.approx(0.03125)
    assert fleet_summary([]) is None


def test_gate_summary_sets_verdicts_against_the_measured_change() -> None:
    nodes = [
        row("n1", -0.1, g=gate(False, "collapse")),
        row("n2", 0.05, g=gate(False, "agreement")),
        row("n3", -0.02, g=gate(True)),
        row("n4", 0.03, g=gate(True)),
        row("n5", 0.0, personalized=False),
    ]
    assert gate_summary(nodes) == {
        "judged": 4,
        "passed": 2,
        "would_block": 2,
        "would_block_lowered": 1,
        "passed_lowered": 1,
    }


def report(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "classes": ["a", "b"],
        "nodes": nodes,
        "central": [
            {
                "stage": "before federation",
                "round": 0,
                "version": 1,
                "submissions": 0,
                "micro_f1": 0.4,
                "macro_f1": 0.3,
                "per_class_f1": {"a": 0.5, "b": 0.1},
            },
            {
                "stage": "after round 1",
                "round": 1,
                "version": 2,
                "submissions": 2,
                "micro_f1": 0.45,
                "macro_f1": 0.35,
                "per_class_f1": {"a": 0.5, "b": 0.2},
            },
        ],
        "summary": {
            "nodes_personalized": sum(n["personalized"] for n in nodes),
            "fleet": fleet_summary(nodes),
            "gate": gate_summary(nodes),
            "teacher_on_nodes": {"clips": 60, "accuracy": 0.5, "macro_f1": 0.4},
        },
        "run": {"broker": "mosquitto", "seed": 0, "seconds_total": 100.0, "seconds_setup": 10.0},
        "note": "hand-made",
        "figures": ["nodes_f1.png"],
    }


def test_markdown_carries_the_verdicts_and_the_fleet_interval() -> None:
    few = "only 3 held-back clips (< 6): collapse and agreement not checked"
    nodes = [
        row("n1", 1 / 36, g=gate(True, notes=(few,))),
        row("n2", -2 / 36, g=gate(False, "collapse")),
    ]
    md = markdown(report(nodes))
    fleet = summarize_gains(np.array([1 / 36, -2 / 36]))
    assert "| passed |" in md and "| would block: collapse |" in md
    assert f"n1: {few}" in md
    assert fleet.line("micro-F1 change") in md
    assert (
        "mean micro-F1 change -0.014 (95% CI -0.056 to +0.028), 1 gained, 1 lost, 0 same of 2" in md
    )
    assert "passes 1 of 2 heads (0 of them lowered micro-F1), would block 1 (1 of them" in md
    assert "| after round 1 | 2 | 2 | 0.450 | 0.350 |" in md


def test_console_report_prints_the_same_figures(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from training.sim.cli import print_report

    monkeypatch.setenv("COLUMNS", "220")
    nodes = [
        row("n1", 0.05, g=gate(True)),
        row("n2", -0.1, g=gate(False, "single_class_selection")),
    ]
    print_report(report(nodes), tmp_path)
    out = capsys.readouterr().out
    assert "would block: single_class_selection" in out
    micro = summarize_gains(np.array([0.05, -0.1]))
    assert f"{micro.mean:+.3f}" == "-0.025"
    row_micro = next(line for line in out.splitlines() if "│ micro" in line)
    cells = [c.strip() for c in row_micro.split("│")[1:-1]]
    assert cells == [
        "micro",
        "-0.025",
        f"{micro.ci_low:+.3f} to {micro.ci_high:+.3f}",
        "1",
        "1",
        "0",
    ]
    assert "2 of 2 nodes personalized" in out
    assert "would block 1 (1 of them lowered it)" in out
    assert "0.450" in out  # the central v after round 1


def test_the_sim_node_keeps_every_adaptation_result(tmp_path: Path) -> None:
    class Result:
        def __init__(self, n: int) -> None:
            self.n = n

        def summary(self) -> dict[str, Any]:
            return {"status": "adapted", "new_version": f"local-{self.n}"}

    assert read_adaptations(tmp_path) == []
    results = [Result(1)]
    assert keep_results(results, tmp_path / ADAPTATIONS, 0) == 1
    results.append(Result(2))
    assert keep_results(results, tmp_path / ADAPTATIONS, 1) == 2
    assert [a["new_version"] for a in read_adaptations(tmp_path)] == ["local-1", "local-2"]
    (tmp_path / ADAPTATIONS).write_text("{half")  # torn by hand: read as nothing, never raised
    assert read_adaptations(tmp_path) == []


def test_both_numbers_per_node_the_head_without_the_gate_and_the_one_kept() -> None:
    nodes = [row("n1", 1 / 36, g=gate(True)), row("n2", -2 / 36, g=gate(False, "collapse"))]
    nodes.append(row("n3", -1 / 36))  # gate off: the node keeps what it made
    for n in nodes:
        n.update(kept(n))
    assert [n["micro_f1_change_kept"] for n in nodes] == pytest.approx([1 / 36, 0.0, -1 / 36])
    assert nodes[1]["micro_f1_kept"] == nodes[1]["micro_f1_before"]
    md = markdown(report(nodes))
    assert "| micro-F1 of the head kept with the gate |" in md
    assert "| would block: collapse | 0.400 |" in md
    with_gate = summarize_gains(np.array([1 / 36, 0.0, -1 / 36])).line("micro-F1 change")
    assert f"the heads each node keeps with the gate enforced: {with_gate}" in md
    assert "2 of 3 nodes lose micro-F1 here" in md and "Which head will hurt a person" in md
