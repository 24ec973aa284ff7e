"""The personalization protocol shared by ``within``, ``cross``, ``fedavg`` and the fleet simulation.

Per test subject: split its clips (per class, seeded) into an *adaptation* part, used without its
labels, and a held-out *evaluation* part; pseudo-label the adaptation clips with g (Eq. 1, the one
rule in :mod:`vfer.selection`), fine-tune v from the central v on the selected clips
(:func:`vfer.personalize.finetune_v`: 2 epochs, Adam 1e-3, plain cross-entropy), and score the
central and the personalized v on the evaluation part. Nothing here looks at an evaluation label
before scoring, and nothing is tuned on the result.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.corpora import Record
from training.experiments.stats import summarize_gains
from training.preprocess import EmbeddingCache
from training.train import clip_data
from vfer.gate import GateVerdict, decide
from vfer.metrics import scores
from vfer.selection import mean_frame_probs, select_clips


def sign_of(change: float, tol: float = 1e-9) -> str:
    """The measured sign of a mean change, as reported (never tuned)."""
    return "gain" if change > tol else "loss" if change < -tol else "no change"


@dataclass(frozen=True)
class SubjectSplit:
    subject: str
    adapt: list[Record]  # used unlabelled, for pseudo labels and fine-tuning
    evaluate: list[Record]  # held out, scored before and after


def split_subject(
    records: Sequence[Record], fraction: float, seed: int, salt: int = 0
) -> tuple[list[Record], list[Record]]:
    """Per class, a seeded ``fraction`` (rounded down, at least one when a class has two clips) adapts."""
    if not 0 < fraction < 1:
        raise ValueError(f"adapt fraction must be in (0, 1), got {fraction}")
    adapt: list[Record] = []
    held: list[Record] = []
    for label in sorted({r.label for r in records}):
        group = sorted((r for r in records if r.label == label), key=lambda r: str(r.path))
        order = np.random.default_rng([seed, salt, zlib.crc32(label.encode())]).permutation(
            len(group)
        )
        n = int(len(group) * fraction)
        if len(group) >= 2:
            n = min(max(n, 1), len(group) - 1)
        adapt += [group[i] for i in order[:n]]
        held += [group[i] for i in order[n:]]
    return adapt, held


def subject_splits(
    records: Sequence[Record], fraction: float = 0.5, seed: int = 0
) -> list[SubjectSplit]:
    """The per-subject held-out splits of ``records`` (e.g. a corpus's test split), by subject id."""
    out = []
    for subject in sorted({r.subject for r in records}):
        mine = [r for r in records if r.subject == subject]
        adapt, held = split_subject(mine, fraction, seed, zlib.crc32(subject.encode()))
        out.append(SubjectSplit(subject, adapt, held))
    return out


@dataclass
class SubjectData:
    """A subject's cached embeddings: adaptation clips (with g's mean probabilities) and eval clips."""

    subject: str
    adapt_clips: list[np.ndarray]
    adapt_true: np.ndarray  # only for reporting pseudo-label accuracy
    adapt_probs: np.ndarray  # (N, K) Eq. 1 mean of g's per-frame probabilities
    eval_clips: list[np.ndarray]
    eval_true: np.ndarray
    no_face: int


def subject_data(
    split: SubjectSplit,
    cache: EmbeddingCache,
    classes: Sequence[str],
    ifer: dict[str, np.ndarray],
    heads: Any,
) -> SubjectData:
    a = clip_data(split.adapt, cache, classes)
    e = clip_data(split.evaluate, cache, classes)
    probs = np.zeros((0, len(classes)))
    if a.clips:
        frame_probs = heads.ifer(ifer, np.concatenate(a.clips))
        bounds = np.cumsum([len(c) for c in a.clips])[:-1]
        probs = mean_frame_probs(np.split(frame_probs, bounds))
    return SubjectData(
        split.subject, a.clips, a.labels, probs, e.clips, e.labels, len(a.no_face) + len(e.no_face)
    )


@dataclass
class Personalized:
    weights: dict[str, np.ndarray] | None  # None: nothing selected, the central v stays
    selected: int
    selected_per_class: list[int]
    pseudo_label_accuracy: float | None
    loss_before: float | None = None
    loss_after: float | None = None
    gate: GateVerdict | None = None  # the node's safety gate on the clips the fine-tune left out
    privacy: dict[str, Any] | None = None  # DP-SGD's visits, z, epsilon (``--privacy`` runs)
    signals: dict[str, float] | None = None  # the gate's candidates (``--gate-signals`` runs)


def personalize(
    data: SubjectData, start: dict[str, np.ndarray], profile: Any, seed: int
) -> Personalized:
    """Select by Eq. 1 and fine-tune v from ``start`` on the selection (Sec. 3.3)."""
    from vfer.personalize import finetune_v

    k = data.adapt_probs.shape[1]
    if not data.adapt_clips:
        return Personalized(None, 0, [0] * k, None)
    if profile.privacy_epsilon:
        from training.experiments.privacy import personalize_private

        dp = personalize_private(data.adapt_clips, data.adapt_probs, start, profile, seed)
        if dp is None:
            return Personalized(None, 0, [0] * k, None)
        acc = float(np.mean(dp.labels == data.adapt_true[dp.indices]))
        per_class = dp.per_class(k)
        return Personalized(
            dp.weights,
            len(dp.indices),
            per_class,
            acc,
            dp.loss_before,
            dp.loss_after,
            None,
            dp.report,
        )
    sel = select_clips(data.adapt_probs, profile.p, profile.p_threshold, profile.balance or None)
    per_class = [int(n) for n in sel.per_class]
    if sel.count == 0:
        return Personalized(None, 0, per_class, None)
    acc = float(np.mean(sel.labels == data.adapt_true[sel.indices]))
    tuned = finetune_v(
        start,
        [data.adapt_clips[int(i)] for i in sel.indices],
        sel.labels,
        epochs=profile.ft_epochs,
        lr=profile.ft_lr,
        batch_size=profile.ft_batch,
        seed=seed,
        l2sp=profile.l2sp,
    )
    held = [i for i in range(len(data.adapt_clips)) if i not in {int(j) for j in sel.indices}]
    held_clips = [data.adapt_clips[i] for i in held]
    from vfer.personalize import predict_v

    held_teacher = np.argmax(data.adapt_probs[held], axis=1) if held else np.zeros(0, np.int64)
    verdict = decide(
        sel.per_class,
        predict_v(tuned.weights, held_clips) if held_clips else np.zeros((0, k)),
        predict_v(start, held_clips) if held_clips else np.zeros((0, k)),
        held_teacher,
    )
    signals = None
    if profile.gate_signals:
        from training.experiments.signals import measure

        chosen = [data.adapt_clips[int(i)] for i in sel.indices]
        signals = measure(tuned.weights, start, held_clips, held_teacher, chosen, sel.labels, seed)
    return Personalized(
        tuned.weights,
        sel.count,
        per_class,
        acc,
        tuned.loss_before,
        tuned.loss_after,
        verdict,
        signals=signals,
    )


def predict(heads: Any, v: dict[str, np.ndarray], clips: list[np.ndarray]) -> np.ndarray:
    if not clips:
        return np.zeros(0, np.int64)
    return np.argmax(heads.vfer(v, clips), axis=1)


def teacher_scores(subjects: list[SubjectData], classes: Sequence[str]) -> dict[str, Any]:
    """g's Eq. 1 clip labels against the true labels of every adaptation clip of these people.

    Reported only: the true labels are never used by the protocol itself.
    """
    with_clips = [d for d in subjects if len(d.adapt_true)]
    if not with_clips:
        return {"clips": 0, "accuracy": None, "macro_f1": None}
    y = np.concatenate([d.adapt_true for d in with_clips])
    pred = np.concatenate([np.argmax(d.adapt_probs, axis=1) for d in with_clips])
    s = scores(y, pred, classes)
    return {
        "clips": len(y),
        "accuracy": s["accuracy"],
        "macro_f1": s["macro"]["f1"],
        "macro_f1_present": s["macro_present"]["f1"],
        **s,
    }


def teacher_accuracy(d: SubjectData) -> float | None:
    """Eq. 1's pseudo labels against the true labels of all of one subject's adaptation clips
    (reported only: the x axis of the gain-vs-teacher figure)."""
    if not len(d.adapt_true):
        return None
    return float(np.mean(np.argmax(d.adapt_probs, axis=1) == d.adapt_true))


def run_variants(
    subjects: list[SubjectData],
    central_v: dict[str, np.ndarray],
    classes: Sequence[str],
    heads: Any,
    profile: Any,
    seed: int,
    variants: Sequence[str],
) -> dict[str, Any]:
    """:func:`run_personalization` once per rule of ``variants`` on the same subjects, central v
    and seeds. The first rule's section is the report's own; ``variants`` holds them all."""
    from training.experiments.setup import variant_profile

    outs = {
        name: run_personalization(
            subjects, central_v, classes, heads, variant_profile(profile, name), seed
        )
        for name in variants
    }
    return {**outs[variants[0]], "variants": outs, "reference": variants[0]}


def run_personalization(
    subjects: list[SubjectData],
    central_v: dict[str, np.ndarray],
    classes: Sequence[str],
    heads: Any,
    profile: Any,
    seed: int,
) -> dict[str, Any]:
    """Before/after scores over all subjects' evaluation clips, and one row per subject."""
    rows = []
    y_all, before_all, after_all = [], [], []
    for i, d in enumerate(subjects):
        before = predict(heads, central_v, d.eval_clips)
        p = personalize(d, central_v, profile, seed=seed * 1000 + i)
        after = predict(heads, p.weights, d.eval_clips) if p.weights is not None else before
        y_all.append(d.eval_true)
        before_all.append(before)
        after_all.append(after)
        sb, sa = scores(d.eval_true, before, classes), scores(d.eval_true, after, classes)
        rows.append(
            {
                "subject": d.subject,
                "adapt_clips": len(d.adapt_clips),
                "eval_clips": len(d.eval_clips),
                "no_face_clips": d.no_face,
                "selected": p.selected,
                "selected_per_class": dict(zip(classes, p.selected_per_class, strict=True)),
                "pseudo_label_accuracy": p.pseudo_label_accuracy,
                "teacher_accuracy": teacher_accuracy(d),
                "finetune_loss_before": p.loss_before,
                "finetune_loss_after": p.loss_after,
                "personalized": p.weights is not None,
                "micro_f1_before": sb["micro"]["f1"],
                "micro_f1_after": sa["micro"]["f1"],
                "micro_f1_change": sa["micro"]["f1"] - sb["micro"]["f1"],
                "macro_f1_before": sb["macro"]["f1"],
                "macro_f1_after": sa["macro"]["f1"],
                "macro_f1_change": sa["macro"]["f1"] - sb["macro"]["f1"],
                # over the classes this person's clips show (vfer.metrics: both conventions)
                "macro_f1_present_before": sb["macro_present"]["f1"],
                "macro_f1_present_after": sa["macro_present"]["f1"],
                "macro_f1_present_change": sa["macro_present"]["f1"] - sb["macro_present"]["f1"],
                "gate_passed": None if p.gate is None else p.gate.passed,
                "gate_reasons": [] if p.gate is None else list(p.gate.reasons),
                "privacy": p.privacy,
                "signals": p.signals,
            }
        )
    y = np.concatenate(y_all) if y_all else np.zeros(0, np.int64)
    before_s = scores(y, np.concatenate(before_all) if before_all else y, classes)
    after_s = scores(y, np.concatenate(after_all) if after_all else y, classes)
    changes = [r["micro_f1_change"] for r in rows]
    mean_change = float(np.mean(changes)) if changes else 0.0
    return {
        "classes": list(classes),
        "teacher_on_subjects": teacher_scores(subjects, classes),
        "before": before_s,
        "after": after_s,
        "subjects": rows,
        "mean_subject_micro_f1_change": mean_change,
        "sign": sign_of(mean_change),
        "subjects_improved": sum(c > 0 for c in changes),
        "subjects_worse": sum(c < 0 for c in changes),
        "micro_f1_change_ci": summarize_gains(np.array(changes)).as_dict() if changes else None,
        "macro_f1_change_ci": (
            summarize_gains(np.array([r["macro_f1_change"] for r in rows])).as_dict()
            if rows
            else None
        ),
        "macro_f1_present_change_ci": (
            summarize_gains(np.array([r["macro_f1_present_change"] for r in rows])).as_dict()
            if rows
            else None
        ),
        "gate": gate_outcomes(rows),
    }


def gate_outcomes(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How the node's gate would have judged each subject's head against what F1 then did
    (measured, never used to choose anything): blocked heads that lowered or raised F1."""
    judged = [r for r in rows if r.get("gate_passed") is not None]
    return {
        "judged": len(judged),
        "blocked": sum(not r["gate_passed"] for r in judged),
        "blocked_would_lower": sum(
            not r["gate_passed"] and r["micro_f1_change"] < 0 for r in judged
        ),
        "blocked_would_raise": sum(
            not r["gate_passed"] and r["micro_f1_change"] > 0 for r in judged
        ),
        "passed_lowered": sum(r["gate_passed"] and r["micro_f1_change"] < 0 for r in judged),
        "passed_raised": sum(r["gate_passed"] and r["micro_f1_change"] > 0 for r in judged),
    }
