"""What the node shows and what the kiosk may ask of it: one thread-safe holder.

The capture/inference loop writes :class:`LiveState` fields and the latest preview JPEG; the kiosk
server reads snapshots (``/api/state``) and sets controls (pause recording, forget me). Neither
side imports the other: they share only this object and the node's stop event.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    head_version: str = ""
    federation_round: int = 0
    personalized: bool = False
    bundle_id: str = ""
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FederationInfo:
    enabled: bool = False
    connected: bool = False
    last_round: int | None = None
    central_version: int | None = None  # the installed one (installed.json)


@dataclass(frozen=True)
class ProcessInfo:
    """The capture process itself, read from the process (``/proc/self``) about once a second."""

    pid: int = 0
    rss_mb: float = 0.0  # resident memory now
    peak_rss_mb: float = 0.0
    tensorflow_loaded: bool = False  # never true in the node: TensorFlow work runs in a child
    mediapipe_loaded: bool = False  # true only with face.detector: mediapipe


@dataclass(frozen=True)
class Activity:
    """What the node has done since it started (the Prometheus counters; /api/state too)."""

    frames: int = 0
    face_frames: int = 0
    clips_saved: int = 0
    clips_discarded: int = 0
    retention_deleted: int = 0
    adaptations: dict[str, int] = field(default_factory=dict)  # result -> count
    gate_blocked: dict[str, int] = field(default_factory=dict)  # gate reason -> count


@dataclass(frozen=True)
class Notice:
    """The operator's own notice text and name (node.yaml ``deployment``); None: built-in text."""

    text: str | None = None
    operator: str | None = None
    privacy: str | None = None  # adaptation.privacy's epsilon in plain words (ledger.notice_text)


@dataclass(frozen=True)
class LiveState:
    """Everything the kiosk page shows, as plain data (``/api/state`` is its JSON)."""

    emotion: str | None = None  # argmax of the display's probabilities, None without a face
    display: str = "vfer"  # which model the emotion comes from (edge_node.display)
    display_probs: dict[str, float] = field(default_factory=dict)  # the display's, this frame
    vfer_probs: dict[str, float] = field(default_factory=dict)  # clip so far
    ifer_probs: dict[str, float] = field(default_factory=dict)  # this frame
    face_present: bool = False
    face_box: tuple[int, int, int, int] | None = None  # x, y, w, h in preview pixels
    frame_size: tuple[int, int] | None = None  # preview width, height
    recording: bool = False  # a clip is being recorded right now
    paused: bool = False  # recording paused from the kiosk
    clip_frames: int = 0
    fps: float = 0.0
    model: ModelInfo = field(default_factory=ModelInfo)
    federation: FederationInfo = field(default_factory=FederationInfo)
    last_adaptation: str | None = None  # ISO time of the last successful personalization
    process: ProcessInfo = field(default_factory=ProcessInfo)
    clips_stored: int = 0
    notice: Notice = field(default_factory=lambda: Notice())  # deployment.notice / .operator
    activity: Activity = field(default_factory=lambda: Activity())
    updated_at: float = 0.0


class NodeState:
    """Thread-safe live state, preview frame and kiosk controls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = LiveState()
        self._preview: bytes | None = None
        self._preview_seq = 0
        self._preview_asked = -1e9  # monotonic time a viewer last asked for the preview
        self.pause_requested = threading.Event()  # set: do not record (inference still runs)
        self.forget_requested = (
            threading.Event()
        )  # set by the kiosk; the node deletes and clears it
        self.forget_done = threading.Condition(self._lock)
        self._forget_generation = 0
        self._forget_pause_until = 0.0  # monotonic: no recording before this (after forget me)

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, updated_at=time.time(), **changes)

    def snapshot(self) -> LiveState:
        with self._lock:
            return self._state

    def as_json(self) -> dict[str, Any]:
        snap = self.snapshot()
        data = asdict(snap)
        data["paused"] = self.recording_paused()
        data["forget_pause_s"] = round(self.forget_pause_left(), 1)
        return data

    def count_adaptation(self, result: str, gate_reasons: tuple[str, ...] = ()) -> None:
        """One adaptation ended with ``result`` (adapted, skipped, rejected, blocked)."""
        with self._lock:
            act = self._state.activity
            runs = {**act.adaptations, result: act.adaptations.get(result, 0) + 1}
            gate = dict(act.gate_blocked)
            for reason in gate_reasons:
                gate[reason] = gate.get(reason, 0) + 1
            self._state = replace(
                self._state, activity=replace(act, adaptations=runs, gate_blocked=gate)
            )

    def set_capture_counts(
        self,
        *,
        frames: int,
        face_frames: int,
        clips_saved: int,
        clips_discarded: int,
        retention_deleted: int,
    ) -> None:
        """The capture loop's running totals."""
        with self._lock:
            act = replace(
                self._state.activity,
                frames=frames,
                face_frames=face_frames,
                clips_saved=clips_saved,
                clips_discarded=clips_discarded,
                retention_deleted=retention_deleted,
            )
            self._state = replace(self._state, activity=act)

    # -- pausing --------------------------------------------------------------------------
    def pause_after_forget(self, seconds: float) -> None:
        """No recording for ``seconds`` from now (set before the clips are deleted)."""
        with self._lock:
            self._forget_pause_until = time.monotonic() + seconds

    def forget_pause_left(self) -> float:
        with self._lock:
            return max(0.0, self._forget_pause_until - time.monotonic())

    def recording_paused(self) -> bool:
        """Paused from the page, or still inside the pause that follows "forget me"."""
        return self.pause_requested.is_set() or self.forget_pause_left() > 0

    @property
    def forget_generation(self) -> int:
        """How many times "forget me" has completed (a job started before it must not count)."""
        with self._lock:
            return self._forget_generation

    def set_preview(self, jpeg: bytes) -> None:
        with self._lock:
            self._preview = jpeg
            self._preview_seq += 1

    def preview(self) -> tuple[int, bytes | None]:
        """The latest preview JPEG; reading it tells the pipeline someone is watching."""
        with self._lock:
            self._preview_asked = time.monotonic()
            return self._preview_seq, self._preview

    def preview_wanted(self, now: float, within_s: float = 2.0) -> bool:
        """True while a viewer read the preview in the last ``within_s`` seconds (monotonic time).

        The pipeline encodes preview JPEGs only then: nobody watching costs nothing.
        """
        with self._lock:
            return now - self._preview_asked <= within_s

    def request_forget(self, timeout: float = 30.0) -> bool:
        """Ask the node to delete every clip; True once it reports done within ``timeout``."""
        with self._lock:
            target = self._forget_generation + 1
        self.forget_requested.set()
        with self.forget_done:
            return self.forget_done.wait_for(lambda: self._forget_generation >= target, timeout)

    def forget_completed(self) -> None:
        """Called by the node after it deleted everything and VACUUMed."""
        with self.forget_done:
            self._forget_generation += 1
            self.forget_requested.clear()
            self.forget_done.notify_all()
