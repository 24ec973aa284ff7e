"""One personalization of v with visit-level differential privacy (``adaptation.privacy``).

The DP path of :func:`edge_node.personalization.run.run_adapt` (docs/privacy.md):

1. Group the stored clips into **visits**: the segmenter cuts one face track into clips of at
   most ``clips.max_s``; consecutive clips less than ``clips.gap_s`` apart are one track.
2. Per visit, its clips' Eq. 1 means into :func:`vfer.privacy.selection.select_visit_clips`
   (every decision reads one visit only, so the selection spends no epsilon of its own).
3. :func:`~vfer.privacy.accountant.plan_night` solves the noise; when the window's budget cannot
   hold tonight (``may_adapt``) the night is skipped, said in the log and in the result.
4. :func:`~vfer.privacy.dpsgd.finetune_v_dp` (per-visit clipping, Gaussian noise from the
   operating system's entropy), then the night goes into the ledger
   (:mod:`edge_node.personalization.ledger`) before anything reads the new head.
5. The guard and the safety gate then decide what the kiosk *displays*, as without privacy. They
   read clips outside the accounting, so they do not decide what is *sent*: the head may be
   submitted exactly when the budget counted tonight (``may_submit``, the report's ``submit``).
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path

import numpy as np

from edge_node.bundles import BundleHome
from edge_node.personalization import run
from edge_node.personalization.ledger import load_budget, night_number, record_night
from edge_node.personalization.params import AdaptParams
from edge_node.personalization.protocol import PrivacyRecord
from edge_node.personalization.run import AdaptResult, StoreClips
from edge_node.store import ClipStore
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.privacy.accountant import NightPlan, PrivacyBudget, plan_night
from vfer.privacy.options import PrivacyError, PrivacyOptions
from vfer.privacy.selection import VisitSelection, select_visit_clips
from vfer.selection import Selection

log = logging.getLogger(__name__)


def group_visits(starts: np.ndarray, ends: np.ndarray, gap_s: float) -> list[list[int]]:
    """Indices of clips (ordered by start) grouped into visits: a clip starting less than
    ``gap_s`` after the previous one ended continues its face track."""
    visits: list[list[int]] = []
    for i in range(len(starts)):
        if visits and starts[i] - ends[i - 1] < gap_s:
            visits[-1].append(i)
        else:
            visits.append([i])
    return visits


def adapt_private(
    store: ClipStore, bundle_path: Path, params: AdaptParams, night: str | None = None
) -> AdaptResult:
    """Personalize v with DP-SGD over visits; ``night`` (default: today) is the ledger's night."""
    assert params.privacy is not None
    t0 = time.perf_counter()
    options = params.privacy
    home = BundleHome(bundle_path)
    central = home.central()
    tonight = night_number(night or date.today().isoformat())
    budget = load_budget(store, options)
    source = StoreClips(store, params.teacher)
    ids, probs, visits = _visits(store, source, central.classes, params.gap_s)
    result = run._empty_result(central, len(ids))
    result.privacy = _record(budget, tonight).model_dump()
    sel = select_visit_clips(
        [probs[v] for v in visits], params.p_threshold, options.clips_per_visit
    )
    flat = _flat_selection(sel, visits, probs, params.p_threshold)
    run._count_selection(result, flat)
    plan, why = _plan(options, budget, tonight, sel, params)
    if plan is None:
        result.reason = why
        log.warning("privacy: not adapting tonight: %s", why)
        return run._done(result, t0)
    start = central.vfer_weights()
    tuned = _finetune(source, ids, visits, sel, start, plan, params, result)
    after, spent = record_night(store, budget, tonight, plan)
    record = _record(budget, tonight, plan, spent, result.privacy, after.may_submit(tonight))
    result.privacy = record.model_dump()
    # carried whatever the guard and the gate say of the display: what is sent is the budget's
    result.trainable = {n: tuned[n] for n in trainable_names(vfer_spec(central.num_classes))}
    night_run = run.Tuned(home, central, source, ids, probs, flat, start, tuned)
    done = f"fine-tuned with DP-SGD on {sel.count} visits ({sel.clip_count} clips)"
    return run.finish(night_run, result, params, night, t0, done)


def _visits(
    store: ClipStore, source: StoreClips, classes: tuple[str, ...], gap_s: float
) -> tuple[list[int], np.ndarray, list[list[int]]]:
    ids, probs = source.candidates(classes)
    times = {r.id: (r.started_at, r.ended_at) for r in store.clips() if r.classes == classes}
    starts = np.array([times[i][0] for i in ids])
    ends = np.array([times[i][1] for i in ids])
    return ids, probs, group_visits(starts, ends, gap_s)


def _flat_selection(
    sel: VisitSelection, visits: list[list[int]], probs: np.ndarray, threshold: float
) -> Selection:
    """The visit selection as clip indices into the night's clips (counts, the gate's held-back)."""
    k = probs.shape[1]
    idx = [np.asarray(visits[v], np.int64)[c] for v, c in zip(sel.visits, sel.clips, strict=True)]
    indices = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    labels = np.concatenate(sel.labels) if sel.labels else np.zeros(0, np.int64)
    passed: np.ndarray = (
        np.argmax(probs, axis=1)[probs.max(axis=1, initial=0) >= threshold]
        if len(probs)
        else np.zeros(0, np.int64)
    )
    return Selection(
        indices,
        labels,
        probs[indices].max(axis=1) if len(indices) else np.zeros(0),
        np.bincount(labels, minlength=k),
        np.bincount(np.asarray(passed, np.int64), minlength=k),
        sel.below_threshold,
    )


def _plan(
    options: PrivacyOptions,
    budget: PrivacyBudget,
    tonight: int,
    sel: VisitSelection,
    params: AdaptParams,
) -> tuple[NightPlan | None, str]:
    """Tonight's plan, or None and why not (no visit, delta too large, the window spent)."""
    if sel.count == 0:
        return None, "no visit has a clip above p_threshold"
    try:
        plan = plan_night(options, sel.count, params.batch_size, params.epochs)
    except PrivacyError as exc:
        return None, str(exc)
    if not budget.may_adapt(tonight, plan):
        spent = budget.spent(tonight)
        return None, (
            f"privacy budget spent: {spent:.3g} of epsilon_window {options.epsilon_window:g} "
            f"over the last {options.window_nights} nights, tonight would add "
            f"{plan.epsilon:.3g}; not adapting and not submitting until older nights leave "
            "the window"
        )
    return plan, ""


def _finetune(
    source: StoreClips,
    ids: list[int],
    visits: list[list[int]],
    sel: VisitSelection,
    start: dict[str, np.ndarray],
    plan: NightPlan,
    params: AdaptParams,
    result: AdaptResult,
) -> dict[str, np.ndarray]:
    """DP-SGD on the selected visits; the losses and the per-step evidence go in ``result``."""
    from vfer.privacy.dpsgd import finetune_v_dp

    clips = [
        [source.frame_embeddings(ids[visits[v][int(c)]]) for c in chosen]
        for v, chosen in zip(sel.visits, sel.clips, strict=True)
    ]
    dp = finetune_v_dp(start, clips, sel.labels, plan, lr=params.lr)
    result.loss_before, result.loss_after = dp.tuned.loss_before, dp.tuned.loss_after
    result.train_seconds = dp.tuned.train_s
    before = np.concatenate([r.norms_before for r in dp.records] or [np.zeros(0)])
    after = np.concatenate([r.norms_after for r in dp.records] or [np.zeros(0)])
    stds = [r.noise_std for r in dp.records]
    result.privacy = {
        **(result.privacy or {}),
        "gradients": len(before),
        "max_norm_before": float(before.max(initial=0.0)),
        "max_norm_after": float(after.max(initial=0.0)),
        "step_noise_std": [min(stds), max(stds)],
        "noise_drawn_std": float(np.mean([r.noise_sample_std for r in dp.records])),
    }
    return dp.tuned.weights


def _record(
    budget: PrivacyBudget,
    tonight: int,
    plan: NightPlan | None = None,
    spent: float | None = None,
    steps: dict[str, object] | None = None,
    submit: bool = False,
) -> PrivacyRecord:
    """The report's privacy record: the window as the accountant composes it, and the plan."""
    o = budget.options
    spent = budget.spent(tonight) if spent is None else spent
    planned: dict[str, object] = {}
    if plan is not None:
        planned = {
            "epsilon_night": plan.epsilon,
            "visits": plan.visits,
            "steps": plan.steps,
            "sampling_rate": plan.sampling_rate,
            "noise_multiplier": plan.noise_multiplier,
            "noise_std": plan.noise_std,
            "submit": submit,
        }
    return PrivacyRecord.model_validate(
        {
            **{k: v for k, v in (steps or {}).items() if k not in planned},
            "night": tonight,
            "epsilon_spent": spent,
            "epsilon_left": max(0.0, o.epsilon_window - spent),
            "epsilon_window": o.epsilon_window,
            "window_nights": o.window_nights,
            "delta": o.delta,
            "clip": o.clip,
            **planned,
        }
    )
