"""Robust aggregation rules under attack, on the synthetic FedAvg experiment.

    python benchmarks/robust_rules.py [--quick] [--cache DIR]

The lab's FedAvg experiment (``training/experiments/fedavg.py``) on a generated synthetic
corpus: a central g and v trained on the source subjects, then every test subject (one node
each) personalizes v from the central on its own unlabelled clips (Eq. 1 selection, 2 epochs).
20 % of the nodes are hostile and send, instead of their update, the largest move the
aggregator accepts (``max_update_norm`` = 100, L2 distance from the central) either along
their own update ("scaled") or against it ("sign_flip"). The central of one round under each
rule (``vfer.fedavg`` mean, ``broker_aggregator.robust`` median, trimmed mean, Krum) is scored on every
subject's held-out clips: macro-F1 against the clean round with the same rule and against the
central before the round. Writes ``benchmarks/results/robust_rules.json``.

Profile: 25 synthetic subjects (13 train, 2 dev, 10 test nodes), 4 clips per class, the quick
training profile, one round (a second round would multiply the personalization cost per rule).
``--quick`` uses 15 subjects (5 test nodes, 1 hostile).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from broker_aggregator.robust import aggregate_blocks
from training.experiments import ExperimentOptions
from training.experiments.protocol import (
    personalize,
    predict,
    subject_data,
    subject_splits,
)
from training.experiments.setup import PROFILES, Context, SynthSizes
from vfer.classes import EMOTIONS_4
from vfer.fedavg import aggregate
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.metrics import scores

REPO = Path(__file__).resolve().parents[1]

W = dict[str, np.ndarray]
MAX_UPDATE_NORM = 100.0
#: (label, rule, robust_fraction)
RULES = (
    ("mean", "mean", 0.2),
    ("median", "median", 0.2),
    ("trimmed_mean", "trimmed_mean", 0.2),
    ("trimmed_mean (0.3)", "trimmed_mean", 0.3),
    ("krum", "krum", 0.2),
)


def attack(own: W, central: W, kind: str) -> W:
    """The largest accepted move from the central, along (scaled) or against (sign_flip) ``own``."""
    delta = {n: own[n].astype(np.float64) - central[n] for n in own}
    norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in delta.values())))
    sign = 1.0 if kind == "scaled" else -1.0
    step = sign * MAX_UPDATE_NORM * 0.999 / max(norm, 1e-12)
    return {n: (central[n] + step * delta[n]).astype(np.float32) for n in own}


def combine(rule: str, updates: list[W], fraction: float) -> W:
    if rule == "mean":
        return aggregate([(u, 1) for u in updates])
    shapes = {n: a.shape for n, a in updates[0].items()}

    def read(name: str, lo: int, hi: int) -> np.ndarray:
        return np.stack([u[name].ravel()[lo:hi] for u in updates])

    return aggregate_blocks(rule, shapes, len(updates), read, fraction=fraction)[0]  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 subjects: 5 nodes, 1 hostile")
    ap.add_argument("--cache", type=Path, help="keep corpora, embeddings and models here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    subjects, test = (15, 5) if args.quick else (25, 10)
    quick = PROFILES["quick"]
    profile = replace(quick, synth_a=SynthSizes(subjects, 4, test, 2, 20, 28, 10.0), rounds=1)
    with tempfile.TemporaryDirectory(prefix="fedvfer-robust-") as tmp:
        opts = ExperimentOptions(
            corpus="synthetic",
            out=Path(tmp) / "out",
            cache=args.cache or Path(tmp) / "work",
            seed=args.seed,
            classes=EMOTIONS_4,
            profile_override=profile,
            progress=False,
        )
        result = run(Context(opts), args.seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["load_1min_at_end"] = os.getloadavg()[0]
    out = REPO / "benchmarks" / "results" / "robust_rules.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["table"], indent=2))
    print(f"wrote {out} in {result['seconds']} s")
    return 0


def run(ctx: Context, seed: int) -> dict[str, Any]:
    classes = ctx.options.classes
    central = ctx.central(classes)
    splits = subject_splits(central.corpus.split("test"), ctx.profile.adapt_fraction, seed)
    data = [subject_data(s, ctx.cache, classes, central.ifer, ctx.heads) for s in splits]
    y = np.concatenate([d.eval_true for d in data])
    names = trainable_names(vfer_spec(len(classes)))
    start = dict(central.vfer)
    base = {n: start[n].astype(np.float64) for n in names}

    def macro_f1(v: W) -> float:
        pred = np.concatenate([predict(ctx.heads, {**start, **v}, d.eval_clips) for d in data])
        return float(scores(y, pred, classes)["macro"]["f1"])

    honest: list[W] = []
    for i, d in enumerate(data):
        p = personalize(d, start, ctx.profile, seed=seed * 1000 + 100 + i)
        if p.weights is not None:  # a node that selected nothing sends nothing
            honest.append({n: p.weights[n] for n in names})
    hostile = max(1, round(len(honest) / 5))  # 20 % of the nodes that sent an update
    table: dict[str, dict[str, float]] = {}
    for label, rule, fraction in RULES:
        row = {"clean": macro_f1(combine(rule, honest, fraction))}
        for kind in ("scaled", "sign_flip"):
            sent = [attack(u, base, kind) for u in honest[:hostile]] + honest[hostile:]
            row[kind] = macro_f1(combine(rule, sent, fraction))
        table[label] = {k: round(v, 4) for k, v in row.items()}
    return {
        "benchmark": "robust_rules",
        "nodes": len(data),
        "updates": len(honest),
        "eval_clips": len(y),
        "hostile": hostile,
        "rounds": 1,
        "max_update_norm": MAX_UPDATE_NORM,
        "robust_fraction": 0.2,
        "central_before_round_macro_f1": round(macro_f1({n: start[n] for n in names}), 4),
        "table": table,
        "summary": "; ".join(
            f"{r}: clean {t['clean']}, scaled {t['scaled']}, sign_flip {t['sign_flip']}"
            for r, t in table.items()
        ),
    }


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
