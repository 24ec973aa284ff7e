"""What one personalization is asked to do: :class:`AdaptParams`, built in one place."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vfer import personalization_defaults as d
from vfer.gate import GateOptions
from vfer.privacy.options import PrivacyOptions

if TYPE_CHECKING:
    from edge_node.config import AdaptationConfig


@dataclass(frozen=True)
class AdaptParams:
    p: int = d.P
    p_threshold: float = d.P_THRESHOLD
    epochs: int = d.EPOCHS
    lr: float = d.LR
    min_clips: int = d.MIN_CLIPS
    batch_size: int = d.BATCH_SIZE
    seed: int = 0
    #: whose per-frame probabilities Eq. 1 averages: g, the external teacher, or their mean
    teacher: str = "g"
    #: class-balanced selection: no class keeps more than this times the smallest (0: the paper)
    balance: float = d.BALANCE
    #: L2 pull towards the central v while fine-tuning (0: the paper's plain cross-entropy)
    l2sp: float = 0.0
    #: the safety gate's thresholds; None turns the gate off (the paper's plain rule)
    gate: GateOptions | None = field(default_factory=GateOptions)
    #: False: the gate's verdict is only recorded (``adaptation.gate: report``)
    gate_enforce: bool = True
    #: DP-SGD with one visit as the example (``adaptation.privacy``); None: off
    privacy: PrivacyOptions | None = None
    #: clips closer than this (clips.gap_s) are one visit: one face track cut at clips.max_s
    gap_s: float = 1.0

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
                signal=config.gate_signal,
                max_signal=config.gate_signal_max,
            )
            if config.gate != "off"
            else None
        )
        values["gate_enforce"] = config.gate == "enforce"
        values["privacy"] = config.privacy if config.privacy.enabled else None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["privacy"] is not None and not values["privacy"].enabled:
            values["privacy"] = None  # --privacy off, or settings with enabled: false
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
            *([] if self.privacy is None else ["--privacy", self.privacy.model_dump_json()]),
            "--gap-s", repr(self.gap_s),
        ]  # fmt: skip
