"""What the adaptation child tells its parent: one typed, versioned report in a file.

The parent (the node's personalization loop, :mod:`edge_node.personalization.loop`) starts
``python -m edge_node adapt ... --result PATH``; the child writes :class:`AdaptReport` as JSON to
``PATH`` (atomically, once it is done) and v's tuned trainable weights to the safetensors file the
report names, beside it. The parent reads both; stdout is for people. A report whose
``protocol`` the parent does not know is refused (:class:`ProtocolError`), never guessed at.

The same model is what the node keeps in its clip database's ``adaptations`` table
(:mod:`edge_node.personalization.results`), so a restart loses no result and no gate verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vfer.atomic import atomic_write_text

#: Bump when a field changes meaning or goes; the parent refuses any other version.
PROTOCOL_VERSION = 1

Status = Literal["adapted", "skipped", "rejected", "blocked"]


class ProtocolError(RuntimeError):
    """The child's report is missing, unreadable, or of another protocol version."""


class GateRecord(BaseModel):
    """The safety gate's verdict (:class:`vfer.gate.GateVerdict`) as plain data."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)


class PrivacyRecord(BaseModel):
    """A night under ``adaptation.privacy``: what the accountant counted and what DP-SGD did."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")
    night: int  # the accountant's night number (edge_node.personalization.ledger)
    epsilon_night: float = 0.0  # what tonight's fine-tune spent at delta (0: none ran)
    epsilon_spent: float  # composed over the window, tonight included
    epsilon_left: float
    epsilon_window: float
    window_nights: int
    delta: float
    clip: float
    visits: int = 0  # the DP examples: visits that kept a clip
    steps: int = 0
    sampling_rate: float = 0.0
    noise_multiplier: float = 0.0  # z
    noise_std: float = 0.0  # z * clip, the plan's
    gradients: int = 0  # per-visit gradients over all steps
    max_norm_before: float = 0.0  # the largest per-visit gradient norm before clipping
    max_norm_after: float = 0.0  # and after (at most clip)
    step_noise_std: list[float] = Field(default_factory=list, max_length=2)  # min, max over steps
    noise_drawn_std: float = 0.0  # mean over steps of the std of the noise actually drawn
    submit: bool = False  # the budget counted tonight: the head may be sent


class AdaptReport(BaseModel):
    """One personalization's outcome, as the child reports it and the node stores it."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")
    protocol: int = PROTOCOL_VERSION
    status: Status
    reason: str
    classes: list[str]
    selected_per_class: dict[str, int]
    candidates_per_class: dict[str, int]
    below_threshold: int
    clips_total: int
    base_version: str  # the central head it started from
    base_round: int
    new_version: str | None = None  # the personalized head version written (status adapted)
    loss_before: float | None = None
    loss_after: float | None = None
    step_changed: bool = False
    train_seconds: float = 0.0
    seconds: float = 0.0
    gate: GateRecord | None = None  # None: the gate did not run
    privacy: PrivacyRecord | None = None  # None: adaptation.privacy is off
    #: v's trainable weights (safetensors), written once by the child beside the report
    weights_file: str | None = None


def write_report(path: Path, report: AdaptReport) -> None:
    atomic_write_text(path, report.model_dump_json(indent=1) + "\n")


def read_report(path: Path) -> AdaptReport:
    """The child's report at ``path``; :class:`ProtocolError` when absent, bad or foreign."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"the adaptation child wrote no report ({exc})") from None
    return parse_report(text, str(path))


def parse_report(text: str, where: str) -> AdaptReport:
    try:
        report = AdaptReport.model_validate_json(text)
    except ValidationError as exc:
        raise ProtocolError(f"{where}: not an adaptation report: {exc}") from None
    if report.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{where}: report protocol {report.protocol}, this node speaks {PROTOCOL_VERSION}"
        )
    return report
