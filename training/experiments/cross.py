"""Tables 4 and 5: train on corpus A, personalize and test on corpus B, on the shared 4 classes.

The central g and v come from A's training split; B's test subjects adapt and are scored as in
``within``. With ``--corpus synthetic`` and no ``--target-root``, B is the second synthetic
corpus described in :mod:`training.experiments.setup`.
"""

from __future__ import annotations

from typing import Any

from training.experiments.protocol import run_variants, subject_data, subject_splits
from training.experiments.setup import Context
from vfer.classes import EMOTIONS_4


def run(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    if o.target is None and o.corpus != "synthetic":
        return {
            "skipped": "cross needs a second corpus: --target NAME --target-root PATH",
            "classes": list(EMOTIONS_4),
        }
    central = ctx.central(EMOTIONS_4)
    target = ctx.corpus("target", EMOTIONS_4)
    test = target.split("test") or target.records
    splits = subject_splits(test, ctx.profile.adapt_fraction, o.seed)
    data = [subject_data(s, ctx.cache, EMOTIONS_4, central.ifer, ctx.heads) for s in splits]
    out = run_variants(data, central.vfer, EMOTIONS_4, ctx.heads, ctx.profile, o.seed, o.variants)
    return {
        "source": central.corpus.name,
        "target": target.name,
        "target_summary": target.summary(),
        **out,
    }
