"""Label-free signals that a freshly personalized v is worse than the head it would replace.

A node has no labels, so the gate (:mod:`vfer.gate`) must judge a new head from unlabelled clips:
the stored clips the fine-tune did not use (held back). Every signal here compares the new head
with the current one (the central, or the previous personalized head) on the same held-back clips
and is oriented the same way: **higher means "the new head looks worse"**, and 0 means "no
difference". Each is a pure function of predicted probabilities (arrays in, a float out);
:func:`measure` runs v on the held-back clips (and on perturbed copies of them) and computes them
all, and both the node's personalization child and the lab's ``within`` experiment call it, so
the same numbers are computed in both.

* ``teacher_disagreement``: how much less the new head agrees with the teacher's Eq. 1 labels than
  the current head does (the gate's original check).
* ``entropy_drop``: how much more confident the new head is (mean prediction entropy, as a share of
  log K): fine-tuning on its own noisy pseudo labels makes a head sure of itself, right or wrong.
* ``class_shift``: total-variation distance between the two heads' predicted-class histograms.
* ``dropout_instability``: how much more often the new head changes its mind when 30 % of a clip's
  frames are dropped, than the current head does.
* ``temporal_instability``: the same with only the clip's first half seen (consistency in time).
* ``reverse_disagreement``: reverse validation (Zhong et al. 2010). A light reverse model (a
  softmax regression on each clip's mean embedding, :func:`fit_probe`) trained on the held-back
  clips labelled by the new head and scored on the fine-tune's own pseudo labels, against the same
  with the current head's labels: a new head whose labels do not carry back to the teacher's has
  learnt something else. (A second fine-tune of v would be the literal reading; it costs seconds
  per head on a Pi, the probe milliseconds.)

``combined`` averages the four cheap signals that are rates on the same clips (teacher
disagreement, class shift, the two instabilities) with equal weights: fixed before any
measurement, so the combination is not fitted to the runs it is scored on.
docs/personalization.md ("Which head will hurt a person") measures each one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Every signal, in report order.
SIGNALS = (
    "teacher_disagreement",
    "entropy_drop",
    "class_shift",
    "dropout_instability",
    "temporal_instability",
    "reverse_disagreement",
    "combined",
)
#: The signals ``combined`` averages (equal weights, chosen before measuring).
COMBINED_OF = ("teacher_disagreement", "class_shift", "dropout_instability", "temporal_instability")
#: Share of frames :func:`drop_frames` removes.
DROPOUT = 0.3


class SignalError(ValueError):
    """Inputs of inconsistent shapes or values."""


def _probs(p: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 2 or not np.all(np.isfinite(arr)):
        raise SignalError(
            f"{name}: expected finite (clips, classes) probabilities, got {arr.shape}"
        )
    return arr


def _pair(new: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _probs(new, "new"), _probs(current, "current")
    if a.shape != b.shape:
        raise SignalError(f"new {a.shape} and current {b.shape} predictions differ in shape")
    return a, b


def agreement(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of clips whose argmax is ``labels`` (NaN without clips)."""
    p = _probs(probs, "probs")
    y = np.asarray(labels)
    if len(y) != len(p):
        raise SignalError(f"{len(p)} predictions but {len(y)} labels")
    return float(np.mean(p.argmax(axis=1) == y)) if len(p) else float("nan")


def teacher_disagreement(new: np.ndarray, current: np.ndarray, teacher: np.ndarray) -> float:
    a, b = _pair(new, current)
    return agreement(b, teacher) - agreement(a, teacher)


def mean_entropy(probs: np.ndarray) -> float:
    """Mean prediction entropy as a share of log K (0: certain, 1: uniform)."""
    p = np.clip(_probs(probs, "probs"), 1e-12, 1.0)
    if not len(p) or p.shape[1] < 2:
        return float("nan")
    return float(np.mean(-np.sum(p * np.log(p), axis=1)) / np.log(p.shape[1]))


def entropy_drop(new: np.ndarray, current: np.ndarray) -> float:
    a, b = _pair(new, current)
    return mean_entropy(b) - mean_entropy(a)


def class_shift(new: np.ndarray, current: np.ndarray) -> float:
    """Total-variation distance between the predicted-class histograms (0 .. 1)."""
    a, b = _pair(new, current)
    if not len(a):
        return float("nan")
    k = a.shape[1]
    ha = np.bincount(a.argmax(axis=1), minlength=k) / len(a)
    hb = np.bincount(b.argmax(axis=1), minlength=k) / len(b)
    return float(0.5 * np.abs(ha - hb).sum())


def flip_rate(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Share of clips whose argmax changes under a perturbation."""
    a, b = _pair(clean, perturbed)
    return float(np.mean(a.argmax(axis=1) != b.argmax(axis=1))) if len(a) else float("nan")


def instability(
    new_clean: np.ndarray,
    new_perturbed: np.ndarray,
    cur_clean: np.ndarray,
    cur_perturbed: np.ndarray,
) -> float:
    """How much more often the new head flips under the perturbation than the current one."""
    return flip_rate(new_clean, new_perturbed) - flip_rate(cur_clean, cur_perturbed)


def drop_frames(clip: np.ndarray, rng: np.random.Generator, share: float = DROPOUT) -> np.ndarray:
    """``clip`` without a random ``share`` of its frames (order kept, at least one frame left)."""
    n = len(clip)
    keep = max(1, n - round(share * n))
    return np.asarray(clip)[np.sort(rng.choice(n, size=keep, replace=False))]


def first_half(clip: np.ndarray) -> np.ndarray:
    return np.asarray(clip)[: max(1, len(clip) // 2)]


def fit_probe(
    x: np.ndarray, y: np.ndarray, k: int, steps: int = 200, lr: float = 0.5, l2: float = 1e-3
) -> np.ndarray:
    """A softmax regression (weights (d + 1, k)) on standardized features, by gradient descent:
    deterministic, numpy only, milliseconds for a night's clips."""
    x = _standardize(np.asarray(x, np.float64))
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(k)[np.asarray(y, np.int64)]
    w = np.zeros((xb.shape[1], k))
    for _ in range(steps):
        z = xb @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * (xb.T @ (p - onehot) / len(xb) + l2 * w)
    return w


def probe_predict(w: np.ndarray, x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Class indices the probe gives ``x`` (standardized with ``reference``'s statistics)."""
    ref = np.asarray(reference, np.float64)
    mu, sd = ref.mean(axis=0), ref.std(axis=0) + 1e-6
    xs = (np.asarray(x, np.float64) - mu) / sd
    return (np.hstack([xs, np.ones((len(xs), 1))]) @ w).argmax(axis=1)


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)


def carried_back(
    held_means: np.ndarray,
    held_labels: np.ndarray,
    chosen_means: np.ndarray,
    chosen_labels: np.ndarray,
    k: int,
) -> float:
    """Reverse validation's score: a probe fitted on the held-back clips (mean embeddings) with
    ``held_labels``, its agreement with ``chosen_labels`` on the fine-tune's clips."""
    if not len(held_means) or not len(chosen_means):
        return float("nan")
    w = fit_probe(held_means, held_labels, k)
    return float(np.mean(probe_predict(w, chosen_means, held_means) == np.asarray(chosen_labels)))


def reverse_disagreement(acc_from_new: float, acc_from_current: float) -> float:
    """Reverse validation: the current head's labels carry back better by this much."""
    return float(acc_from_current - acc_from_new)


def combined(values: Mapping[str, float]) -> float:
    """The equal-weight mean of :data:`COMBINED_OF` (NaN parts left out; NaN if none is known)."""
    parts = [values[k] for k in COMBINED_OF if k in values and np.isfinite(values[k])]
    return float(np.mean(parts)) if parts else float("nan")


@dataclass(frozen=True)
class Measured:
    """The signals, and both heads' probabilities on the held-back clips: the gate's own checks
    read these same predictions, so v runs once per head."""

    signals: dict[str, float]
    tuned: np.ndarray  # (held clips, K)
    start: np.ndarray


def measure(
    tuned: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    held: Sequence[np.ndarray],
    held_teacher: np.ndarray,
    selected: Sequence[np.ndarray],
    selected_labels: np.ndarray,
    seed: int,
) -> dict[str, float]:
    """Every signal of :data:`vfer.gate_signals.SIGNALS` for ``tuned`` against ``start``.

    ``held``: the held-back clips (frames x 1280), ``held_teacher`` their Eq. 1 labels;
    ``selected``/``selected_labels``: the fine-tune's own clips and pseudo labels (reverse
    validation scores back on those). NaN where there are no held-back clips."""
    return measure_heads(tuned, start, held, held_teacher, selected, selected_labels, seed).signals


def measure_heads(
    tuned: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    held: Sequence[np.ndarray],
    held_teacher: np.ndarray,
    selected: Sequence[np.ndarray],
    selected_labels: np.ndarray,
    seed: int,
    k: int = 0,
) -> Measured:
    """:func:`measure`, with the two heads' predictions on ``held`` kept (``k`` columns when
    there are no held-back clips)."""
    from vfer.personalize import predict_v

    if not held:
        empty = np.zeros((0, k))
        return Measured({name: float("nan") for name in SIGNALS}, empty, empty)
    rng = np.random.default_rng(seed)
    n = len(held)
    inputs = [*held, *(drop_frames(c, rng) for c in held), *(first_half(c) for c in held)]
    new_all, cur_all = predict_v(tuned, inputs), predict_v(start, inputs)  # one call per head
    new, new_drop, new_half = new_all[:n], new_all[n : 2 * n], new_all[2 * n :]
    cur, cur_drop, cur_half = cur_all[:n], cur_all[n : 2 * n], cur_all[2 * n :]
    held_means = np.stack([np.mean(c, axis=0) for c in held])
    chosen_means = (
        np.stack([np.mean(c, axis=0) for c in selected]) if len(selected) else held_means[:0]
    )
    k = new.shape[1]
    out = {
        "teacher_disagreement": teacher_disagreement(new, cur, held_teacher),
        "entropy_drop": entropy_drop(new, cur),
        "class_shift": class_shift(new, cur),
        "dropout_instability": instability(new, new_drop, cur, cur_drop),
        "temporal_instability": instability(new, new_half, cur, cur_half),
        "reverse_disagreement": reverse_disagreement(
            carried_back(held_means, new.argmax(axis=1), chosen_means, selected_labels, k),
            carried_back(held_means, cur.argmax(axis=1), chosen_means, selected_labels, k),
        ),
    }
    out["combined"] = combined(out)
    return Measured(out, new, cur)
