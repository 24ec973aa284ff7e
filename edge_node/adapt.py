"""Overnight personalization of v on the node (the paper's Sec. 3.3), run once.

1. Pseudo-label every stored clip with the mean of its per-frame IFER probabilities (Eq. 1) and
   select at most P per class above p_threshold (:func:`vfer.selection.select_clips`).
2. Fine-tune v from the *central* v on the selected clips' cached embeddings (no backbone).
3. Guard: NaN, or a worse fit to the pseudo labels than the central v: keep the central head.
4. Write the new bundle version (new ``vfer_step.tflite`` and v weights, everything else copied
   from the central bundle) and switch to it atomically (:mod:`edge_node.bundles`).

The new bundle's manifest notes carry what federation needs: the clips used per class and the
central version it started from. The node keeps displaying with this personalized head.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from edge_node.bundles import BundleHome
from vfer import weights as wio
from vfer.bundle import (
    VFER_STEP,
    VFER_WEIGHTS,
    Bundle,
    now_iso,
)
from vfer.gate import GateOptions, GateVerdict, decide
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.selection import Selection, select_clips

if TYPE_CHECKING:
    from edge_node.config import AdaptationConfig

log = logging.getLogger(__name__)

#: Held-back clips the gate scores (the newest ones), bounding its cost on a full database.
MAX_HOLDOUT = 200


@dataclass(frozen=True)
class AdaptParams:
    p: int = 15
    p_threshold: float = 0.5
    epochs: int = 2
    lr: float = 1e-3
    min_clips: int = 4
    batch_size: int = 8
    seed: int = 0
    #: whose per-frame probabilities Eq. 1 averages: g, the external teacher, or their mean
    teacher: str = "g"
    #: class-balanced selection: no class keeps more than this times the smallest (0: the paper)
    balance: float = 0.0
    #: L2 pull towards the central v while fine-tuning (0: the paper's plain cross-entropy)
    l2sp: float = 0.0
    #: the safety gate's thresholds; None turns the gate off (the paper's plain rule)
    gate: GateOptions | None = field(default_factory=GateOptions)
    #: False: the gate's verdict is only recorded (``adaptation.gate: report``)
    gate_enforce: bool = True

    @classmethod
    def build(
        cls, config: AdaptationConfig, round_settings: Any = None, **overrides: Any
    ) -> AdaptParams:
        """The one place parameters come from: node.yaml's ``adaptation``, then the federation
        round's personalization settings (P, threshold, epochs, lr), then explicit overrides
        (the command line's flags; ``None`` means not given)."""
        values: dict[str, Any] = {
            "p": config.p,
            "p_threshold": config.p_threshold,
            "epochs": config.epochs,
            "lr": config.lr,
            "min_clips": config.min_clips,
            "teacher": config.teacher,
            "balance": config.balance_ratio if config.selection == "balanced" else 0.0,
            "l2sp": config.l2sp,
        }
        if round_settings is not None:
            for name in ("p", "p_threshold", "epochs", "lr"):
                values[name] = getattr(round_settings, name)
        values["gate"] = (
            GateOptions(
                min_classes=config.gate_min_classes,
                min_holdout=config.gate_min_holdout,
                agreement_tolerance=config.gate_agreement_tolerance,
                min_entropy_ratio=config.gate_min_entropy_ratio,
                max_class_share=config.gate_max_class_share,
            )
            if config.gate != "off"
            else None
        )
        values["gate_enforce"] = config.gate == "enforce"
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def cli_args(self) -> list[str]:
        """The same parameters as ``python -m edge_node adapt`` flags (the child process)."""
        return [
            "--p", str(self.p), "--p-threshold", repr(self.p_threshold),
            "--epochs", str(self.epochs), "--lr", repr(self.lr),
            "--min-clips", str(self.min_clips), "--teacher", self.teacher,
            "--balance", repr(self.balance),
            "--l2sp", repr(self.l2sp),
            "--gate", json.dumps(asdict(self.gate)) if self.gate is not None else "off",
            *([] if self.gate_enforce else ["--gate-report"]),
        ]  # fmt: skip


class ClipSource(Protocol):
    """What adaptation needs from the clip store (``edge_node.store.ClipStore`` provides it)."""

    def candidates(self, classes: tuple[str, ...]) -> tuple[list[int], np.ndarray]:
        """Ids and (N, K) mean IFER probabilities of the clips recorded with these classes."""
        ...

    def frame_embeddings(self, clip_id: int) -> np.ndarray: ...


@dataclass
class AdaptResult:
    status: Literal["adapted", "skipped", "rejected", "blocked"]
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
    trainable: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "trainable"}
        out["classes"] = list(self.classes)
        return out


def adapt(source: ClipSource, bundle_path: Path, params: AdaptParams) -> AdaptResult:
    """Run one personalization against ``bundle_path`` (a bundle folder or the node's managed link)."""
    t0 = time.perf_counter()
    home = BundleHome(bundle_path)
    central = home.central()
    classes = central.classes
    ids, probs = source.candidates(classes)
    result = AdaptResult(
        status="skipped",
        reason="",
        classes=classes,
        selected_per_class={c: 0 for c in classes},
        candidates_per_class={c: 0 for c in classes},
        below_threshold=0,
        clips_total=len(ids),
        base_version=central.manifest.head_version,
        base_round=central.manifest.federation_round,
    )
    if not ids:
        result.reason = "no stored clips recorded with these classes"
        return _done(result, t0)
    sel = select_clips(probs, params.p, params.p_threshold, params.balance or None)
    result.selected_per_class = {c: int(n) for c, n in zip(classes, sel.per_class, strict=True)}
    result.candidates_per_class = {
        c: int(n) for c, n in zip(classes, sel.candidates_per_class, strict=True)
    }
    result.below_threshold = sel.below_threshold
    if sel.count < params.min_clips:
        result.reason = (
            f"only {sel.count} clips pass the rule (minimum {params.min_clips}); not adapting"
        )
        return _done(result, t0)

    from vfer.personalize import finetune_v

    clips = [source.frame_embeddings(ids[int(i)]) for i in sel.indices]  # only the selected ones
    start = central.vfer_weights()
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
    if not np.isfinite(tuned.loss_after) or not all(
        np.isfinite(a).all() for a in tuned.weights.values()
    ):
        return _reject(result, home, central, "the fine-tuned head produced NaN or Inf", t0)
    if tuned.loss_after > tuned.loss_before:
        return _reject(
            result,
            home,
            central,
            f"the fine-tuned head fits the pseudo labels worse (loss {tuned.loss_after:.4f} > {tuned.loss_before:.4f})",
            t0,
        )
    if params.gate is not None:
        verdict = _gate(source, ids, probs, sel, start, tuned.weights, params.gate)
        result.gate = {
            "passed": verdict.passed,
            "reasons": list(verdict.reasons),
            "notes": list(verdict.notes),
            "metrics": verdict.metrics,
        }
        if not verdict.passed:
            if params.gate_enforce:
                return _block(result, home, central, f"safety gate: {verdict.summary()}", t0)
            log.warning(
                "the safety gate would block this head (report only): %s", verdict.summary()
            )
    result.trainable = {
        n: tuned.weights[n] for n in trainable_names(vfer_spec(central.num_classes))
    }
    version = _write_personalized(home, central, tuned.weights, result)
    old_step = home.active().file(VFER_STEP).read_bytes()
    home.switch_to(version)
    result.new_version = version
    result.step_changed = home.active().file(VFER_STEP).read_bytes() != old_step
    result.status = "adapted"
    result.reason = f"fine-tuned on {sel.count} clips"
    return _done(result, t0)


def _gate(
    source: ClipSource,
    ids: list[int],
    probs: np.ndarray,
    sel: Selection,
    central: dict[str, np.ndarray],
    tuned: dict[str, np.ndarray],
    options: GateOptions,
) -> GateVerdict:
    """The safety gate on the clips the fine-tune did not use (at most MAX_HOLDOUT, newest)."""
    from vfer.personalize import predict_v

    used = {int(i) for i in sel.indices}
    held = [i for i in range(len(ids)) if i not in used][-MAX_HOLDOUT:]
    clips = [source.frame_embeddings(ids[i]) for i in held]
    teacher = np.argmax(probs[held], axis=1) if held else np.zeros(0, dtype=np.int64)
    k = probs.shape[1]
    new = predict_v(tuned, clips) if clips else np.zeros((0, k))
    old = predict_v(central, clips) if clips else np.zeros((0, k))
    return decide(sel.per_class, new, old, teacher, options)


def _block(
    result: AdaptResult, home: BundleHome, central: Bundle, why: str, t0: float
) -> AdaptResult:
    """The gate failed: the central head stays active and nothing is submitted."""
    log.warning("personalized head blocked, keeping the central head: %s", why)
    result.status, result.reason = "blocked", why
    _keep_central(home, central)
    return _done(result, t0)


def _write_personalized(
    home: BundleHome, central: Bundle, weights: dict[str, np.ndarray], result: AdaptResult
) -> str:
    from vfer.export import vfer_step_tflite

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    version = f"local-{stamp}-{os.urandom(3).hex()}"
    files: dict[str, bytes | Path] = {
        **central.carried_files(),  # f, g and the teacher, unchanged
        VFER_STEP: vfer_step_tflite(weights),
        VFER_WEIGHTS: wio.to_bytes(weights),
    }
    home.write_version(
        version,
        files,
        classes=central.classes,
        head_version=version,
        federation_round=central.manifest.federation_round,
        personalized=True,
        parent=central.manifest.head_version,
        teacher=central.manifest.teacher,
        notes={
            "clips_per_class": json.dumps(result.selected_per_class),
            "base_version": central.manifest.head_version,
            "base_round": str(central.manifest.federation_round),
            "adapted_at": now_iso(),
            "loss_before": f"{result.loss_before:.6f}",
            "loss_after": f"{result.loss_after:.6f}",
        },
    )
    return version


def _reject(
    result: AdaptResult, home: BundleHome, central: Bundle, why: str, t0: float
) -> AdaptResult:
    log.warning("personalization rejected, keeping the central head: %s", why)
    result.status, result.reason = "rejected", why
    _keep_central(home, central)
    return _done(result, t0)


def _keep_central(home: BundleHome, central: Bundle) -> None:
    if home.active().bundle_id != central.bundle_id:
        home.ensure_managed()
        home.switch_to(central.path.name)


def _done(result: AdaptResult, t0: float) -> AdaptResult:
    result.seconds = time.perf_counter() - t0
    log.info("adaptation %s: %s (%.1f s)", result.status, result.reason, result.seconds)
    return result
