"""Per frame: detect -> crop -> embed (f) -> IFER (g) -> VFER step (v), clips to the store.

:class:`Models` holds one bundle's three LiteRT models. :class:`Pipeline` runs them on each
frame, feeds the pure :class:`~edge_node.segmenter.Segmenter`, buffers the open clip in memory and
hands a finished one to the store in a single transaction (so there is never a half-written
clip), and keeps the kiosk's :class:`~edge_node.state.NodeState` current. At the start of every
clip it checks whether the bundle changed on disk (resolved path + manifest mtime) and reloads.

Each frame goes through two stages with typed results: :meth:`Pipeline.detect` (stage A: the
face, :class:`Detected`) and :meth:`Pipeline.infer` (stage B: f, g, v, clips, :class:`FrameResult`).
:meth:`Pipeline.process` runs both in turn; :mod:`edge_node.stages` runs stage A (with decoding)
in a thread one frame ahead of stage B, with a bounded queue, and the same results.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge_node.bundles import BundleHome
from edge_node.display import DEFAULT_DISPLAY, Display, display_probs
from edge_node.segmenter import Segment, Segmenter, SegmentPolicy
from edge_node.sources import Frame
from edge_node.state import ModelInfo, NodeState
from edge_node.store import ClipStore, NewClip, StoreFullError
from vfer.backbone import Backbone
from vfer.bundle import BACKBONE, IFER_TFLITE, MANIFEST, VFER_STEP, Bundle
from vfer.faces import FaceCrop, FaceCropper
from vfer.runtime import IferHead, VferStep
from vfer.teacher import Teacher

log = logging.getLogger(__name__)

# Frames up to this wide are encoded as they are (resizing costs more than it saves).
PREVIEW_WIDTH = 640
THUMBNAIL_EVERY = 5  # frames between thumbnail candidates (opt-in thumbnails only)


def bundle_fingerprint(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(resolved folder, manifest.json mtime in ns): changes when a symlink is switched."""
    real = os.path.realpath(path)
    try:
        return real, os.stat(os.path.join(real, MANIFEST)).st_mtime_ns
    except OSError:
        return real, -1


class LazyBackbone:
    """f, opened on its first use. With stage E embedding ahead (:mod:`edge_node.stages`) the
    capture loop's own f runs only without stage E, or after a switch to a bundle whose f differs
    from stage E's, so its interpreter (10-25 MB) is not held until then."""

    def __init__(self, path: Path, num_threads: int) -> None:
        self.path, self.num_threads = path, num_threads
        self._backbone: Backbone | None = None

    def embed(self, crop: np.ndarray) -> np.ndarray:
        if self._backbone is None:
            self._backbone = Backbone.from_path(self.path, self.num_threads)
        return self._backbone.embed(crop)

    @property
    def loaded(self) -> bool:
        return self._backbone is not None

    def close(self) -> None:
        if self._backbone is not None:
            self._backbone.close()
            self._backbone = None


@dataclass
class Models:
    """One bundle's f, g and v-step, loaded together (f when first used)."""

    bundle: Bundle
    backbone: LazyBackbone
    ifer: IferHead
    vfer: VferStep
    fingerprint: tuple[str, int]
    teacher: Teacher | None = None  # the bundle's external teacher, run on each face crop

    @classmethod
    def load(cls, path: str | os.PathLike[str], num_threads: int = 2) -> Models:
        fingerprint = bundle_fingerprint(path)
        bundle = BundleHome(path).open(fingerprint[0])  # verified once per installed version
        return cls(
            bundle,
            LazyBackbone(bundle.file(BACKBONE), num_threads),
            IferHead.from_path(bundle.file(IFER_TFLITE)),
            VferStep.from_path(bundle.file(VFER_STEP)),
            fingerprint,
            bundle.teacher() if bundle.has_teacher else None,
        )

    def info(self) -> ModelInfo:
        m = self.bundle.manifest
        return ModelInfo(
            head_version=m.head_version,
            federation_round=m.federation_round,
            personalized=m.personalized,
            bundle_id=self.bundle.bundle_id,
            classes=self.bundle.classes,
        )

    def close(self) -> None:
        for model in (self.backbone, self.ifer, self.vfer, self.teacher):
            if model is not None:
                model.close()


@dataclass(frozen=True)
class PipelineOptions:
    policy: SegmentPolicy = field(default_factory=SegmentPolicy)
    preview: bool = False  # encode JPEG previews for the kiosk
    preview_fps: float = 15.0
    thumbnails: int = 0  # face thumbnails kept per clip (0: none, the default)
    forget_pause_s: float = 60.0  # no recording this long after "forget me"
    display: Display = DEFAULT_DISPLAY  # what the kiosk shows (edge_node.display)


@dataclass
class _OpenClip:
    started_at: float  # wall clock
    t0: float  # source time of its first frame
    models: Models
    recordable: bool
    times: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    ifer: list[np.ndarray] = field(default_factory=list)
    teacher: list[np.ndarray] = field(default_factory=list)
    thumbs: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Detected:
    """Stage A's result for one frame (:meth:`Pipeline.detect`)."""

    frame: Frame
    face: FaceCrop | None
    forget: bool = False  # "forget me" was asked before this frame: stage B does it first
    embedding: np.ndarray | None = None  # f of the face, when stage E computed it ahead
    backbone: str = ""  # sha256 of the backbone file that computed ``embedding``


@dataclass
class AheadEmbedder:
    """Stage E's own f (one LiteRT thread) and the sha256 of its file."""

    backbone: Backbone
    sha256: str

    def close(self) -> None:
        self.backbone.close()


@dataclass
class FrameResult:
    """Stage B's result for one frame (:meth:`Pipeline.infer`); more heads add fields here."""

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
        self._clip: _OpenClip | None = None
        self._failed_fingerprint: tuple[str, int] | None = None
        self._last_wall: float | None = None
        self._fps = 0.0
        self._next_preview = 0.0
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

    def ahead_embedder(self) -> AheadEmbedder:
        """Stage E's backbone: the active bundle's f, in an interpreter of its own."""
        bundle = self.models.bundle
        return AheadEmbedder(
            Backbone.from_path(bundle.file(BACKBONE), num_threads=1),
            bundle.manifest.files[BACKBONE],
        )

    @staticmethod
    def embed_ahead(d: Detected, embedder: AheadEmbedder) -> Detected:
        """Stage E: f of the face crop, one frame ahead of :meth:`infer` (pure: no state)."""
        if d.face is None:
            return d
        return replace(d, embedding=embedder.backbone.embed(d.face.image), backbone=embedder.sha256)

    def infer(self, d: Detected) -> FrameResult:
        """Stage B: clip boundaries, f, g and v, the clip buffer, the store, the kiosk's state."""
        frame, face = d.frame, d.face
        if d.forget:
            self._forget_store()
        self.counters.frames += 1
        step = self.segmenter.push(frame.index, frame.t, face is not None, cut=frame.cut)
        if step.ended is not None:
            self._end_clip(step.ended)
        if step.started:
            self._start_clip(frame.t)
        result = FrameResult(frame.index, frame.t, face)
        if face is not None:
            self.counters.face_frames += 1
            m = self._clip.models if self._clip is not None else self.models
            if d.embedding is not None and d.backbone == m.bundle.manifest.files[BACKBONE]:
                embedding = d.embedding
            else:  # no stage E, or the bundle's f changed since it started
                embedding = m.backbone.embed(face.image)
            result.embedding = embedding
            result.ifer = m.ifer.predict_frame(embedding)
            result.vfer = m.vfer.step(embedding)
            if m.teacher is not None:
                result.teacher = m.teacher.predict_crop(face.image)
            if step.in_clip and self._clip is not None:
                self._add_frame(self._clip, frame.t, embedding, result.ifer, face)
                if result.teacher is not None:
                    self._clip.teacher.append(result.teacher)
        if self._clip is not None and self.state.recording_paused():
            self._clip.recordable = False
        self._publish(frame, face, result.ifer, result.vfer, result.teacher)
        return result

    def _start_clip(self, t: float) -> None:
        self._maybe_reload()
        self.models.vfer.reset()
        recordable = not (self.state.recording_paused() or self.recording_suspended)
        self._clip = _OpenClip(time.time(), t, self.models, recordable)
        log.debug("clip started (recording: %s)", recordable)

    def _add_frame(
        self, clip: _OpenClip, t: float, embedding: np.ndarray, ifer: np.ndarray, face: FaceCrop
    ) -> None:
        if self.options.thumbnails and len(clip.times) % THUMBNAIL_EVERY == 0:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR))
            if ok:
                clip.thumbs.append(jpeg.tobytes())
        clip.times.append(t - clip.t0)
        clip.embeddings.append(embedding)
        clip.ifer.append(ifer)

    def _end_clip(self, seg: Segment) -> int | None:
        clip, self._clip = self._clip, None
        if clip is None:
            return None
        if len(clip.embeddings) != seg.face_frames:  # pragma: no cover - an invariant
            raise RuntimeError(f"clip buffer has {len(clip.embeddings)} frames, segment {seg}")
        if not (seg.keep and clip.recordable):
            self.counters.discarded += 1
            log.debug(
                "clip of %s frames not kept (keep=%s recordable=%s)",
                seg.face_frames,
                seg.keep,
                clip.recordable,
            )
            return None
        m = clip.models
        new = NewClip(
            started_at=clip.started_at,
            ended_at=clip.started_at + (seg.end_t - seg.start_t),
            face_ratio=seg.face_ratio,
            bundle_id=m.bundle.bundle_id,
            classes=m.bundle.classes,
            times=np.asarray(clip.times),
            embeddings=np.stack(clip.embeddings),
            ifer=np.stack(clip.ifer),
            vfer_probs=m.vfer.probs if m.vfer.probs is not None else np.stack(clip.ifer).mean(0),
            thumbnails=_spread(clip.thumbs, self.options.thumbnails),
            teacher=np.stack(clip.teacher) if len(clip.teacher) == len(clip.ifer) else None,
        )
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
            m.bundle.classes[int(np.argmax(new.vfer_probs))],
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
        """Forget me, now (both stages): see :meth:`_forget_store`."""
        self._shadow.abandon()
        self.cropper.reset()
        self._forget_store()

    def _forget_store(self) -> None:
        """Forget me: pause recording, delete every clip (and the one being recorded), VACUUM,
        drop every personalized head (all were built from those clips), tell the kiosk."""
        self.state.pause_after_forget(self.options.forget_pause_s)  # before anything is deleted
        self.segmenter.abandon()
        self._clip = None
        self.models.vfer.reset()
        n = self.store.delete_all()
        dropped = BundleHome(self.bundle_path).forget_personalized("forget me")
        self._maybe_reload()  # show the central head from the next frame on
        log.info(
            "forgot %s clips and %s personalized heads on request; recording paused %.0f s",
            n,
            len(dropped),
            self.options.forget_pause_s,
        )
        self.state.update(clips_stored=0, recording=False, clip_frames=0)
        self.state.forget_completed()  # clears forget_requested first: stage A sends no second
        self._forget_sent.clear()

    def retry_recording(self) -> None:
        if self.recording_suspended:
            log.info("recording resumes (retention ran)")
            self.recording_suspended = False

    # -- the kiosk's view -------------------------------------------------------------------

    def _publish(
        self,
        frame: Frame,
        face: FaceCrop | None,
        ifer: np.ndarray | None,
        vfer: np.ndarray | None,
        teacher: np.ndarray | None = None,
    ) -> None:
        now = time.monotonic()
        if self._last_wall is not None:
            dt = now - self._last_wall
            if dt > 0:
                self._fps = 1.0 / dt if self._fps == 0 else 0.9 * self._fps + 0.1 / dt
        self._last_wall = now
        h, w = frame.rgb.shape[:2]
        scale = min(1.0, PREVIEW_WIDTH / w)
        pw, ph = round(w * scale), round(h * scale)
        classes = self.models.bundle.classes
        clip = self._clip
        box = None
        if face is not None:
            b = face.box
            box = (
                round(b.x * scale),
                round(b.y * scale),
                round(b.width * scale),
                round(b.height * scale),
            )
        shown, probs = display_probs(
            self.options.display,
            vfer=vfer,
            ifer=ifer,
            teacher=teacher,
            has_teacher=self.models.teacher is not None,
        )
        self.state.update(
            emotion=classes[int(np.argmax(probs))] if probs is not None else None,
            display=shown,
            display_probs=_named(classes, probs) if probs is not None else {},
            vfer_probs=_named(classes, vfer)
            if vfer is not None
            else ({} if clip is None else self.state.snapshot().vfer_probs),
            ifer_probs=_named(classes, ifer) if ifer is not None else {},
            face_present=face is not None,
            face_box=box,
            frame_size=(pw, ph),
            recording=clip is not None and clip.recordable,
            paused=self.state.recording_paused(),
            clip_frames=len(clip.times) if clip is not None else 0,
            fps=round(self._fps, 1),
        )
        if self.options.preview and now >= self._next_preview and self.state.preview_wanted(now):
            self._next_preview = now + 1.0 / self.options.preview_fps
            small = (
                frame.rgb
                if scale == 1.0
                else cv2.resize(frame.rgb, (pw, ph), interpolation=cv2.INTER_LINEAR)
            )
            ok, jpeg = cv2.imencode(
                ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70]
            )
            if ok:
                self.state.set_preview(jpeg.tobytes())

    def close(self) -> None:
        self.models.close()


def _named(classes: tuple[str, ...], probs: np.ndarray) -> dict[str, float]:
    return {c: round(float(p), 4) for c, p in zip(classes, probs, strict=True)}


def _spread(items: list[bytes], n: int) -> tuple[bytes, ...]:
    """At most ``n`` items, evenly spaced, first and last included."""
    if n <= 0 or not items:
        return ()
    if len(items) <= n:
        return tuple(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return tuple(items[i] for i in idx)
