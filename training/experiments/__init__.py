"""The paper's experiments (``python -m training experiment NAME``): table1, within, cross, fedavg,
all, and teacher-sweep.

Each writes OUT/report.json, OUT/report.md and PNG figures; ``all`` runs the paper's four in one
process so the corpus is embedded and the central model trained once. With ``seeds`` > 1 every
seed's own report goes to OUT/seed-N/ and OUT/report.* pool them (:mod:`.seeds`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from training.experiments import cross, fedavg, report, seeds, sweep, table1, within
from training.experiments.privacy import split_variant
from training.experiments.protocol import SubjectSplit, subject_splits
from training.experiments.setup import VARIANTS, Context, ExperimentOptions, ExperimentProfile

log = logging.getLogger(__name__)

EXPERIMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "table1": table1.run,
    "within": within.run,
    "cross": cross.run,
    "fedavg": fedavg.run,
    "teacher-sweep": sweep.run,
}
#: what ``all`` runs: the paper's four
PAPER = ("table1", "within", "cross", "fedavg")
NAMES = (*EXPERIMENTS, "all")

__all__ = [
    "EXPERIMENTS",
    "NAMES",
    "VARIANTS",
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
    unknown = [v for v in options.variants if split_variant(v)[0] not in VARIANTS]
    if unknown or not options.variants:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not 1 <= options.seeds <= 100:
        raise ValueError(f"seeds must be 1..100, got {options.seeds}")
    if options.seeds == 1:
        return _run_one(name, options)
    t0 = time.perf_counter()
    runs = [
        _run_one(
            name,
            replace(
                options,
                seed=options.seed + i,
                data_seed=options.corpus_seed,
                seeds=1,
                out=options.out / f"seed-{options.seed + i}",
                cache=options.cache or options.out / "work",
            ),
        )
        for i in range(options.seeds)
    ]
    out: dict[str, Any] = seeds.pool(runs)
    out["per_seed"] = [
        {"seed": r["meta"]["seed"], "summary": r["summary"], "report": f"seed-{r['meta']['seed']}"}
        for r in runs
    ]
    out["meta"] = {
        **runs[0]["meta"],
        "seed": options.seed,
        "seeds": [r["meta"]["seed"] for r in runs],
        "data_seed": options.corpus_seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    report.write(out, options.out)
    return out


def _run_one(name: str, options: ExperimentOptions) -> dict[str, Any]:
    t0 = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(options)
    out: dict[str, Any] = {}
    for key in PAPER if name == "all" else (name,):
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
        "data_seed": options.corpus_seed,
        "variants": list(options.variants),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    report.write(out, options.out)
    return out
