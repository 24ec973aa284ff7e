"""Every report names its macro-F1: over all K classes and over the classes present (issue 22)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score

from vfer.metrics import scores

CLASSES = ["happiness", "sadness", "anger", "neutral"]
#: London-like: nobody shows anger
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3, 3])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3, 0])
ALL = f1_score(Y_TRUE, Y_PRED, labels=[0, 1, 2, 3], average="macro", zero_division=0)
PRESENT = f1_score(Y_TRUE, Y_PRED, labels=[0, 1, 3], average="macro", zero_division=0)


def scored() -> dict[str, Any]:
    return scores(Y_TRUE, Y_PRED, CLASSES)


def test_edge_evaluate_prints_both_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_node.cli_evaluate import _print

    report = {"meta": {"rows": {"used": 10, "total": 10, "label_not_in_classes": 0}}}
    report["meta"]["rows"] |= {"no_face": 0, "failed": 0}
    _print({**report, "teacher": scored()})
    out = capsys.readouterr().out
    assert f"macro-F1 {ALL:.3f} over all 4 classes, {PRESENT:.3f} over the 3 present" in out


def test_experiment_tables_carry_a_named_row_per_convention() -> None:
    from training.experiments.report import _before_after, _table

    table = "\n".join(_table(scored(), "g"))
    assert "| *macro* | " in table and f"| {ALL:.3f} | 10 |" in table
    assert "| *macro, present classes* | " in table and f"| {PRESENT:.3f} | 10 |" in table
    sec = {
        "classes": CLASSES,
        "before": scored(),
        "after": scores(Y_TRUE, Y_TRUE, CLASSES),
        "subjects": [],
        "mean_subject_micro_f1_change": 0.0,
        "sign": "none",
    }
    rows = "\n".join(_before_after(sec))
    assert "| *macro, present classes* | " in rows and f"{PRESENT:.3f} | 1.000" in rows


def test_the_simulation_report_shows_each_nodes_present_class_macro() -> None:
    from training.sim.report import markdown

    s_before, s_after = scored(), scores(Y_TRUE, Y_TRUE, CLASSES)
    node = {
        "node": "n1",
        "subject": "s1",
        "recorded_clips": 10,
        "selected_clips": 4,
        "eval_clips": 10,
        "personalized": True,
        "gate": None,
        "micro_f1_before": s_before["micro"]["f1"],
        "micro_f1_after": 1.0,
        "micro_f1_change": 1.0 - s_before["micro"]["f1"],
        "macro_f1_before": s_before["macro"]["f1"],
        "macro_f1_after": s_after["macro"]["f1"],
        "macro_f1_change": s_after["macro"]["f1"] - s_before["macro"]["f1"],
        "macro_f1_present_before": s_before["macro_present"]["f1"],
        "macro_f1_present_after": s_after["macro_present"]["f1"],
    }
    report = {
        "classes": CLASSES,
        "nodes": [node],
        "central": [],
        "summary": {"teacher_on_nodes": {}},
        "run": {},
        "note": "hand-made",
        "figures": [],
    }
    md = markdown(report)
    assert "macro-F1, present classes: before | after" in md
    assert f"| {ALL:.3f} | 0.750 | " in md  # all 4: anger never shown caps the perfect head at .75
    assert f"| {PRESENT:.3f} | 1.000 | -" in md
