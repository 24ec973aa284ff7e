"""The gate's candidate signals (:mod:`vfer.gate_signals`) on one personalized head, and how well
each predicts what the head really did (``--gate-signals``; docs/personalization.md).

:func:`measure` computes every signal from the held-back clips only (the adaptation clips the
selection did not keep; never a true label). :func:`evaluate` scores the signals against the true
micro-F1 change of the runs: AUC for "this head lowers F1", and the gate each signal makes with a
threshold chosen on the development seeds and scored on the held-out ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vfer import gate_signals as gs
from vfer.gate_signals import measure

__all__ = ["auc", "best_threshold", "evaluate", "gate_outcome", "measure"]

#: A head "lowers" or "raises" F1 when its change is beyond this (the issue's goals).
MARGIN = 0.02


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (ties count half); NaN if one
    class is empty (Mann-Whitney U / (n_pos n_neg))."""
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def gate_outcome(values: np.ndarray, changes: np.ndarray, threshold: float) -> dict[str, float]:
    """Enforcing "block when the signal is above ``threshold``" (an unknown value passes)."""
    blocked = np.nan_to_num(values, nan=-np.inf) > threshold
    kept = np.where(blocked, 0.0, changes)
    losing, gaining = changes < -MARGIN, changes > MARGIN
    return {
        "threshold": float(threshold),
        "blocked": int(blocked.sum()),
        "mean_gain": float(kept.mean()) if len(kept) else 0.0,
        "stops_losing": float(blocked[losing].mean()) if losing.any() else float("nan"),
        "passes_gaining": float((~blocked[gaining]).mean()) if gaining.any() else float("nan"),
    }


def best_threshold(values: np.ndarray, changes: np.ndarray) -> float:
    """The threshold with the highest mean gain on these runs (the development seeds)."""
    finite = np.unique(values[np.isfinite(values)])
    candidates = [np.inf, *((finite[1:] + finite[:-1]) / 2), *finite]  # ties: a midpoint
    return float(max(candidates, key=lambda t: gate_outcome(values, changes, t)["mean_gain"]))


def evaluate(rows: Sequence[Mapping[str, Any]], dev_seeds: set[int]) -> dict[str, Any]:
    """Per signal: AUC on the held-out runs, and the gate with its threshold from the dev runs."""
    judged = [r for r in rows if r.get("signals") and r.get("personalized")]
    dev = [r for r in judged if r["seed"] in dev_seeds]
    test = [r for r in judged if r["seed"] not in dev_seeds]
    dc, tc = _changes(dev), _changes(test)
    out: dict[str, Any] = {
        "runs": {"dev": len(dev), "held_out": len(test)},
        "held_out_losing": int((tc < -MARGIN).sum()),
        "held_out_gaining": int((tc > MARGIN).sum()),
        "always_install": float(tc.mean()) if len(tc) else 0.0,
        "never_install": 0.0,
        "signals": {},
    }
    for name in gs.SIGNALS:
        dv, tv = _values(dev, name), _values(test, name)
        t = best_threshold(dv, dc)
        out["signals"][name] = {
            "auc_dev": auc(np.nan_to_num(dv, nan=0.0), dc < 0),
            "auc_held_out": auc(np.nan_to_num(tv, nan=0.0), tc < 0),
            "gate_held_out": gate_outcome(tv, tc, t),
            "gate_at_zero_held_out": gate_outcome(tv, tc, 0.0),
        }
    return out


def _changes(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.array([r["micro_f1_change"] for r in rows], float)


def _values(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    return np.array([r["signals"].get(name, np.nan) for r in rows], float)
