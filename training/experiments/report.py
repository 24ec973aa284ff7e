"""report.json, report.md and the PNG figures (matplotlib, Agg) of an experiment run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments import privacy
from vfer.atomic import atomic_write_text

METRICS = ("precision", "recall", "f1")
#: the averaged rows of a table, named (vfer.metrics: macro over all K, and over the present)
AVERAGES = (("macro", "macro"), ("macro_present", "macro, present classes"), ("micro", "micro"))


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
    pooled = "seeds" in report.get("meta", {})
    for key in ("within", "cross"):
        sec = report.get(key)
        if not sec or "skipped" in sec:
            continue
        rows = sec["variants"][sec["reference"]]["subjects"] if pooled else sec["subjects"]
        fig = gain_vs_teacher(plt, rows, key)
        if fig is not None:
            save(fig, f"gain_vs_teacher_{key}.png")
    for key in ("within", "cross", "fedavg"):
        sec = report.get(key) or {}
        if privacy.has_privacy(sec.get("variants")):
            save(privacy.gain_vs_epsilon(plt, sec["variants"], key), f"gain_vs_epsilon_{key}.png")
    sweep = report.get("teacher-sweep")
    if sweep and sweep.get("points"):
        save(sweep_figure(plt, sweep["points"]), "teacher_sweep.png")
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


def gain_vs_teacher(plt: Any, rows: list[dict[str, Any]], key: str) -> Any:
    """One point per subject (and seed): the change against the teacher's Eq. 1 accuracy on
    that subject's adaptation clips. None when no row has both."""
    pts = [r for r in rows if r.get("teacher_accuracy") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    seeds = sorted({r.get("seed", 0) for r in pts})
    for seed in seeds:
        mine = [r for r in pts if r.get("seed", 0) == seed]
        ax.scatter(
            [r["teacher_accuracy"] for r in mine],
            [100 * r["micro_f1_change"] for r in mine],
            s=18,
            alpha=0.8,
            label=f"seed {seed}" if len(seeds) > 1 else None,
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("teacher's pseudo-label accuracy on the subject")
    ax.set_ylabel("micro-F1 change (points)")
    ax.set_title(f"{key}: gain against teacher quality, {len(pts)} subject runs")
    if len(seeds) > 1:
        ax.legend(fontsize=7)
    return fig


def sweep_figure(plt: Any, points: list[dict[str, Any]]) -> Any:
    """The teacher-quality curve: mean change with its 95% interval per teacher, one line per rule."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    names = list(points[0].get("variants") or {"paper": None})
    for name in names:
        xs, ys, lo, hi = [], [], [], []
        for p in points:
            ci = (p["variants"][name] if "variants" in p else p)["micro_f1_change_ci"]
            if ci is None or p["teacher_accuracy"] is None:
                continue
            xs.append(p["teacher_accuracy"])
            ys.append(100 * ci["mean"])
            lo.append(100 * (ci["mean"] - ci["ci_low"]))
            hi.append(100 * (ci["ci_high"] - ci["mean"]))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    for p in points:
        if p["teacher_accuracy"] is not None and p.get("micro_f1_change_ci"):
            ax.annotate(
                f"{p['identities']} id",
                (p["teacher_accuracy"], 100 * p["micro_f1_change_ci"]["mean"]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=7,
            )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("teacher's Eq. 1 accuracy on the personalized people")
    ax.set_ylabel("mean micro-F1 change (points, 95% CI)")
    ax.set_title("How good must the teacher be?")
    ax.legend(fontsize=8)
    return fig


def _ci(ci: dict[str, Any] | None) -> str:
    if not ci:
        return "-"
    return f"{ci['mean']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"


def _counts(ci: dict[str, Any] | None) -> str:
    return "-" if not ci else f"{ci['gained']}/{ci['lost']}/{ci['same']}"


def _gate(g: dict[str, Any] | None) -> str:
    if not g or not g.get("judged"):
        return "-"
    return (
        f"{g['blocked']} of {g['judged']} blocked ({g['blocked_would_lower']} would lower, "
        f"{g['blocked_would_raise']} would raise F1)"
    )


def _variants_table(variants: dict[str, dict[str, Any]], pooled: bool) -> list[str]:
    unit = "subjects (mean over seeds)" if pooled else "subjects"
    lines = [
        f"| rule | micro-F1 change, 95% CI over {unit} | gained/lost/same | macro-F1 change | gate |",
        "|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        lines.append(
            f"| {name} | {_ci(v.get('micro_f1_change_ci'))} | {_counts(v.get('micro_f1_change_ci'))} | "
            f"{_ci(v.get('macro_f1_change_ci'))} | {_gate(v.get('gate'))} |"
        )
    return [*lines, ""]


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
    for avg, title in AVERAGES:
        if avg in s:
            m = s[avg]
            lines.append(
                f"| *{title}* | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {s['n']} |"
            )
    return [*lines, ""]


def _before_after(sec: dict[str, Any]) -> list[str]:
    lines = [
        "| class | P before | P after | R before | R after | F1 before | F1 after |",
        "|---|---|---|---|---|---|---|",
    ]
    b, a = sec["before"], sec["after"]
    keys = [(c, b["per_class"][c], a["per_class"][c]) for c in sec["classes"]]
    keys += [(f"*{title}*", b[m], a[m]) for m, title in AVERAGES if m in b and m in a]
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
    ci = sec.get("micro_f1_change_ci")
    if ci:
        lines += [
            f"95% bootstrap interval over the {ci['n']} subjects: micro-F1 {_ci(ci)}, macro-F1 "
            f"{_ci(sec.get('macro_f1_change_ci'))} (over all classes; over the classes each "
            f"subject shows {_ci(sec.get('macro_f1_present_change_ci'))}); "
            f"gate: {_gate(sec.get('gate'))}.",
            "",
        ]
    if len(sec.get("variants") or {}) > 1:
        lines += ["The rules compared on the same subjects, splits and seeds:", ""]
        lines += _variants_table(sec["variants"], pooled=False)
    return lines


def _sweep(points: list[dict[str, Any]]) -> list[str]:
    names = list(points[0].get("variants") or {"paper": None})
    head = " | ".join(f"{n}: micro-F1 change [95% CI]" for n in names)
    lines = [
        f"| identities | teacher acc. | {head} |",
        "|---|---|" + "---|" * len(names),
    ]
    for p in points:
        cells = " | ".join(
            _ci((p["variants"][n] if "variants" in p else p).get("micro_f1_change_ci"))
            for n in names
        )
        lines.append(f"| {p['identities']} | {_fmt(p['teacher_accuracy'])} | {cells} |")
    return [*lines, ""]


def _pooled(report: dict[str, Any]) -> list[str]:
    meta = report["meta"]
    lines = [
        f"Seeds {', '.join(map(str, meta['seeds']))} (each: its own central g and v, splits and "
        f"fine-tuning), corpora of seed {meta['data_seed']}. Per-seed reports: "
        f"{', '.join(p['report'] for p in report['per_seed'])}.",
        "",
    ]
    for key in ("within", "cross", "fedavg"):
        sec = report.get(key)
        if not sec:
            continue
        ref = sec["variants"][sec["reference"]]
        lines += [f"## {key}: per-subject change over {len(meta['seeds'])} seeds", ""]
        lines += _variants_table(sec["variants"], pooled=True)
        runs = ref.get("micro_f1_change_runs")
        if runs:
            lines += [
                f"Reference rule `{sec['reference']}`: per-seed means "
                f"{', '.join(f'{x:+.3f}' for x in ref['micro_f1_change_per_seed'])}; "
                f"of {runs['n']} subject runs {runs['gained']} gained, {runs['lost']} lost, "
                f"{runs['same']} stayed the same.",
                "",
                "| subject | teacher acc. (mean) | micro-F1 change (mean) | gate blocked |",
                "|---|---|---|---|",
            ]
            for r in ref["per_subject"]:
                lines.append(
                    f"| {r['subject']} | {_fmt(r['teacher_accuracy'])} | "
                    f"{r['micro_f1_change']:+.3f} | {r['gate_blocked']} of {r['runs']} |"
                )
            lines.append("")
    sw = report.get("teacher-sweep")
    if sw:
        lines += [f"## teacher-sweep over {len(meta['seeds'])} seeds", ""]
        lines += _sweep(sw["points"])
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
    if "seeds" in meta:
        return "\n".join(lines + _pooled(report) + privacy.markdown_lines(report)) + "\n"
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
    sw = report.get("teacher-sweep")
    if sw:
        lines += ["## Teacher-quality curve: `within` with teachers of growing corpora", ""]
        if "skipped" in sw:
            lines += [f"Skipped: {sw['skipped']}", ""]
        else:
            lines += [
                f"g retrained on growing parts of `{sw['ifer_corpus']}` "
                f"({sw['identities_available']} training identities); v is the central one.",
                "",
                *_sweep(sw["points"]),
            ]
    return "\n".join(lines + privacy.markdown_lines(report)) + "\n"


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
