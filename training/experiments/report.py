"""report.json, report.md and the PNG figures (matplotlib, Agg) of an experiment run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vfer.atomic import atomic_write_text

METRICS = ("precision", "recall", "f1")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures(report: dict[str, Any], out: Path) -> list[str]:
    """Write every figure the report's sections allow; returns the file names."""
    plt = _plt()
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    t1 = report.get("table1")
    if t1 and "confusion" in t1:
        cm = np.asarray(t1["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(5, 4.2))
        im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(t1["classes"])), t1["classes"], rotation=45, ha="right")
        ax.set_yticks(range(len(t1["classes"])), t1["classes"])
        for (i, j), val in np.ndenumerate(norm):
            ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"IFER frame level, macro-F1 {t1['macro']['f1']:.3f}")
        fig.colorbar(im, ax=ax)
        save(fig, "table1_ifer_confusion.png")
    for key, name, title in (
        ("within", "fig3_within_subject_change.png", "Within corpus (Fig. 3)"),
        ("cross", "cross_subject_change.png", "Cross corpus"),
        ("fedavg", "fedavg_subject_change.png", "Central v after FedAvg"),
    ):
        sec = report.get(key)
        if not sec or not sec.get("subjects") or "skipped" in sec:
            continue
        rows = sec["subjects"]
        change = [100 * r["micro_f1_change"] for r in rows]
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(rows) + 2), 3.4))
        colors = ["tab:green" if c > 0 else "tab:red" if c < 0 else "tab:gray" for c in change]
        ax.bar([r["subject"] for r in rows], change, color=colors)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("micro-F1 change (points)")
        ax.set_title(f"{title}: mean {100 * sec['mean_subject_micro_f1_change']:+.1f} points")
        ax.tick_params(axis="x", rotation=60)
        save(fig, name)
    fed = report.get("fedavg")
    if fed and fed.get("rounds"):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        r = [x["round"] for x in fed["rounds"]]
        for avg in ("macro", "micro"):
            ax.plot(r, [x[avg]["f1"] for x in fed["rounds"]], marker="o", label=f"{avg}-F1")
        ax.set_xticks(r)
        ax.set_xlabel("FedAvg round")
        ax.set_ylabel("central v F1")
        ax.legend()
        save(fig, "fedavg_rounds.png")
    log = report.get("training", {}).get("log", [])
    if log:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, head in zip(axes, ("g", "v"), strict=True):
            rows = [x for x in log if x["head"] == head]
            ax.plot([x["epoch"] for x in rows], [x["train_loss"] for x in rows], label="train")
            ax.plot([x["epoch"] for x in rows], [x["dev_loss"] for x in rows], label="dev")
            ax.set_title(f"{head}: weighted cross-entropy")
            ax.set_xlabel("epoch")
            ax.legend()
        save(fig, "training_loss.png")
    return written


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(s: dict[str, Any], title: str) -> list[str]:
    lines = [
        f"**{title}**",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, row in s["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} | {row['support']} |"
        )
    for avg in ("macro", "micro"):
        m = s[avg]
        lines.append(
            f"| *{avg}* | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {s['n']} |"
        )
    return [*lines, ""]


def _before_after(sec: dict[str, Any]) -> list[str]:
    lines = [
        "| class | P before | P after | R before | R after | F1 before | F1 after |",
        "|---|---|---|---|---|---|---|",
    ]
    b, a = sec["before"], sec["after"]
    keys = [(c, b["per_class"][c], a["per_class"][c]) for c in sec["classes"]]
    keys += [(f"*{m}*", b[m], a[m]) for m in ("macro", "micro")]
    for name, x, y in keys:
        cells = " | ".join(f"{_fmt(x[m])} | {_fmt(y[m])}" for m in METRICS)
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "| subject | selected | pseudo-label acc. | micro-F1 before | after | change |",
        "|---|---|---|---|---|---|",
    ]
    for r in sec["subjects"]:
        lines.append(
            f"| {r['subject']} | {r.get('selected', '-')} | {_fmt(r.get('pseudo_label_accuracy'))} | "
            f"{_fmt(r['micro_f1_before'])} | {_fmt(r['micro_f1_after'])} | {r['micro_f1_change']:+.3f} |"
        )
    lines += [
        "",
        f"Mean per-subject micro-F1 change: **{sec['mean_subject_micro_f1_change']:+.4f}** ({sec['sign']}, as measured).",
        "",
    ]
    return lines


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# fedvfer experiments",
        "",
        f"v from `{meta['corpus']}`, g from `{meta.get('ifer_corpus', meta['corpus'])}`, classes {', '.join(meta['classes'])}, profile `{meta['profile']}`, "
        f"seed {meta['seed']}, {meta['seconds']:.0f} s. Figures: {', '.join(meta.get('figures', []))}.",
        "",
    ]
    if "table1" in report:
        t = report["table1"]
        lines += [f"## Table 1: IFER (g), frame level, test split of `{t['corpus']}`", ""]
        lines += _table(
            t,
            f"{t['n']} frames of {t['test_clips']} clips; chance macro-F1 {t['chance_macro_f1']:.3f}",
        )
        lines += _table(t["clip_level"], "clip level (Eq. 1 mean of frame probabilities)")
        if "probe" in t:
            gap = t["g_minus_probe"]
            lines += _table(
                t["probe"],
                f"linear probe (logistic regression on the same {t['probe']['train_frames']} "
                "training frames), same test frames",
            )
            lines += [
                f"g minus probe: macro-F1 **{100 * gap['macro_f1']:+.1f}** points, accuracy "
                f"**{100 * gap['accuracy']:+.1f}** points (as measured).",
                "",
            ]
    for key, title in (
        ("within", "Tables 2-3, Fig. 3: VFER before/after personalization, within corpus"),
        ("cross", "Tables 4-5: cross corpus, 4 classes"),
        ("fedavg", "Table 6: central v before/after FedAvg"),
    ):
        sec = report.get(key)
        if not sec:
            continue
        lines += [f"## {title}", ""]
        if "skipped" in sec:
            lines += [f"Skipped: {sec['skipped']}", ""]
            continue
        if key == "cross":
            lines += [
                f"Trained on `{sec['source']}`, personalized and tested on `{sec['target']}`.",
                "",
            ]
        if key == "fedavg":
            lines += ["| round | updates | macro-F1 | micro-F1 |", "|---|---|---|---|"]
            lines += [
                f"| {r['round']} | {r['updates']} | {_fmt(r['macro']['f1'])} | {_fmt(r['micro']['f1'])} |"
                for r in sec["rounds"]
            ]
            lines.append("")
        t = sec.get("teacher_on_subjects")
        if t and t.get("accuracy") is not None:
            lines += [
                f"Teacher g on the personalized people's {t['clips']} adaptation clips (Eq. 1; "
                f"their true labels used only for this line): accuracy {t['accuracy']:.3f}, "
                f"macro-F1 {t['macro_f1']:.3f}.",
                "",
            ]
        lines += _before_after(sec)
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["meta"]["figures"] = figures(report, out)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=_default) + "\n")
    atomic_write_text(out / "report.md", markdown(report))


def _default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
