"""Pseudo-label selection that stays inside each visit, so that DP-SGD's guarantee covers it.

The paper's rule (:func:`vfer.selection.select_clips`) keeps the top P clips per class over the
whole night: adding one visit can push clips of *other* visits out of the top P, so two nights
that differ in one visit could train on sets that differ in many. Here every decision reads one
visit only: Eq. 1 and the threshold per clip (the same :func:`vfer.selection.pseudo_labels`), then
at most ``clips_per_visit`` of that visit's most confident clips. Adding or removing a visit adds
or removes exactly one training example (that visit's selected clips) and nothing else, which is
the adjacency the accountant assumes: the selection costs no epsilon of its own. What bounds the
night's work instead of P is Poisson sampling (``steps`` batches of about ``batch`` visits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vfer.selection import SelectionError, pseudo_labels


@dataclass(frozen=True)
class VisitSelection:
    visits: list[int]  # indices of the visits that kept at least one clip
    clips: list[np.ndarray]  # per kept visit: indices of its kept clips, most confident first
    labels: list[np.ndarray]  # per kept visit: their pseudo labels
    below_threshold: int  # clips dropped for low confidence, over all visits

    @property
    def count(self) -> int:
        """Kept visits: the DP fine-tune's examples."""
        return len(self.visits)

    @property
    def clip_count(self) -> int:
        return int(sum(len(c) for c in self.clips))


def select_visit_clips(
    visit_probs: Sequence[np.ndarray], p_threshold: float, clips_per_visit: int
) -> VisitSelection:
    """Per visit ((clips, K) mean probabilities, Eq. 1): clips at or above ``p_threshold``, at most
    ``clips_per_visit`` of them, the most confident first (ties: the earlier clip)."""
    if not 0.0 <= p_threshold <= 1.0:
        raise SelectionError(f"p_threshold must be in [0, 1], got {p_threshold}")
    if clips_per_visit < 1:
        raise SelectionError(f"clips_per_visit must be >= 1, got {clips_per_visit}")
    kept_visits: list[int] = []
    kept_clips: list[np.ndarray] = []
    kept_labels: list[np.ndarray] = []
    dropped = 0
    for v, probs in enumerate(visit_probs):
        try:
            labels, conf = pseudo_labels(np.asarray(probs))
        except SelectionError as exc:
            raise SelectionError(f"visit {v}: {exc}") from None
        passed = np.flatnonzero(conf >= p_threshold)
        dropped += len(conf) - len(passed)
        order = passed[np.lexsort((passed, -conf[passed]))][:clips_per_visit]
        if len(order):
            kept_visits.append(v)
            kept_clips.append(order.astype(np.int64))
            kept_labels.append(labels[order].astype(np.int64))
    return VisitSelection(kept_visits, kept_clips, kept_labels, dropped)
