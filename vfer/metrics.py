"""Precision, recall and F1 per class, micro and macro, exactly as scikit-learn computes them.

Per class and ``macro`` are over the full label set 0..K-1 (sklearn's ``labels=range(K)``) with
``zero_division=0``: a class with no prediction has precision 0, a class with no sample has
recall 0, and both still count in the macro average. A scored set that lacks a class (one
person's clips, the London set's two expressions) is thereby pulled down by a class it could
never show, so every report also gives ``macro_present``: the macro average over the classes
*present* in the scored set (support > 0; sklearn's ``labels=np.unique(y_true)``), and names
which one it prints (:func:`macro_f1_text`). Pure numpy; tests compare against sklearn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D and equally long, got {t.shape} and {p.shape}"
        )
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"labels must be in 0..{k - 1}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return _safe_div(2 * precision * recall, precision + recall)


def scores(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class, macro and micro precision / recall / F1, plus support and accuracy."""
    k = len(classes)
    cm = confusion(y_true, y_pred, k).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _f1(precision, recall)
    present = support > 0
    micro_p = float(_safe_div(tp.sum(keepdims=True), predicted.sum(keepdims=True))[0])
    micro_r = float(_safe_div(tp.sum(keepdims=True), support.sum(keepdims=True))[0])
    micro_f1 = float(_f1(np.array([micro_p]), np.array([micro_r]))[0])
    return {
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "macro": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
        },
        "macro_present": {
            "precision": _mean(precision[present]),
            "recall": _mean(recall[present]),
            "f1": _mean(f1[present]),
            "classes": int(present.sum()),
        },
        "micro": {"precision": micro_p, "recall": micro_r, "f1": micro_f1},
        "accuracy": float(tp.sum() / cm.sum()) if cm.sum() else 0.0,
        "n": int(cm.sum()),
        "confusion": cm.astype(int).tolist(),
    }


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def macro_f1_text(s: dict[str, Any]) -> str:
    """Both conventions, named: ``macro-F1 0.553 over all 4 classes, 0.737 over the 3 present``."""
    k = len(s["per_class"])
    present = s.get("macro_present")
    if present is None:
        return f"macro-F1 {s['macro']['f1']:.3f} over all {k} classes"
    if present["classes"] == k:
        return f"macro-F1 {s['macro']['f1']:.3f} (all {k} classes present)"
    return (
        f"macro-F1 {s['macro']['f1']:.3f} over all {k} classes, "
        f"{present['f1']:.3f} over the {present['classes']} present"
    )
