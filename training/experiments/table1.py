"""Table 1: IFER (g) per class, macro and micro precision / recall / F1 on the test split.

Frame level as the paper scores g (every frame with a face is one sample, labelled with its clip's
label), plus the clip level of Eq. 1 (argmax of the mean frame probabilities) and each test
subject's frame-level micro-F1.

Beside g, the linear probe (:mod:`training.experiments.probe`): a logistic regression fitted on
the very frames g trained on and scored on the same test frames (``probe``), and the gap
``g_minus_probe`` in macro-F1 and accuracy, as measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.experiments.probe import fit_probe
from training.experiments.setup import Context
from training.train import clip_data, train_dev
from vfer.metrics import scores
from vfer.selection import mean_frame_probs


def run(ctx: Context) -> dict[str, Any]:
    classes = ctx.options.classes
    central = ctx.central(classes)
    test = central.g_corpus.split("test")
    data = clip_data(test, ctx.cache, classes)
    if not data.clips:
        raise ValueError(f"{central.g_corpus.name}: no test clips with a face")
    x, y = data.frames()
    probs = ctx.heads.ifer(central.ifer, x)
    frame = scores(y, np.argmax(probs, axis=1), classes)
    bounds = np.cumsum([len(c) for c in data.clips])[:-1]
    clip_probs = mean_frame_probs(np.split(probs, bounds))
    clip = scores(data.labels, np.argmax(clip_probs, axis=1), classes)
    owner = np.concatenate(
        [
            np.full(len(c), r.subject, dtype=object)
            for c, r in zip(data.clips, data.records, strict=True)
        ]
    )
    pred = np.argmax(probs, axis=1)
    subjects = [
        {
            "subject": s,
            "frames": int((owner == s).sum()),
            "micro_f1": scores(y[owner == s], pred[owner == s], classes)["micro"]["f1"],
        }
        for s in sorted(set(owner.tolist()))
    ]
    train_recs, _ = train_dev(central.g_corpus, ctx.options.seed)
    xt, yt = clip_data(
        [r for r in train_recs if ctx.cache.has(r.path)], ctx.cache, classes
    ).frames()
    probe = fit_probe(xt, yt, x, len(classes), seed=ctx.options.seed)
    probe_frame = scores(y, np.argmax(probe.probs, axis=1), classes)
    return {
        "classes": list(classes),
        "corpus": central.g_corpus.name,
        "vfer_corpus": central.corpus.name,
        "probe": {**probe_frame, "train_frames": probe.train_frames},
        "g_minus_probe": {
            "macro_f1": frame["macro"]["f1"] - probe_frame["macro"]["f1"],
            "accuracy": frame["accuracy"] - probe_frame["accuracy"],
        },
        **frame,
        "clip_level": clip,
        "subjects": subjects,
        "test_clips": len(data.clips),
        "no_face_clips": len(data.no_face),
        "chance_macro_f1": 1.0 / len(classes),
    }
