"""Pseudo-label selection for personalization (the paper's Sec. 3.3, Eq. 1). Pure: arrays in, indices out.

A clip's pseudo label is the argmax of the mean of its per-frame IFER probabilities; its confidence
is that mean probability. Clips under ``p_threshold`` are dropped; of the rest, at most ``p`` per
class are kept, the most confident first. The edge node's nightly adaptation and the training
experiments both call :func:`select_clips`, so the rule exists once.

One option beside the paper's rule (``balance``): class-balanced selection with a floor, where no
class keeps more than ``balance`` times the clips of the smallest class kept (its most confident
ones), so one easy class cannot fill the fine-tune on its own.

Ties are broken deterministically: between classes, the lower class index wins (``np.argmax``);
between clips of equal confidence, the earlier clip wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class SelectionError(ValueError):
    """Inputs that cannot be a table of class probabilities or valid selection parameters."""


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # selected clip indices, grouped by class, most confident first
    labels: np.ndarray  # pseudo label of each selected clip
    confidence: np.ndarray  # its confidence
    per_class: np.ndarray  # (K,) how many were selected per class
    candidates_per_class: np.ndarray  # (K,) how many passed the threshold per class
    below_threshold: int  # how many clips were dropped for low confidence

    @property
    def count(self) -> int:
        return len(self.indices)


def clip_mean_probs(frame_probs: np.ndarray) -> np.ndarray:
    """Eq. 1 for one clip: the mean of its (frames, K) per-frame probabilities, shape (K,),
    in the input's dtype (the one place the node and the lab compute it)."""
    return np.asarray(frame_probs).mean(axis=0)


def mean_frame_probs(frame_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Eq. 1 for many clips: each clip's mean per-frame probability vector, stacked to (N, K)."""
    if not frame_probs:
        raise SelectionError("no clips")
    means = []
    for i, fp in enumerate(frame_probs):
        arr = np.asarray(fp, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise SelectionError(
                f"clip {i}: expected (frames, K) probabilities, got shape {arr.shape}"
            )
        means.append(clip_mean_probs(arr))
    widths = {m.shape[0] for m in means}
    if len(widths) != 1:
        raise SelectionError(f"clips disagree on K: {sorted(widths)}")
    return np.stack(means)


def pseudo_labels(mean_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, confidence) of each clip from its mean probabilities."""
    probs = _check_probs(mean_probs)
    labels = np.argmax(probs, axis=1)
    return labels, probs[np.arange(len(probs)), labels]


def select_clips(
    mean_probs: np.ndarray, p: int, p_threshold: float, balance: float | None = None
) -> Selection:
    """At most ``p`` clips per class with confidence >= ``p_threshold``, the most confident first.

    With ``balance`` (>= 1), each class then keeps at most ``floor(balance * n_min)`` of them,
    where ``n_min`` is the count of the smallest class that kept any.
    """
    if p < 0:
        raise SelectionError(f"P must be >= 0, got {p}")
    if not 0.0 <= p_threshold <= 1.0:
        raise SelectionError(f"p_threshold must be in [0, 1], got {p_threshold}")
    if balance is not None and not (np.isfinite(balance) and 1.0 <= balance <= 100.0):
        raise SelectionError(f"balance must be in [1, 100], got {balance}")
    probs = _check_probs(mean_probs)
    k = probs.shape[1]
    labels, confidence = pseudo_labels(probs)
    passed = confidence >= p_threshold
    candidates = np.bincount(labels[passed], minlength=k).astype(np.int64)
    kept: list[np.ndarray] = []
    for c in range(k):
        idx = np.flatnonzero(passed & (labels == c))
        order = idx[np.lexsort((idx, -confidence[idx]))]  # confidence desc, then index asc
        kept.append(order[:p])
    sizes = [len(keep) for keep in kept if len(keep)]
    if balance is not None and sizes:
        cap = int(np.floor(balance * min(sizes) + 1e-9))
        kept = [keep[:cap] for keep in kept]
    per_class = np.array([len(keep) for keep in kept], dtype=np.int64)
    chosen = [int(i) for keep in kept for i in keep]
    indices = np.asarray(chosen, dtype=np.int64)
    return Selection(
        indices=indices,
        labels=labels[indices],
        confidence=confidence[indices],
        per_class=per_class,
        candidates_per_class=candidates,
        below_threshold=int((~passed).sum()),
    )


def _check_probs(mean_probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(mean_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise SelectionError(f"expected an (N, K) probability table, got shape {probs.shape}")
    if probs.shape[1] < 2:
        raise SelectionError(f"need at least 2 classes, got K={probs.shape[1]}")
    if not np.all(np.isfinite(probs)):
        raise SelectionError("probabilities contain NaN or Inf")
    if probs.size and (probs.min() < 0 or probs.max() > 1 + 1e-6):
        raise SelectionError("probabilities must lie in [0, 1]")
    return probs
