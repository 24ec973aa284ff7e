"""The paper's experiments (``python -m training experiment NAME``): table1, within, cross, fedavg, all.

Each writes OUT/report.json, OUT/report.md and PNG figures; ``all`` runs the four in one process
so the corpus is embedded and the central model trained once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from training.experiments import cross, fedavg, report, table1, within
from training.experiments.protocol import SubjectSplit, subject_splits
from training.experiments.setup import Context, ExperimentOptions, ExperimentProfile

log = logging.getLogger(__name__)

EXPERIMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "table1": table1.run,
    "within": within.run,
    "cross": cross.run,
    "fedavg": fedavg.run,
}
NAMES = (*EXPERIMENTS, "all")

__all__ = [
    "EXPERIMENTS",
    "NAMES",
    "ExperimentOptions",
    "ExperimentProfile",
    "SubjectSplit",
    "run_experiment",
    "subject_splits",
]


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: g and the probe on g's test split, the teacher on the personalized."""
    s: dict[str, Any] = {}
    t1 = out.get("table1")
    if t1:
        s["g"] = {"accuracy": t1["accuracy"], "macro_f1": t1["macro"]["f1"]}
        s["probe"] = {"accuracy": t1["probe"]["accuracy"], "macro_f1": t1["probe"]["macro"]["f1"]}
        s["g_minus_probe_macro_f1"] = t1["g_minus_probe"]["macro_f1"]
        s["g_test_corpus"] = t1["corpus"]
    for key in ("within", "cross", "fedavg"):
        sec = out.get(key) or {}
        if "teacher_on_subjects" in sec:
            t = sec["teacher_on_subjects"]
            s[f"teacher_on_{key}_subjects"] = {
                "accuracy": t["accuracy"],
                "macro_f1": t["macro_f1"],
                "clips": t["clips"],
            }
    return s


def run_experiment(name: str, options: ExperimentOptions) -> dict[str, Any]:
    """Run one experiment (or ``all``), write the report under ``options.out`` and return it."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
    t0 = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(options)
    out: dict[str, Any] = {}
    for key in EXPERIMENTS if name == "all" else (name,):
        t = time.perf_counter()
        out[key] = EXPERIMENTS[key](ctx)
        out[key]["seconds"] = round(time.perf_counter() - t, 1)
        log.info("%s done in %.1f s", key, out[key]["seconds"])
    centrals = list(ctx._centrals.values())
    profile = "custom" if options.profile_override else "quick" if options.quick else "full"
    out["training"] = {
        "log": centrals[0].train_log if centrals else [],
        "bundles": [str(c.bundle.path) for c in centrals],
        "notes": [dict(c.bundle.manifest.notes) for c in centrals],
    }
    out["preprocess"] = ctx.preprocess_stats
    out["summary"] = summary(out)
    out["meta"] = {
        "experiment": name,
        "corpus": options.corpus,
        "ifer_corpus": options.g_corpus or options.corpus,
        "target": options.target,
        "classes": list(options.classes),
        "profile": profile,
        "profile_values": asdict(ctx.profile),
        "seed": options.seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    report.write(out, options.out)
    return out
