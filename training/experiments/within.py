"""Tables 2 and 3, Fig. 3: VFER before and after personalization, within one corpus.

Every test subject of the source corpus adapts on half of its clips (unlabelled) and is scored on
the other half, with the central v (before) and its personalized v (after).
"""

from __future__ import annotations

from typing import Any

from training.experiments.protocol import run_variants, subject_data, subject_splits
from training.experiments.setup import Context


def run(ctx: Context) -> dict[str, Any]:
    classes = ctx.options.classes
    central = ctx.central(classes)
    splits = subject_splits(
        central.corpus.split("test"), ctx.profile.adapt_fraction, ctx.options.seed
    )
    data = [subject_data(s, ctx.cache, classes, central.ifer, ctx.heads) for s in splits]
    out = run_variants(
        data, central.vfer, classes, ctx.heads, ctx.profile, ctx.options.seed, ctx.options.variants
    )
    return {"corpus": central.corpus.name, **out}
