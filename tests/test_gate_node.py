"""The safety gate on a real node: `python -m edge_node adapt` on a real SQLite store.

A fine-tune on pseudo labels of a single class is blocked and the central head stays active; a
head fine-tuned on clips of several classes, checked on the clips it did not use, passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_node.bundles import BundleHome
from tests.test_adapt import central, fill_store, node_copy, run_cli  # noqa: F401
from vfer.bundle import Bundle

pytestmark = pytest.mark.slow


def adapt_json(db: Path, b: Path, *extra: str) -> dict[str, object]:
    out = run_cli("adapt", "--db", str(db), "--bundle", str(b), "--json", *extra)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def test_single_class_pseudo_labels_are_blocked_and_the_central_stays(
    central: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={1: 12}, unsure=3)
    r = adapt_json(db, b, "--p", "8")
    assert r["status"] == "blocked", r
    assert "single_class_selection" in str(r["reason"])
    assert "single_class_selection" in r["gate"]["reasons"]  # type: ignore[index,operator]
    active = BundleHome(b).active().manifest
    assert active.head_version == "central-r0" and not active.personalized
    # the same clips with the gate off: the paper's plain rule adapts (what the gate prevented)
    plain = adapt_json(db, b, "--p", "8", "--gate", "off")
    assert plain["status"] == "adapted" and BundleHome(b).active().manifest.personalized


def test_a_head_from_several_classes_passes_the_gate(
    central: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    # 4 per class are fine-tuned on (P = 4); the rest are held back for the gate's check
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 7, 1: 7, 2: 7, 3: 7}, unsure=0)
    r = adapt_json(db, b, "--p", "4", "--epochs", "4")
    gate = r["gate"]
    assert r["status"] == "adapted", r
    assert gate["passed"] and gate["metrics"]["holdout"] == 12  # type: ignore[index]
    assert gate["metrics"]["agreement_new"] >= gate["metrics"]["agreement_central"]  # type: ignore[index]
    assert BundleHome(b).active().manifest.personalized


def test_a_head_fine_tuned_on_scrambled_pseudo_labels_is_blocked_with_its_signals_recorded(
    central: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Issue 27: the 4 most confident clips of each class carry a shifted label (the face of class
    c called c + 1), so they are the ones fine-tuned on; the 3 right ones per class are held back.
    The head learns the shift, the gate sees it on the held-back clips and keeps the central."""
    from vfer.gate_signals import SIGNALS

    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    bid = Bundle.load(b).bundle_id
    fill_store(db, bid, confident={c: 4 for c in range(4)}, unsure=0, pseudo={c: (c + 1) % 4 for c in range(4)}, conf=0.8)  # fmt: skip
    fill_store(db, bid, confident={c: 3 for c in range(4)}, unsure=0)
    r = adapt_json(db, b, "--p", "4", "--epochs", "4")
    gate = r["gate"]
    assert r["status"] == "blocked", r
    assert "less_teacher_agreement" in gate["reasons"]  # type: ignore[index,operator]
    metrics = gate["metrics"]  # type: ignore[index]
    assert metrics["holdout"] == 12 and metrics["agreement_new"] < 0.5  # type: ignore[index]
    recorded = {k.removeprefix("signal_") for k in metrics if k.startswith("signal_")}  # type: ignore[union-attr]
    assert recorded == set(SIGNALS), recorded
    assert metrics["signal_teacher_disagreement"] > 0  # type: ignore[index]
    assert not BundleHome(b).active().manifest.personalized
    # the verdict and the signals are kept with the adaptation result in the clip db
    from edge_node.personalization.results import history
    from edge_node.store import ClipStore

    with ClipStore(db) as store:
        kept = history(store, 1)
    assert kept and kept[0].report.gate is not None
    assert kept[0].report.gate.metrics["signal_class_shift"] == metrics["signal_class_shift"]  # type: ignore[index]


def test_gate_options_are_bounded_with_the_field_named(tmp_path: Path) -> None:
    from edge_node.config import load_node_config
    from vfer.config_io import ConfigError

    cfg = tmp_path / "node.yaml"
    cfg.write_text("adaptation:\n  gate_min_entropy_ratio: 1.5\n")
    with pytest.raises(ConfigError, match=r"adaptation\.gate_min_entropy_ratio"):
        load_node_config(cfg)
    bad = run_cli("adapt", "--db", str(tmp_path / "x.db"), "--bundle", str(tmp_path), "--gate", "{")
    assert bad.returncode != 0 and "--gate" in bad.stderr and "Traceback" not in bad.stderr


def test_the_options_beside_the_papers_rule_reach_a_real_adaptation(
    central: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 9, 1: 2, 2: 3}, unsure=0)
    default = adapt_json(db, b, "--p", "8", "--gate", "off")  # class-balanced, ratio 2
    assert list(default["selected_per_class"].values()) == [4, 2, 3, 0]  # type: ignore[union-attr]
    paper = adapt_json(db, b, "--p", "8", "--gate", "off", "--balance", "0")
    assert list(paper["selected_per_class"].values()) == [8, 2, 3, 0]  # type: ignore[union-attr]
    both = adapt_json(db, b, "--p", "8", "--gate", "off", "--balance", "3", "--l2sp", "1.0")
    assert list(both["selected_per_class"].values()) == [6, 2, 3, 0]  # type: ignore[union-attr]
    assert both["status"] == "adapted", both
