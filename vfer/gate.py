"""The safety gate: should a freshly personalized v become active? Pure: arrays in, a verdict out.

A node has no labels, so the gate judges the new head only on what the node has without them:

* **coverage**: the selected pseudo labels cover at least ``min_classes`` classes. Two epochs
  on clips of a single class teach v that class (the failure measured in docs/simulation.md).
* **collapse**: on held-back clips (stored clips the fine-tune did not use) the new v's predicted
  classes must stay spread. The normalized entropy of its predicted-class histogram must not fall
  below ``min_entropy_ratio`` times the central v's on the same clips, and no class may take more
  than ``max_class_share`` of the predictions unless the central v already gave it that much.
* **agreement**: on those held-back clips, the new v must agree with the teacher's pseudo labels
  (Eq. 1 on the same clips) at least as often as the central v does, less ``agreement_tolerance``.

With fewer than ``min_holdout`` held-back clips neither collapse nor agreement can be told from
noise: both are skipped, and the verdict says so (coverage still holds).

The same function runs on the node (``edge_node.personalization.run``) and in the lab's ``within`` experiment,
which measures how often the gate blocks a head that would have lowered F1 and how often one that
would have raised it (docs/personalization.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


class GateError(ValueError):
    """Inputs of inconsistent shapes or values."""


@dataclass(frozen=True)
class GateOptions:
    min_classes: int = 2
    min_holdout: int = 6
    agreement_tolerance: float = 0.0
    min_entropy_ratio: float = 0.5
    max_class_share: float = 0.9
    #: block when this label-free signal (:data:`vfer.gate_signals.SIGNALS`) is above
    #: ``max_signal`` on the held-back clips; None: the signals are only recorded
    signal: str | None = None
    max_signal: float = 0.0

    def __post_init__(self) -> None:
        if self.min_classes < 1:
            raise GateError(f"min_classes must be >= 1, got {self.min_classes}")
        if self.min_holdout < 1:
            raise GateError(f"min_holdout must be >= 1, got {self.min_holdout}")
        from vfer.gate_signals import SIGNALS

        if self.signal is not None and self.signal not in SIGNALS:
            raise GateError(f"signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")
        if not (np.isfinite(self.max_signal) and -1.0 <= self.max_signal <= 1.0):
            raise GateError(f"max_signal must be in [-1, 1], got {self.max_signal}")
        for name in ("agreement_tolerance", "min_entropy_ratio", "max_class_share"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise GateError(f"{name} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...]  # why it failed (empty when it passed)
    notes: tuple[str, ...]  # checks skipped and why
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        head = "passed" if self.passed else ", ".join(self.reasons)
        return head + (f" ({'; '.join(self.notes)})" if self.notes else "")


def normalized_entropy(labels: np.ndarray, k: int) -> float:
    """Entropy of the histogram of ``labels`` over ``k`` classes, divided by log(k): 0..1."""
    if len(labels) == 0:
        return 0.0
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(k))


def decide(
    selected_per_class: Sequence[int] | np.ndarray,
    new_probs: np.ndarray,
    central_probs: np.ndarray,
    teacher_labels: np.ndarray,
    options: GateOptions | None = None,
    signals: Mapping[str, float] | None = None,
) -> GateVerdict:
    """Judge a personalized v.

    ``selected_per_class``: (K,) clips selected per class for the fine-tune. ``new_probs`` and
    ``central_probs``: (N, K) clip probabilities of the new and the central v on N held-back clips;
    ``teacher_labels``: (N,) the teacher's pseudo labels of those clips; ``signals``: the
    label-free signals of :func:`vfer.gate_signals.measure` on the same clips (recorded as
    ``signal_<name>``; ``options.signal`` blocks on one of them).
    """
    opt = options or GateOptions()
    sel, new, central, teacher = _checked(
        selected_per_class, new_probs, central_probs, teacher_labels
    )
    k = new.shape[1]
    reasons: list[str] = []
    notes: list[str] = []
    covered = int((sel > 0).sum())
    metrics: dict[str, float] = {"classes_selected": float(covered), "holdout": float(len(teacher))}
    if covered < opt.min_classes:
        reasons.append("single_class_selection" if covered <= 1 else "too_few_classes_selected")
    if len(teacher) < opt.min_holdout:
        notes.append(
            f"only {len(teacher)} held-back clips (< {opt.min_holdout}): collapse and agreement "
            "not checked"
        )
        return GateVerdict(not reasons, tuple(reasons), tuple(notes), metrics)
    new_pred, central_pred = new.argmax(axis=1), central.argmax(axis=1)
    if _collapsed(new_pred, central_pred, k, opt, metrics):
        reasons.append("collapsed")
    agree_new = float((new_pred == teacher).mean())
    agree_central = float((central_pred == teacher).mean())
    metrics |= {"agreement_new": agree_new, "agreement_central": agree_central}
    if agree_new < agree_central - opt.agreement_tolerance:
        reasons.append("less_teacher_agreement")
    known = {k: float(v) for k, v in (signals or {}).items() if np.isfinite(v)}
    metrics |= {f"signal_{k}": v for k, v in known.items()}
    if opt.signal is not None and known.get(opt.signal, -np.inf) > opt.max_signal:
        reasons.append(f"signal_{opt.signal}")
    return GateVerdict(not reasons, tuple(reasons), tuple(notes), metrics)


def _checked(
    selected_per_class: Sequence[int] | np.ndarray,
    new_probs: np.ndarray,
    central_probs: np.ndarray,
    teacher_labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The inputs as arrays of agreeing shapes, or :class:`GateError`."""
    sel = np.asarray(selected_per_class, dtype=np.int64)
    new = _probs(new_probs, "new_probs")
    central = _probs(central_probs, "central_probs")
    teacher = np.asarray(teacher_labels, dtype=np.int64).reshape(-1)
    k = new.shape[1]
    if sel.shape != (k,) or (sel < 0).any():
        raise GateError(f"selected_per_class must be {k} counts >= 0, got {sel.tolist()}")
    if central.shape != new.shape or teacher.shape != (new.shape[0],):
        raise GateError(
            f"held-back shapes disagree: new {new.shape}, central {central.shape}, "
            f"teacher {teacher.shape}"
        )
    if teacher.size and (teacher.min() < 0 or teacher.max() >= k):
        raise GateError(f"teacher labels must lie in [0, {k})")
    return sel, new, central, teacher


def _collapsed(
    new_pred: np.ndarray,
    central_pred: np.ndarray,
    k: int,
    opt: GateOptions,
    metrics: dict[str, float],
) -> bool:
    """The new v's predictions are much less spread than the central v's (metrics noted)."""
    h_new, h_central = normalized_entropy(new_pred, k), normalized_entropy(central_pred, k)
    share_new = np.bincount(new_pred, minlength=k) / len(new_pred)
    share_central = np.bincount(central_pred, minlength=k) / len(central_pred)
    top = int(share_new.argmax())
    metrics |= {
        "entropy_new": h_new,
        "entropy_central": h_central,
        "top_share": float(share_new[top]),
    }
    return bool(
        h_new < opt.min_entropy_ratio * h_central
        or (share_new[top] > opt.max_class_share and share_central[top] <= opt.max_class_share)
    )


def _probs(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise GateError(f"{name} must be (N, K>=2), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise GateError(f"{name} contains NaN or Inf")
    return arr
