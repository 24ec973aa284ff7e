"""The teacher-quality curve (``experiment teacher-sweep``): how good must g be before
personalization helps?

g is retrained on the first 10, 30, 100 and 300 identities (a seeded order) of its own image
corpus's train split, with the central recipe (:func:`training.fit.train_g`) and the same dev
split; the central v stays the one trained on the video corpus. For each teacher, ``within``
runs as in the paper (same subjects, splits and fine-tune seeds), and the point of the curve is
the teacher's Eq. 1 accuracy on the personalized people's adaptation clips against their mean
micro-F1 change with its 95% bootstrap interval. Sizes larger than the corpus's train split are
replaced by the whole split (the report says how many identities each point really had).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from training.experiments.protocol import run_variants, subject_data, subject_splits
from training.experiments.setup import Context
from training.fit import train_g
from training.train import clip_data, train_dev

log = logging.getLogger(__name__)

SIZES = (10, 30, 100, 300)


def sizes_for(available: int, wanted: tuple[int, ...] = SIZES) -> list[int]:
    """The identity counts to train on: ``wanted`` capped at what the corpus has, without repeats."""
    if available < 1:
        raise ValueError("g's corpus has no training identities")
    return sorted({min(n, available) for n in wanted})


def run(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    classes = o.classes
    central = ctx.central(classes)
    if central.ifer_corpus is None:
        return {
            "skipped": "the sweep needs g's own image corpus (not --ifer-corpus same)",
            "classes": list(classes),
        }
    g_train, g_dev = train_dev(central.ifer_corpus, o.seed)
    g_train = [r for r in g_train if ctx.cache.has(r.path)]
    dev = clip_data([r for r in g_dev if ctx.cache.has(r.path)], ctx.cache, classes)
    people = sorted({r.subject for r in g_train})
    order = [people[i] for i in np.random.default_rng([o.seed, 0x5EE9]).permutation(len(people))]
    splits = subject_splits(central.corpus.split("test"), ctx.profile.adapt_fraction, o.seed)
    points = []
    for n in sizes_for(len(people)):
        chosen = set(order[:n])
        train = clip_data([r for r in g_train if r.subject in chosen], ctx.cache, classes)
        log.info("teacher-sweep: g on %s identities (%s images)", n, len(train.clips))
        g = train_g(train.frames(), dev.frames(), len(classes), ctx.profile.train, seed=o.seed)
        data = [subject_data(s, ctx.cache, classes, g, ctx.heads) for s in splits]
        out = run_variants(data, central.vfer, classes, ctx.heads, ctx.profile, o.seed, o.variants)
        teacher = out["teacher_on_subjects"]
        points.append(
            {
                "identities": n,
                "images": len(train.clips),
                "teacher_accuracy": teacher["accuracy"],
                "teacher_macro_f1": teacher["macro_f1"],
                "mean_subject_micro_f1_change": out["mean_subject_micro_f1_change"],
                "micro_f1_change_ci": out["micro_f1_change_ci"],
                "macro_f1_change_ci": out["macro_f1_change_ci"],
                "sign": out["sign"],
                "gate": out["gate"],
                "subjects": out["subjects"],
                "variants": {
                    name: {
                        "micro_f1_change_ci": v["micro_f1_change_ci"],
                        "subjects": v["subjects"],
                    }
                    for name, v in out["variants"].items()
                },
            }
        )
    return {
        "corpus": central.corpus.name,
        "ifer_corpus": central.ifer_corpus.name,
        "identities_available": len(people),
        "classes": list(classes),
        "points": points,
    }
