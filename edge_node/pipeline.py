"""Per frame: detect -> crop -> embed (f) -> IFER (g) -> VFER step (v), clips to the store.

:class:`Pipeline` runs one bundle's :class:`~edge_node.models.Models` on each frame, feeds the pure
:class:`~edge_node.segmenter.Segmenter`, buffers the open clip in memory
(:class:`~edge_node.clip_buffer.OpenClip`) and hands a finished one to the store in a single
transaction, and keeps the kiosk's :class:`~edge_node.state.NodeState` current
(:class:`~edge_node.live_view.LiveView`). At the start of every clip it checks whether the bundle
changed on disk (resolved path + manifest mtime) and reloads. When the kiosk asks to forget, it
drops the open clip and calls :func:`edge_node.forget.forget_everything`.

Each frame goes through two stages with typed results: :meth:`Pipeline.detect` (stage A: the
face, :class:`Detected`) and :meth:`Pipeline.infer` (stage B: f, g, v, clips, :class:`FrameResult`).
:meth:`Pipeline.process` runs both in turn; :mod:`edge_node.stages` runs stage A (with decoding)
and stage E (f, :class:`EmbedAhead`) in threads ahead of stage B, with bounded queues, and the same
results; with a teacher in the bundle, stage T (:class:`~edge_node.teacher_stage.TeacherAhead`)
runs it at its own cadence (``teacher.every``) between E and B. A model that runs on every face
frame goes into
:meth:`Models.predict <edge_node.models.Models.predict>`; a stage of its own ahead of B into
:meth:`Pipeline.ahead_stages`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_node.clip_buffer import OpenClip
from edge_node.display import DEFAULT_DISPLAY, DEFAULT_TEACHER_EVERY, Display
from edge_node.forget import forget_everything
from edge_node.live_view import LiveView, Shown
from edge_node.models import Models, Predictions, bundle_fingerprint
from edge_node.segmenter import Segment, Segmenter, SegmentPolicy
from edge_node.sources import Frame
from edge_node.state import NodeState
from edge_node.store import ClipStore, StoreFullError
from edge_node.teacher_stage import TeacherAhead, TeacherCadence, teacher_sha256
from vfer.backbone import Backbone
from vfer.bundle import BACKBONE
from vfer.faces import FaceCrop, FaceCropper

log = logging.getLogger(__name__)

__all__ = [
    "Counters",
    "Detected",
    "FrameResult",
    "Models",
    "Pipeline",
    "PipelineOptions",
    "bundle_fingerprint",
]


@dataclass(frozen=True)
class PipelineOptions:
    policy: SegmentPolicy = field(default_factory=SegmentPolicy)
    preview: bool = False  # encode JPEG previews for the kiosk
    preview_fps: float = 15.0
    thumbnails: int = 0  # face thumbnails kept per clip (0: none, the default)
    forget_pause_s: float = 60.0  # no recording this long after "forget me"
    display: Display = DEFAULT_DISPLAY  # what the kiosk shows (edge_node.display)
    # the teacher runs on a tracked face every N frames, held in between (edge_node.teacher_stage)
    teacher_every: int = DEFAULT_TEACHER_EVERY
    teacher_stage: bool = True  # ... in a stage of its own when the stages overlap


@dataclass(frozen=True)
class Detected:
    """Stage A's result for one frame (:meth:`Pipeline.detect`)."""

    frame: Frame
    face: FaceCrop | None
    forget: bool = False  # "forget me" was asked before this frame: stage B does it first
    embedding: np.ndarray | None = None  # f of the face, when stage E computed it ahead
    backbone: str = ""  # sha256 of the backbone file that computed ``embedding``
    teacher: np.ndarray | None = None  # the teacher's probabilities, when stage T computed them
    teacher_from: str = ""  # sha256 of the teacher file that computed ``teacher``


class AheadStage(Protocol):
    """A stage between A and B (:meth:`Pipeline.ahead_stages`): it adds to a frame's
    :class:`Detected` what stage B would otherwise compute itself, and touches no other state."""

    def __call__(self, d: Detected) -> Detected: ...

    def close(self) -> None: ...


class EmbedAhead:
    """Stage E: f of the face crop one frame ahead of stage B, with the active bundle's f in an
    interpreter of its own (one LiteRT thread). Stage B takes the embedding only while its own f
    is the same file (:meth:`Pipeline._predict`)."""

    def __init__(self, models: Models) -> None:
        self.backbone = Backbone.from_path(models.bundle.file(BACKBONE), num_threads=1)
        self.sha256 = models.backbone_sha256

    def __call__(self, d: Detected) -> Detected:
        if d.face is None:
            return d
        return replace(d, embedding=self.backbone.embed(d.face.image), backbone=self.sha256)

    def close(self) -> None:
        self.backbone.close()


@dataclass
class FrameResult:
    """Stage B's result for one frame (:meth:`Pipeline.infer`); the models' outputs with a face."""

    index: int
    t: float
    face: FaceCrop | None
    embedding: np.ndarray | None = None  # f
    ifer: np.ndarray | None = None  # g, this frame
    vfer: np.ndarray | None = None  # v, the clip so far
    teacher: np.ndarray | None = None  # the bundle's external teacher, this frame


@dataclass
class Counters:
    frames: int = 0
    face_frames: int = 0
    saved: list[int] = field(default_factory=list)
    discarded: int = 0  # too short, paused, or not written (disk full)
    reloads: int = 0


class Pipeline:
    """Feed :meth:`process` every frame, :meth:`finish` at the end."""

    def __init__(
        self,
        bundle_path: str | os.PathLike[str],
        cropper: FaceCropper,
        store: ClipStore,
        state: NodeState,
        options: PipelineOptions = PipelineOptions(),
        models: Models | None = None,
    ) -> None:
        self.bundle_path = Path(bundle_path)
        self.models = models or Models.load(bundle_path)
        self.cropper, self.store, self.state, self.options = cropper, store, state, options
        self.segmenter = Segmenter(options.policy)
        self._shadow = Segmenter(options.policy)  # stage A's copy (see detect)
        self._forget_sent = threading.Event()
        self.counters = Counters()
        self.recording_suspended = False  # set when the disk is full
        self._clip: OpenClip | None = None
        self._failed_fingerprint: tuple[str, int] | None = None
        self._cadence: TeacherCadence | None = None  # stage B's, when there is no stage T
        self.view = LiveView(state, options.display, options.preview, options.preview_fps)
        state.update(model=self.models.info(), clips_stored=store.count())

    # -- per frame ------------------------------------------------------------------------

    def process(self, frame: Frame) -> FaceCrop | None:
        """One frame through the whole pipeline; returns the face crop it found, if any."""
        return self.infer(self.detect(frame)).face

    def detect(self, frame: Frame) -> Detected:
        """Stage A: find the face (decode happened in the source). Safe to run one frame ahead
        of :meth:`infer` in another thread (:mod:`edge_node.stages`): it touches only the
        cropper and its own copy of the segmenter, which sees the same frames in the same order
        as :meth:`infer`'s, so the cropper is reset exactly where a clip ends."""
        forget = self.state.forget_requested.is_set() and not self._forget_sent.is_set()
        if forget:
            self._forget_sent.set()  # cleared by infer once the forget is done
            self._shadow.abandon()
            self.cropper.reset()
        if frame.cut:  # another file, or the loop started over: nothing to follow across it
            self.cropper.reset()
        face = self.cropper.crop(frame.rgb)
        if self._shadow.push(frame.index, frame.t, face is not None, cut=frame.cut).ended:
            self.cropper.reset()  # a new clip looks for its face from scratch
        return Detected(frame, face, forget)

    def ahead_stages(self) -> dict[str, Callable[[], AheadStage]]:
        """The stages :mod:`edge_node.stages` runs in threads between A and B, in order, by thread
        name, each opened in its own thread. A new stage is one entry here, plus the field it
        fills in :class:`Detected` for :meth:`_predict` to pass on."""
        stages: dict[str, Callable[[], AheadStage]] = {"embed": lambda: EmbedAhead(self.models)}
        if self.models.teacher is not None and self.options.teacher_stage:
            stages["teacher"] = lambda: TeacherAhead(self.models, self.options.teacher_every)
        return stages

    def infer(self, d: Detected) -> FrameResult:
        """Stage B: clip boundaries, f, g and v, the clip buffer, the store, the kiosk's state."""
        frame, face = d.frame, d.face
        if d.forget:
            self._forget_now()
        self.counters.frames += 1
        step = self.segmenter.push(frame.index, frame.t, face is not None, cut=frame.cut)
        if step.ended is not None:
            self._end_clip(step.ended)
        if step.started:
            self._start_clip(frame.t)
        result = FrameResult(frame.index, frame.t, face)
        out = None
        if face is not None:
            self.counters.face_frames += 1
            out = self._predict(face, d)
            result.embedding, result.ifer = out.embedding, out.ifer
            result.vfer, result.teacher = out.vfer, out.teacher
            if step.in_clip and self._clip is not None:
                self._clip.add(frame.t, out, face.image, self.options.thumbnails > 0)
        if self._clip is not None and self.state.recording_paused():
            self._clip.recordable = False
        self.view.publish(self._shown(frame, face, out))
        return result

    def _predict(self, face: FaceCrop, d: Detected) -> Predictions:
        """Every model on the face, with the open clip's models (stage E's f and stage T's
        teacher when they are theirs; else they run here, the teacher at the same cadence)."""
        m = self._clip.models if self._clip is not None else self.models
        ahead = d.embedding if d.backbone == m.backbone_sha256 else None
        taught = d.teacher if d.teacher_from and d.teacher_from == teacher_sha256(m) else None
        if taught is None and m.teacher is not None:
            if self._cadence is None or self._cadence.teacher is not m.teacher:
                self._cadence = TeacherCadence(m.teacher, self.options.teacher_every)
            taught = self._cadence(d.frame.rgb, face, d.frame.index, d.frame.cut)
        return m.predict(d.frame.rgb, face, ahead, taught)

    def _shown(self, frame: Frame, face: FaceCrop | None, out: Predictions | None) -> Shown:
        clip = self._clip
        return Shown(
            frame,
            face,
            self.models.bundle.classes,
            self.models.teacher is not None,
            ifer=out.ifer if out is not None else None,
            vfer=out.vfer if out is not None else None,
            teacher=out.teacher if out is not None else None,
            in_clip=clip is not None,
            recording=clip is not None and clip.recordable,
            clip_frames=len(clip.times) if clip is not None else 0,
        )

    def _start_clip(self, t: float) -> None:
        self._maybe_reload()
        self.models.vfer.reset()
        recordable = not (self.state.recording_paused() or self.recording_suspended)
        self._clip = OpenClip(time.time(), t, self.models, recordable)
        log.debug("clip started (recording: %s)", recordable)

    def _end_clip(self, seg: Segment) -> int | None:
        clip, self._clip = self._clip, None
        if clip is None:
            return None
        if not (seg.keep and clip.recordable):
            self.counters.discarded += 1
            log.debug(
                "clip of %s frames not kept (keep=%s recordable=%s)",
                seg.face_frames,
                seg.keep,
                clip.recordable,
            )
            return None
        new = clip.finished(seg, self.options.thumbnails)
        try:
            clip_id = self.store.add_clip(new)
        except StoreFullError as exc:
            self.recording_suspended = True
            self.counters.discarded += 1
            log.error("recording stopped: %s", exc)
            return None
        self.counters.saved.append(clip_id)
        log.info(
            "clip %s: %s frames, %s (%.2f)",
            clip_id,
            seg.face_frames,
            new.classes[int(np.argmax(new.vfer_probs))],
            float(np.max(new.vfer_probs)),
        )
        self.state.update(clips_stored=self.store.count())
        return clip_id

    def finish(self) -> None:
        """End of stream or shutdown: close the open clip (kept if long enough)."""
        self._shadow.flush()
        self.cropper.reset()
        seg = self.segmenter.flush()
        if seg is not None:
            self._end_clip(seg)
        self.state.update(recording=False, clip_frames=0, face_present=False, emotion=None)

    # -- bundle switch, forget, full disk ---------------------------------------------------

    def _maybe_reload(self) -> None:
        fingerprint = bundle_fingerprint(self.bundle_path)
        if fingerprint in (self.models.fingerprint, self._failed_fingerprint):
            return
        old = self.models
        try:
            new = Models.load(self.bundle_path)
        except (OSError, ValueError) as exc:
            self._failed_fingerprint = fingerprint
            log.error(
                "bundle at %s changed but cannot be used, keeping %s: %s",
                self.bundle_path,
                old.bundle.bundle_id[:12],
                exc,
            )
            return
        self.models = new
        self.counters.reloads += 1
        log.info(
            "bundle switched: %s (%s) -> %s (%s) from %s",
            old.bundle.bundle_id[:12],
            old.bundle.manifest.head_version,
            new.bundle.bundle_id[:12],
            new.bundle.manifest.head_version,
            fingerprint[0],
        )
        old.close()
        self.state.update(model=new.info())

    def forget(self) -> None:
        """Forget me, now (both stages): see :meth:`_forget_now`."""
        self._shadow.abandon()
        self.cropper.reset()
        self._forget_now()

    def _forget_now(self) -> None:
        """Pause recording, drop the clip being recorded, forget every clip and personalized head
        (:func:`~edge_node.forget.forget_everything`), show the central head, tell the kiosk."""
        self.state.pause_after_forget(self.options.forget_pause_s)  # before anything is deleted
        self.segmenter.abandon()
        self._clip = None
        self.models.vfer.reset()
        forget_everything(self.store, self.bundle_path, "forget me")
        self._maybe_reload()  # show the central head from the next frame on
        log.info("recording paused %.0f s after forget me", self.options.forget_pause_s)
        self.state.update(clips_stored=0, recording=False, clip_frames=0)
        self.state.forget_completed()  # clears forget_requested first: stage A sends no second
        self._forget_sent.clear()

    def retry_recording(self) -> None:
        if self.recording_suspended:
            log.info("recording resumes (retention ran)")
            self.recording_suspended = False

    def close(self) -> None:
        self.models.close()
