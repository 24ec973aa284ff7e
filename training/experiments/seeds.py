"""``--seeds N``: the same experiment with N seeds, and the change it measures pooled over them.

Each seed trains its own central g and v, draws its own adaptation/evaluation split of every test
subject and its own fine-tuning order; the corpora stay those of the first seed (``data_seed``),
so the people are the same in every run. The pooled change of a subject is its mean change over
the seeds, and the 95% interval is the bootstrap over *subjects* of those means
(:func:`training.experiments.stats.summarize_gains`): the unit the paper personalizes. The runs
themselves (subject x seed) are counted too, as gained, lost or unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from training.experiments.protocol import gate_outcomes
from training.experiments.stats import summarize_gains

#: the sections whose per-subject rows are pooled
PERSONALIZED = ("within", "cross", "fedavg")


def pool_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool per-subject rows that carry a ``seed``: per-seed means, per-subject means, intervals."""
    if not rows:
        return {"runs": 0}
    seeds = sorted({r["seed"] for r in rows})
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_subject[r["subject"]].append(r)
    out: dict[str, Any] = {"seeds": seeds, "runs": len(rows), "subjects_n": len(by_subject)}
    for metric in ("micro", "macro"):
        key = f"{metric}_f1_change"
        if not all(key in r for r in rows):
            continue
        subject_means = np.array([np.mean([r[key] for r in rs]) for rs in by_subject.values()])
        out[f"{key}_ci"] = summarize_gains(subject_means).as_dict()
        out[f"{key}_runs"] = summarize_gains(np.array([r[key] for r in rows])).as_dict()
        out[f"{key}_per_seed"] = [
            float(np.mean([r[key] for r in rows if r["seed"] == s])) for s in seeds
        ]
    out["per_subject"] = [
        {
            "subject": subject,
            "micro_f1_change": float(np.mean([r["micro_f1_change"] for r in rs])),
            "teacher_accuracy": _mean_of(rs, "teacher_accuracy"),
            "gate_blocked": sum(r.get("gate_passed") is False for r in rs),
            "runs": len(rs),
        }
        for subject, rs in sorted(by_subject.items())
    ]
    if any(r.get("gate_passed") is not None for r in rows):
        out["gate"] = gate_outcomes(list(rows))
    return out


def _mean_of(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _tagged(rows: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    return [{**r, "seed": seed} for r in rows]


def pool(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pooled sections of several single-seed reports (``meta.seed`` tells each one's seed)."""
    out: dict[str, Any] = {}
    for key in PERSONALIZED:
        secs: list[tuple[int, dict[str, Any]]] = [
            (r["meta"]["seed"], r[key]) for r in reports if r.get(key)
        ]
        if len(secs) != len(reports) or any("skipped" in sec for _, sec in secs):
            continue
        ref = secs[0][1]["reference"] if "variants" in secs[0][1] else "paper"
        names = list(secs[0][1].get("variants") or {ref: None})
        variants = {}
        for name in names:
            rows = [
                row
                for seed, sec in secs
                for row in _tagged(
                    (sec["variants"][name] if "variants" in sec else sec)["subjects"], seed
                )
            ]
            variants[name] = {**pool_rows(rows), "subjects": rows}
        out[key] = {"reference": ref, "variants": variants, **_brief(variants[ref])}
    sweeps = [(r["meta"]["seed"], r["teacher-sweep"]) for r in reports if r.get("teacher-sweep")]
    if sweeps and len(sweeps) == len(reports) and all("points" in sec for _, sec in sweeps):
        out["teacher-sweep"] = {"points": pool_sweep(sweeps)}
    return out


def _brief(pooled: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pooled.items() if k not in ("subjects",)}


def pool_sweep(sweeps: Sequence[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One point per identity count: mean teacher accuracy and the pooled change of each rule."""
    by_n: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for seed, sec in sweeps:
        for p in sec["points"]:
            by_n[p["identities"]].append((seed, p))
    points = []
    for n, items in sorted(by_n.items()):
        accs = [p["teacher_accuracy"] for _, p in items if p["teacher_accuracy"] is not None]
        names = list(items[0][1].get("variants") or {"paper": None})
        variants = {}
        for name in names:
            rows = [
                row
                for seed, p in items
                for row in _tagged(
                    (p["variants"][name] if "variants" in p else p)["subjects"], seed
                )
            ]
            variants[name] = _brief(pool_rows(rows))
        points.append(
            {
                "identities": n,
                "teacher_accuracy": float(np.mean(accs)) if accs else None,
                "teacher_accuracy_per_seed": accs,
                "variants": variants,
                **variants[names[0]],
            }
        )
    return points
