"""Table 6: R rounds of FedAvg of the personalized v heads into the central v.

Each round every test subject personalizes from the current central v (same selection rule,
same adaptation clips), the trainable weights are averaged with :func:`vfer.fedavg.aggregate`
(the paper's equal weights) and become the new central v; v's BatchNorm statistics stay the
central ones, as on the nodes. The central v is scored on all subjects' evaluation clips before
the first round and after each one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.experiments.protocol import (
    personalize,
    predict,
    sign_of,
    subject_data,
    subject_splits,
    teacher_scores,
)
from training.experiments.setup import Context
from vfer.fedavg import aggregate
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.metrics import scores


def run(ctx: Context) -> dict[str, Any]:
    classes = ctx.options.classes
    central = ctx.central(classes)
    splits = subject_splits(
        central.corpus.split("test"), ctx.profile.adapt_fraction, ctx.options.seed
    )
    data = [subject_data(s, ctx.cache, classes, central.ifer, ctx.heads) for s in splits]
    y = np.concatenate([d.eval_true for d in data])
    names = trainable_names(vfer_spec(len(classes)))

    def evaluate(v: dict[str, np.ndarray]) -> dict[str, Any]:
        pred = np.concatenate([predict(ctx.heads, v, d.eval_clips) for d in data])
        out = scores(y, pred, classes)
        out["subjects"] = [
            {
                "subject": d.subject,
                "micro_f1": scores(d.eval_true, predict(ctx.heads, v, d.eval_clips), classes)[
                    "micro"
                ]["f1"],
            }
            for d in data
        ]
        return out

    v = dict(central.vfer)
    rounds = [{"round": 0, "updates": 0, **evaluate(v)}]
    for r in range(1, ctx.profile.rounds + 1):
        updates = []
        for i, d in enumerate(data):
            p = personalize(d, v, ctx.profile, seed=ctx.options.seed * 1000 + 100 * r + i)
            if p.weights is not None:
                updates.append(({n: p.weights[n] for n in names}, float(p.selected)))
        if updates:
            v = {**v, **aggregate(updates, weighting="mean")}
        rounds.append({"round": r, "updates": len(updates), **evaluate(v)})
    before, after = rounds[0], rounds[-1]
    subject_rows = [
        {
            "subject": b["subject"],
            "micro_f1_before": b["micro_f1"],
            "micro_f1_after": a["micro_f1"],
            "micro_f1_change": a["micro_f1"] - b["micro_f1"],
        }
        for b, a in zip(before["subjects"], after["subjects"], strict=True)
    ]
    change = float(np.mean([s["micro_f1_change"] for s in subject_rows])) if subject_rows else 0.0
    return {
        "corpus": central.corpus.name,
        "classes": list(classes),
        "weighting": "mean",
        "teacher_on_subjects": teacher_scores(data, classes),
        "before": before,
        "after": after,
        "rounds": rounds,
        "subjects": subject_rows,
        "mean_subject_micro_f1_change": change,
        "sign": sign_of(change),
    }
