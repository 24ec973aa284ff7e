"""Scores of a simulated fleet, from models trained and evaluated in that run, and the report files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments.stats import GainSummary, summarize_gains
from training.sim.node import read_adaptations
from training.sim.observer import Seen
from training.sim.setup import Plan, slot_dir
from vfer.bundle import Bundle
from vfer.metrics import scores
from vfer.selection import clip_mean_probs


def _personalized_versions(work: Path) -> list[Bundle]:
    versions = work / "bundle.versions"
    found = []
    if versions.is_dir():
        for d in sorted(versions.iterdir()):
            if (d / "manifest.json").is_file():
                b = Bundle.load(d, verify=False)
                if b.manifest.personalized:
                    found.append(b)
    return sorted(found, key=lambda b: b.manifest.created_at)


def node_gate(adaptations: list[dict[str, Any]], version: str | None) -> dict[str, Any] | None:
    """The safety gate's verdict on ``version``, as the node recorded it when it adapted.

    ``adaptations``: the node's own results (``edge_node adapt --json``, kept by the sim node);
    None when the node wrote no such head or ran without the gate.
    """
    mine = next((a for a in adaptations if version and a.get("new_version") == version), None)
    gate = (mine or {}).get("gate") or {}
    if "passed" not in gate:
        return None
    return {
        "passed": bool(gate["passed"]),
        "reasons": [str(r) for r in gate.get("reasons", [])],
        "notes": [str(n) for n in gate.get("notes", [])],
    }


def gate_text(gate: dict[str, Any] | None) -> str:
    """One cell: ``passed``, ``would block: REASONS`` (the sims run the gate in report mode), or -."""
    if gate is None:
        return "-"
    return "passed" if gate["passed"] else "would block: " + ", ".join(gate["reasons"])


def fleet_summary(nodes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean per-node change of micro- and macro-F1, 95% bootstrap interval over nodes, and counts.

    Every node counts: one that did not personalize keeps the central v, a change of 0.
    """
    if not nodes:
        return None
    return {
        "nodes": len(nodes),
        "personalized": sum(1 for n in nodes if n["personalized"]),
        "micro_f1_change": summarize_gains(
            np.array([n["micro_f1_change"] for n in nodes])
        ).as_dict(),
        "macro_f1_change": summarize_gains(
            np.array([n["macro_f1_change"] for n in nodes])
        ).as_dict(),
        "micro_f1_change_kept": summarize_gains(
            np.array([n.get("micro_f1_change_kept", n["micro_f1_change"]) for n in nodes])
        ).as_dict(),
    }


def kept(row: dict[str, Any]) -> dict[str, float]:
    """The head the node keeps with its gate enforced: the personalized one when the gate passed it
    (or judged nothing), else the central (its change is then 0). The sims run the gate in report
    mode, so both heads exist and both numbers are measured on the same clips."""
    blocked = row.get("gate") is not None and not row["gate"]["passed"]
    micro = row["micro_f1_before"] if blocked else row["micro_f1_after"]
    return {"micro_f1_kept": micro, "micro_f1_change_kept": micro - row["micro_f1_before"]}


def gate_summary(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """How the nodes' own gate verdicts line up with the micro-F1 their heads really reached."""
    judged = [n for n in nodes if n.get("gate") is not None]
    passed = [n for n in judged if n["gate"]["passed"]]
    blocked = [n for n in judged if not n["gate"]["passed"]]
    return {
        "judged": len(judged),
        "passed": len(passed),
        "would_block": len(blocked),
        "would_block_lowered": sum(1 for n in blocked if n["micro_f1_change"] < 0),
        "passed_lowered": sum(1 for n in passed if n["micro_f1_change"] < 0),
    }


def gate_line(g: dict[str, int]) -> str:
    return (
        f"passes {g['passed']} of {g['judged']} heads ({g['passed_lowered']} of them lowered "
        f"micro-F1), would block {g['would_block']} ({g['would_block_lowered']} of them lowered it)"
    )


def evaluate(sim: Path, plan: Plan, seen: Seen) -> dict[str, Any]:
    from edge_node.store import ClipStore
    from training.experiments.setup import Heads
    from training.preprocess import EmbeddingCache

    models = json.loads((sim / "models.json").read_text())
    cache = EmbeddingCache.for_models(
        Path(models["work"]) / "embeddings", Path(models["backbone"]), Path(models["face_model"])
    )
    classes = plan.classes
    index = {c: i for i, c in enumerate(classes)}
    heads = Heads()
    central0 = Bundle.load(sim / "central" / "bundle").vfer_weights()
    g0 = Bundle.load(sim / "central" / "bundle").ifer_weights()
    t_true: list[int] = []
    t_pred: list[int] = []

    def predict(weights: dict[str, np.ndarray], clips: list[np.ndarray]) -> np.ndarray:
        return np.argmax(heads.vfer(weights, clips), axis=1) if clips else np.zeros(0, np.int64)

    node_rows, all_clips, all_true = [], [], []
    for i in range(plan.nodes):
        meta = json.loads((slot_dir(sim, i) / "slot.json").read_text())
        clips, truth = [], []
        for item in meta["evaluate"]:
            e = cache.get(Path(item["path"])).embeddings
            if len(e):
                clips.append(e)
                truth.append(index[item["label"]])
        y = np.asarray(truth, dtype=np.int64)
        # the teacher g on the clips this node adapts from (Eq. 1; true labels for this report only)
        mine_true, mine_pred = [], []
        for item in meta.get("adapt", []):
            src = slot_dir(sim, i) / "clips" / item["path"]
            e = cache.get(src).embeddings if cache.has(src) else np.zeros((0, 1280))
            if len(e):
                mine_true.append(index[item["label"]])
                mine_pred.append(int(np.argmax(clip_mean_probs(heads.ifer(g0, e)))))
        t_true += mine_true
        t_pred += mine_pred
        work = slot_dir(sim, i) / "work"
        mine = _personalized_versions(work)
        before = scores(y, predict(central0, clips), classes)
        after_w = mine[0].vfer_weights() if mine else None  # personalized from the initial central
        after = scores(y, predict(after_w, clips), classes) if after_w is not None else before
        recorded = 0
        if (work / "clips.db").is_file():
            with ClipStore(work / "clips.db") as store:
                recorded = store.count()
        selected = json.loads(mine[0].manifest.notes.get("clips_per_class", "{}")) if mine else {}
        adaptations = read_adaptations(work)
        node_rows.append(
            {
                "node": meta["node_id"],
                "subject": meta["subject"],
                "recorded_clips": recorded,
                "selected_clips": sum(selected.values()),
                "personalized": bool(mine),
                "personalizations": len(mine),
                # the node's own verdict on the head scored here (gate: report, so never applied)
                "gate": node_gate(adaptations, mine[0].manifest.head_version if mine else None),
                "adaptations": [_brief(a) for a in adaptations],
                "eval_clips": len(clips),
                "teacher_accuracy": float(np.mean(np.equal(mine_true, mine_pred)))
                if mine_true
                else None,
                "micro_f1_before": before["micro"]["f1"],
                "micro_f1_after": after["micro"]["f1"],
                "micro_f1_change": after["micro"]["f1"] - before["micro"]["f1"],
                "macro_f1_before": before["macro"]["f1"],
                "macro_f1_after": after["macro"]["f1"],
                "macro_f1_change": after["macro"]["f1"] - before["macro"]["f1"],
                # over the classes the subject's held-out clips show (vfer.metrics)
                "macro_f1_present_before": before["macro_present"]["f1"],
                "macro_f1_present_after": after["macro_present"]["f1"],
                "macro_f1_present_change": after["macro_present"]["f1"]
                - before["macro_present"]["f1"],
            }
        )
        node_rows[-1].update(kept(node_rows[-1]))
        all_clips += clips
        all_true.append(y)
    y_all = np.concatenate(all_true) if all_true else np.zeros(0, np.int64)
    central_rows = []
    for r in range(0, plan.rounds + 1):
        if r == 0:
            weights, version, subs = central0, seen.centrals.get(0, (1, {}, 0))[0], 0
        elif r in seen.centrals:
            version, trainable, subs = seen.centrals[r]
            weights = {**central0, **{n: a.astype(np.float32) for n, a in trainable.items()}}
        else:
            continue
        s = scores(y_all, predict(weights, all_clips), classes)
        central_rows.append(
            {
                "stage": "before federation" if r == 0 else f"after round {r}",
                "round": r,
                "version": version,
                "submissions": subs,
                "micro_f1": s["micro"]["f1"],
                "macro_f1": s["macro"]["f1"],
                "macro_f1_present": s["macro_present"]["f1"],
                "per_class_f1": {c: s["per_class"][c]["f1"] for c in classes},
            }
        )
    teacher = scores(np.asarray(t_true, np.int64), np.asarray(t_pred, np.int64), classes)
    return {
        "classes": list(classes),
        "nodes": node_rows,
        "central": central_rows,
        "summary": {
            "nodes_personalized": sum(1 for row in node_rows if row["personalized"]),
            "fleet": fleet_summary(node_rows),
            "gate": gate_summary(node_rows),
            "central_micro_f1_first": central_rows[0]["micro_f1"] if central_rows else None,
            "central_micro_f1_last": central_rows[-1]["micro_f1"] if central_rows else None,
            "rounds_completed": max((r for r in seen.centrals if r > 0), default=0),
            "teacher_on_nodes": {
                "clips": len(t_true),
                "accuracy": teacher["accuracy"] if t_true else None,
                "macro_f1": teacher["macro"]["f1"] if t_true else None,
                "macro_f1_present": teacher["macro_present"]["f1"] if t_true else None,
            },
        },
        "note": "Every figure comes from models trained and evaluated in this run (held-out clips of each node's subject).",
    }


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """What the report keeps of one of the node's adaptation results."""
    keys = ("status", "reason", "base_version", "base_round", "new_version", "clips_total",
            "selected_per_class", "gate")  # fmt: skip
    return {k: result.get(k) for k in keys}


def markdown(report: dict[str, Any]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = ["# fedvfer fleet simulation", ""]
    run = report.get("run", {})
    lines.append(
        f"{len(report['nodes'])} nodes, broker {run.get('broker', '?')}, "
        + (
            "secure aggregation (SecAgg+: the aggregator saw only the group's masked sum), "
            if run.get("secure_aggregation")
            else ""
        )
        + f"seed {run.get('seed', '?')}, "
        f"{run.get('seconds_total', '?')} s in all ({run.get('seconds_setup', '?')} s setup, "
        f"{run.get('seconds_recording', '?')} s for the nodes to record their clips)."
    )
    lines += ["", "## Nodes (each on its own subject's held-out clips)", ""]
    lines.append(
        "| node | subject | clips recorded | clips selected | clips scored | micro-F1 before | after | change "
        "| macro-F1 before | after | change | macro-F1, present classes: before | after "
        "| safety gate (the node's verdict) | micro-F1 of the head kept with the gate |"
    )
    lines.append("|---" * 15 + "|")
    for n in report["nodes"]:
        lines.append(
            f"| {n['node']} | {n['subject']} | {n['recorded_clips']} | {n['selected_clips']} | {n['eval_clips']} | "
            f"{f(n['micro_f1_before'])} | {f(n['micro_f1_after'])} | {n['micro_f1_change']:+.3f} | "
            f"{f(n['macro_f1_before'])} | {f(n['macro_f1_after'])} | {n['macro_f1_change']:+.3f} | "
            f"{f(n.get('macro_f1_present_before'))} | {f(n.get('macro_f1_present_after'))} | {gate_text(n.get('gate'))} | "
            f"{f(n.get('micro_f1_kept'))} |"
        )  # fmt: skip
    notes = [f"{n['node']}: {'; '.join(n['gate']['notes'])}" for n in report["nodes"]
             if n.get("gate") and n["gate"]["notes"]]  # fmt: skip
    if notes:
        lines += ["", "Gate notes: " + " ".join(notes)]
    lines += ["", "## Central v per round (all nodes' held-out clips)", ""]
    classes = report["classes"]
    lines.append(
        "| stage | version | submissions | micro-F1 | macro-F1 | " + " | ".join(classes) + " |"
    )
    lines.append("|---" * (5 + len(classes)) + "|")
    for c in report["central"]:
        per = " | ".join(f(c["per_class_f1"][k]) for k in classes)
        lines.append(
            f"| {c['stage']} | {c['version']} | {c['submissions']} | {f(c['micro_f1'])} | {f(c['macro_f1'])} | {per} |"
        )
    s = report["summary"]
    t = s.get("teacher_on_nodes") or {}
    if t.get("accuracy") is not None:
        lines += ["", f"Teacher g on the nodes' adaptation clips (Eq. 1; true labels used for this "
                  f"line only): accuracy {f(t['accuracy'])}, macro-F1 {f(t['macro_f1'])} over "
                  f"all classes, {f(t.get('macro_f1_present'))} over the classes present "
                  f"({t['clips']} clips)."]  # fmt: skip
    fleet = s.get("fleet")
    if fleet:
        lines += ["", "## The fleet: each node's change from personalization (as measured)", "",
                  f"- {GainSummary(**fleet['micro_f1_change']).line('micro-F1 change')}",
                  f"- {GainSummary(**fleet['macro_f1_change']).line('macro-F1 change')}",
                  f"- {fleet['personalized']} of {fleet['nodes']} nodes personalized (one that did "
                  "not keeps the central v: change 0). The 95% interval is a percentile bootstrap "
                  "over nodes: with this few it is rough, and if anything too narrow"]  # fmt: skip
    if s.get("gate", {}).get("judged"):
        lines.append(
            f"- safety gate (report mode: recorded, never applied): {gate_line(s['gate'])}"
        )
        if fleet and fleet.get("micro_f1_change_kept"):
            lines.append(
                "- the heads each node keeps with the gate enforced: "
                + GainSummary(**fleet["micro_f1_change_kept"]).line("micro-F1 change")
            )
    lost = sum(1 for n in report["nodes"] if n["micro_f1_change"] < 0)
    if lost:
        lines.append(
            f"- {lost} of {len(report['nodes'])} nodes lose micro-F1 here. Personalization does not "
            "help every person: how often a head loses over many seeds, and how well the gate's "
            "signals see it, is measured in docs/personalization.md ('Which head will hurt a person')"
        )
    lines += ["", report["note"], ""]
    return "\n".join(lines)


def figures(report: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    nodes = report["nodes"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(nodes))
    ax.bar(x - 0.2, [n["micro_f1_before"] for n in nodes], 0.4, label="central v")
    ax.bar(x + 0.2, [n["micro_f1_after"] for n in nodes], 0.4, label="personalized v")
    ax.set_xticks(x, [n["node"] for n in nodes])
    ax.set_ylabel("micro-F1 (held-out clips)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Per node: before and after personalization")
    fig.tight_layout()
    fig.savefig(out / "nodes_f1.png", dpi=110)
    plt.close(fig)
    written.append("nodes_f1.png")
    central = report["central"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    rounds = [c["round"] for c in central]
    ax.plot(rounds, [c["micro_f1"] for c in central], "o-", label="micro-F1")
    ax.plot(rounds, [c["macro_f1"] for c in central], "s-", label="macro-F1")
    ax.set_xticks(rounds)
    ax.set_xlabel("FedAvg round (0: before federation)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Central v on all nodes' held-out clips")
    fig.tight_layout()
    fig.savefig(out / "central_rounds.png", dpi=110)
    plt.close(fig)
    written.append("central_rounds.png")
    return written


def write_report(report: dict[str, Any], out: Path) -> None:
    report["figures"] = figures(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
