"""Pooling per-subject rows over seeds (pure): per-subject means, intervals over subjects, counts."""

from __future__ import annotations

import numpy as np
import pytest

from training.experiments.seeds import pool, pool_rows
from training.experiments.stats import summarize_gains


def row(subject: str, seed: int, micro: float, **kw: object) -> dict[str, object]:
    return {"subject": subject, "seed": seed, "micro_f1_change": micro, **kw}


def test_the_interval_is_over_subjects_of_their_mean_over_seeds() -> None:
    rows = [
        row("a", 0, 0.2, macro_f1_change=0.1, teacher_accuracy=0.8, gate_passed=True),
        row("a", 1, 0.0, macro_f1_change=0.0, teacher_accuracy=0.6, gate_passed=False),
        row("b", 0, -0.1, macro_f1_change=-0.2, teacher_accuracy=0.4, gate_passed=False),
        row("b", 1, -0.3, macro_f1_change=0.0, teacher_accuracy=0.2, gate_passed=True),
        row("c", 0, 0.0, macro_f1_change=0.0, teacher_accuracy=None, gate_passed=None),
        row("c", 1, 0.0, macro_f1_change=0.0, teacher_accuracy=None, gate_passed=None),
    ]
    out = pool_rows(rows)
    assert out["seeds"] == [0, 1] and out["runs"] == 6 and out["subjects_n"] == 3
    assert out["micro_f1_change_ci"] == summarize_gains(np.array([0.1, -0.2, 0.0])).as_dict()
    assert out["macro_f1_change_ci"]["mean"] == pytest.approx(np.mean([0.05, -0.1, 0.0]))
    assert out["micro_f1_change_per_seed"] == pytest.approx([0.1 / 3, -0.1])
    runs = out["micro_f1_change_runs"]
    assert (runs["n"], runs["gained"], runs["lost"], runs["same"]) == (6, 1, 2, 3)
    a = next(s for s in out["per_subject"] if s["subject"] == "a")
    assert a["teacher_accuracy"] == pytest.approx(0.7) and a["gate_blocked"] == 1
    c = next(s for s in out["per_subject"] if s["subject"] == "c")
    assert c["teacher_accuracy"] is None
    # gate: blocked a's seed-1 head (no change) and b's seed-0 head (lowered)
    assert out["gate"] == {
        "judged": 4,
        "blocked": 2,
        "blocked_would_lower": 1,
        "blocked_would_raise": 0,
        "passed_lowered": 1,
        "passed_raised": 1,
    }


def test_rows_without_macro_pool_micro_only_and_nothing_pools_to_nothing() -> None:
    out = pool_rows([row("a", 0, 0.1), row("a", 1, 0.3)])
    assert "macro_f1_change_ci" not in out and out["micro_f1_change_ci"]["mean"] == pytest.approx(
        0.2
    )
    assert pool_rows([]) == {"runs": 0}


def test_pool_keeps_each_rule_and_skips_sections_a_seed_skipped() -> None:
    def report(seed: int, shift: float) -> dict[str, object]:
        sec = {
            "reference": "paper",
            "variants": {
                "paper": {"subjects": [row("a", -1, 0.1 + shift), row("b", -1, shift)]},
                "l2sp": {"subjects": [row("a", -1, 0.0), row("b", -1, shift)]},
            },
        }
        return {"meta": {"seed": seed}, "within": sec, "cross": {"skipped": "no corpus B"}}

    out = pool([report(0, 0.0), report(1, 0.2)])
    assert set(out) == {"within"}
    w = out["within"]
    assert w["reference"] == "paper" and list(w["variants"]) == ["paper", "l2sp"]
    assert w["micro_f1_change_ci"] == w["variants"]["paper"]["micro_f1_change_ci"]
    assert {r["seed"] for r in w["variants"]["l2sp"]["subjects"]} == {0, 1}
    assert w["variants"]["paper"]["micro_f1_change_ci"]["mean"] == pytest.approx(
        np.mean([0.2, 0.1])
    )


def test_the_sweep_pools_each_teacher_size_over_seeds() -> None:
    def sweep(seed: int, accs: tuple[float, float]) -> dict[str, object]:
        points = [
            {
                "identities": n,
                "teacher_accuracy": acc,
                "variants": {"paper": {"subjects": [row("a", -1, acc - 0.5), row("b", -1, 0.0)]}},
            }
            for n, acc in zip((10, 300), accs, strict=True)
        ]
        return {"meta": {"seed": seed}, "teacher-sweep": {"points": points}}

    out = pool([sweep(0, (0.4, 0.7)), sweep(1, (0.5, 0.8))])["teacher-sweep"]["points"]
    assert [p["identities"] for p in out] == [10, 300]
    assert out[0]["teacher_accuracy"] == pytest.approx(0.45)
    assert out[1]["teacher_accuracy_per_seed"] == [0.7, 0.8]
    # subject a: mean of (0.2, 0.3) = 0.25; b: 0 -> mean over subjects 0.125
    assert out[1]["micro_f1_change_ci"]["mean"] == pytest.approx(0.125)
    assert out[1]["variants"]["paper"]["runs"] == 4
