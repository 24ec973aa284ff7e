"""One personalization of v on the node (the paper's Sec. 3.3), run in the adaptation child.

1. Pseudo-label every stored clip with the mean of its per-frame probabilities (Eq. 1,
   :func:`vfer.selection.clip_mean_probs`) and select at most P per class above p_threshold
   (:func:`vfer.selection.select_clips`).
2. Fine-tune v from the *central* v on the selected clips' cached embeddings (no backbone).
3. Guard: NaN, or a worse fit to the pseudo labels than the central v: keep the central head.
   Then the safety gate (:mod:`vfer.gate`) on the clips the fine-tune did not use.
4. Write the new head version (:func:`edge_node.personalization.heads.write_head`) and switch to
   it atomically (:mod:`edge_node.bundles`).

The new bundle's manifest notes carry what federation needs: the clips used per class and the
central version it started from. The node keeps displaying with this personalized head.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_node.bundles import BundleHome
from edge_node.personalization.heads import write_head
from edge_node.personalization.params import AdaptParams
from edge_node.personalization.protocol import AdaptReport, GateRecord, PrivacyRecord, Status
from edge_node.schedule import night_of
from edge_node.store import ClipStore
from vfer.bundle import VFER_STEP, Bundle, now_iso
from vfer.cli import UserError
from vfer.gate import GateOptions, GateVerdict, decide
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.selection import Selection, clip_mean_probs, select_clips

log = logging.getLogger(__name__)

#: Held-back clips the gate scores (the newest ones), bounding its cost on a full database.
MAX_HOLDOUT = 200


class ClipSource(Protocol):
    """What adaptation needs from the clip store (:class:`StoreClips` provides it)."""

    def candidates(self, classes: tuple[str, ...]) -> tuple[list[int], np.ndarray]:
        """Ids and (N, K) mean probabilities (Eq. 1) of the clips recorded with these classes."""
        ...

    def frame_embeddings(self, clip_id: int) -> np.ndarray: ...


class StoreClips:
    """The clip store as adaptation's :class:`ClipSource`."""

    def __init__(self, store: ClipStore, teacher: str = "g") -> None:
        self.store = store
        self.teacher = teacher  # adaptation.teacher: g | external | ensemble

    def candidates(self, classes: tuple[str, ...]) -> tuple[list[int], np.ndarray]:
        rows = [r for r in self.store.clips() if r.classes == classes]
        if not rows:
            return [], np.zeros((0, len(classes)), np.float32)
        if self.teacher == "g":
            return [r.id for r in rows], np.stack([r.ifer_mean for r in rows])
        return [r.id for r in rows], np.stack([self._mean(r.id) for r in rows])

    def _mean(self, clip_id: int) -> np.ndarray:
        """Eq. 1 over the configured teacher's per-frame probabilities (g's where none stored)."""
        from edge_node.display import pseudo_probs

        g = self.store.frame_ifer(clip_id)
        return clip_mean_probs(pseudo_probs(self.teacher, g, self.store.frame_teacher(clip_id)))  # type: ignore[arg-type]

    def frame_embeddings(self, clip_id: int) -> np.ndarray:
        return self.store.frame_embeddings(clip_id)


@dataclass
class AdaptResult:
    status: Status
    reason: str
    classes: tuple[str, ...]
    selected_per_class: dict[str, int]
    candidates_per_class: dict[str, int]
    below_threshold: int
    clips_total: int
    base_version: str
    base_round: int
    new_version: str | None = None
    loss_before: float | None = None
    loss_after: float | None = None
    step_changed: bool = False
    train_seconds: float = 0.0  # the fine-tuning epochs alone
    seconds: float = 0.0
    gate: dict[str, object] = field(default_factory=dict)  # the safety gate's verdict
    privacy: dict[str, object] | None = None  # adaptation.privacy's night (PrivacyRecord)
    trainable: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "trainable"}
        out["classes"] = list(self.classes)
        return out

    def report(self, weights_file: str | None = None) -> AdaptReport:
        """This result as the child's typed report (the weights travel in ``weights_file``)."""
        data = self.summary()
        data["gate"] = GateRecord.model_validate(self.gate) if self.gate else None
        data["privacy"] = PrivacyRecord.model_validate(self.privacy) if self.privacy else None
        return AdaptReport.model_validate({**data, "weights_file": weights_file})

    @classmethod
    def from_report(
        cls, report: AdaptReport, trainable: dict[str, np.ndarray] | None = None
    ) -> AdaptResult:
        data = report.model_dump(exclude={"protocol", "weights_file", "gate"})
        data["classes"] = tuple(report.classes)
        gate = report.gate.model_dump() if report.gate is not None else {}
        return cls(**data, gate=gate, trainable=dict(trainable or {}))


def adapt(
    source: ClipSource, bundle_path: Path, params: AdaptParams, night: str | None = None
) -> AdaptResult:
    """Run one personalization against ``bundle_path`` (a bundle folder or the node's managed
    link); ``night``: the night it counts for, marked done with the switch to the new head."""
    t0 = time.perf_counter()
    home = BundleHome(bundle_path)
    central = home.central()
    ids, probs = source.candidates(central.classes)
    result = _empty_result(central, len(ids))
    if not ids:
        result.reason = "no stored clips recorded with these classes"
        return _done(result, t0)
    sel = select_clips(probs, params.p, params.p_threshold, params.balance or None)
    _count_selection(result, sel)
    if sel.count < params.min_clips:
        result.reason = (
            f"only {sel.count} clips pass the rule (minimum {params.min_clips}); not adapting"
        )
        return _done(result, t0)
    start = central.vfer_weights()
    tuned = _finetune(source, ids, sel, start, params, result)
    night_run = Tuned(home, central, source, ids, probs, sel, start, tuned)
    return finish(night_run, result, params, night, t0, f"fine-tuned on {sel.count} clips")


@dataclass(frozen=True)
class Tuned:
    """A fine-tune that ran, and what the guard and the gate need to judge it."""

    home: BundleHome
    central: Bundle
    source: ClipSource
    ids: list[int]
    probs: np.ndarray
    sel: Selection  # the clips it trained on (indices into ``ids``)
    start: dict[str, np.ndarray]  # the central v
    weights: dict[str, np.ndarray]  # the tuned v


def finish(
    t: Tuned, result: AdaptResult, params: AdaptParams, night: str | None, t0: float, done: str
) -> AdaptResult:
    """The guard, then the safety gate; a head that passes becomes the active one."""
    home, central, tuned = t.home, t.central, t.weights
    why = _guard(tuned, result)
    if why is not None:
        return _keep_central(result, home, central, "rejected", why, t0)
    if params.gate is not None:
        verdict = _gate(t.source, t.ids, t.probs, t.sel, t.start, tuned, params.gate)
        result.gate = GateRecord(
            passed=verdict.passed,
            reasons=list(verdict.reasons),
            notes=list(verdict.notes),
            metrics=verdict.metrics,
        ).model_dump()
        if not verdict.passed:
            if params.gate_enforce:
                why = f"safety gate: {verdict.summary()}"
                return _keep_central(result, home, central, "blocked", why, t0)
            log.warning(
                "the safety gate would block this head (report only): %s", verdict.summary()
            )
    result.trainable = {n: tuned[n] for n in trainable_names(vfer_spec(central.num_classes))}
    _switch_to_personalized(home, central, tuned, result, night)
    result.reason = done
    return _done(result, t0)


def _empty_result(central: Bundle, clips: int) -> AdaptResult:
    classes = central.classes
    return AdaptResult(
        status="skipped",
        reason="",
        classes=classes,
        selected_per_class={c: 0 for c in classes},
        candidates_per_class={c: 0 for c in classes},
        below_threshold=0,
        clips_total=clips,
        base_version=central.manifest.head_version,
        base_round=central.manifest.federation_round,
    )


def _count_selection(result: AdaptResult, sel: Selection) -> None:
    classes = result.classes
    result.selected_per_class = {c: int(n) for c, n in zip(classes, sel.per_class, strict=True)}
    result.candidates_per_class = {
        c: int(n) for c, n in zip(classes, sel.candidates_per_class, strict=True)
    }
    result.below_threshold = sel.below_threshold


def _finetune(
    source: ClipSource,
    ids: list[int],
    sel: Selection,
    start: dict[str, np.ndarray],
    params: AdaptParams,
    result: AdaptResult,
) -> dict[str, np.ndarray]:
    """Fine-tune v from the central v on the selected clips only; the losses go in ``result``."""
    from vfer.personalize import finetune_v

    clips = [source.frame_embeddings(ids[int(i)]) for i in sel.indices]
    tuned = finetune_v(
        start,
        clips,
        sel.labels,
        epochs=params.epochs,
        lr=params.lr,
        batch_size=params.batch_size,
        seed=params.seed,
        l2sp=params.l2sp,
    )
    result.loss_before, result.loss_after = tuned.loss_before, tuned.loss_after
    result.train_seconds = tuned.train_s
    return tuned.weights


def _guard(tuned: dict[str, np.ndarray], result: AdaptResult) -> str | None:
    """Why the fine-tuned head must not be used (NaN, or a worse fit), or None."""
    before, after = result.loss_before or 0.0, result.loss_after
    if (
        after is None
        or not np.isfinite(after)
        or not all(np.isfinite(a).all() for a in tuned.values())
    ):
        return "the fine-tuned head produced NaN or Inf"
    if after > before:
        return f"the fine-tuned head fits the pseudo labels worse (loss {after:.4f} > {before:.4f})"
    return None


def _gate(
    source: ClipSource,
    ids: list[int],
    probs: np.ndarray,
    sel: Selection,
    central: dict[str, np.ndarray],
    tuned: dict[str, np.ndarray],
    options: GateOptions,
) -> GateVerdict:
    """The safety gate on the clips the fine-tune did not use (at most MAX_HOLDOUT, newest),
    with the label-free signals of :func:`vfer.gate_signals.measure` recorded beside it."""
    from vfer.gate_signals import measure_heads

    used = {int(i) for i in sel.indices}
    held = [i for i in range(len(ids)) if i not in used][-MAX_HOLDOUT:]
    clips = [source.frame_embeddings(ids[i]) for i in held]
    teacher = np.argmax(probs[held], axis=1) if held else np.zeros(0, dtype=np.int64)
    chosen = [source.frame_embeddings(ids[int(i)]) for i in sel.indices]
    m = measure_heads(
        tuned, central, clips, teacher, chosen, np.asarray(sel.labels), seed=0, k=probs.shape[1]
    )
    return decide(sel.per_class, m.tuned, m.start, teacher, options, m.signals)


def _switch_to_personalized(
    home: BundleHome,
    central: Bundle,
    weights: dict[str, np.ndarray],
    result: AdaptResult,
    night: str | None,
) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    version = f"local-{stamp}-{os.urandom(3).hex()}"
    write_head(
        home,
        central,
        weights,
        name=version,
        personalized=True,
        federation_round=central.manifest.federation_round,
        notes={
            "clips_per_class": json.dumps(result.selected_per_class),
            "base_version": central.manifest.head_version,
            "base_round": str(central.manifest.federation_round),
            "adapted_at": now_iso(),
            "loss_before": f"{result.loss_before:.6f}",
            "loss_after": f"{result.loss_after:.6f}",
        },
    )
    old_step = home.active().file(VFER_STEP).read_bytes()
    home.switch_to(version, night_done=night)
    result.new_version, result.status = version, "adapted"
    result.step_changed = home.active().file(VFER_STEP).read_bytes() != old_step


def _keep_central(
    result: AdaptResult, home: BundleHome, central: Bundle, status: Status, why: str, t0: float
) -> AdaptResult:
    """Rejected (NaN, worse fit) or blocked (the gate): the central head stays active and
    nothing is submitted."""
    if status == "blocked":
        log.warning("personalized head blocked, keeping the central head: %s", why)
    else:
        log.warning("personalization rejected, keeping the central head: %s", why)
    result.status, result.reason = status, why
    if home.active().bundle_id != central.bundle_id:
        home.ensure_managed()
        home.switch_to(central.path.name)
    return _done(result, t0)


def _done(result: AdaptResult, t0: float) -> AdaptResult:
    result.seconds = time.perf_counter() - t0
    log.info("adaptation %s: %s (%.1f s)", result.status, result.reason, result.seconds)
    return result


def run_adapt(db: Path, bundle: Path, params: AdaptParams, night: str | None = None) -> AdaptResult:
    """One personalization from the clip database; with ``night``, that night is marked done
    unless it skipped (an adapted head and its night in one write)."""
    if not db.is_file():
        raise UserError(
            f"{db}: no such database (record clips with `python -m edge_node run` or `ingest` first)"
        )
    with ClipStore(db) as store:
        if params.privacy is not None:
            from edge_node.personalization.private import adapt_private

            result = adapt_private(store, bundle, params, night)
        else:
            result = adapt(StoreClips(store, params.teacher), bundle, params, night)
    # a private night the budget (or delta) refused stays refused: not retried every few seconds
    done = (
        ("rejected", "blocked", "skipped")
        if params.privacy is not None
        else ("rejected", "blocked")
    )
    if night is not None and result.status in done:
        BundleHome(bundle).mark_night_done(night)
    return result


def nightly_adapt(
    db: Path, bundle: Path, params: AdaptParams, window_start: str, now: datetime
) -> AdaptResult | None:
    """Adapt once per night: None when tonight's adaptation already ran (node or timer)."""
    home = BundleHome(bundle)
    home.adopt_legacy_memo(db)
    night = night_of(now, window_start)
    if home.night_done() == night:
        return None
    return run_adapt(db, bundle, params, night)
