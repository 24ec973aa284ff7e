"""The node's capture loop (``python -m edge_node run`` and ``ingest``): one stop event.

Opens the store (retention at start and on a timer), the models, the face detector and the
source, starts the kiosk when asked, and drives :class:`~edge_node.pipeline.Pipeline` until the
source ends, ``--max-frames`` / ``--duration`` are reached, or the stop event is set (SIGTERM and
SIGINT set it). On the way out the open clip is closed whole (one transaction) or not at all.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from edge_node.config import NodeConfig
from edge_node.metrics import start_node_metrics
from edge_node.personalization.ledger import kiosk_notice
from edge_node.pipeline import Counters, Detected, Models, Pipeline, PipelineOptions
from edge_node.retention import DAY_S, RetentionPolicy
from edge_node.segmenter import SegmentPolicy
from edge_node.sources import FrameSource, open_source
from edge_node.stages import detected_frames
from edge_node.state import NodeState, ProcessInfo
from edge_node.store import ClipStore
from vfer.cli import UserError, log_from_signal_handler
from vfer.faces import MODEL_URL, FaceCropper

log = logging.getLogger(__name__)

FACE_MODEL_NAME = "face_detection_short_range.tflite"
FACE_MODEL_ENV = "FEDVFER_FACE_MODEL"


@dataclass
class RunSummary:
    frames: int = 0
    face_frames: int = 0
    corrupt_frames: int = 0
    clips_saved: list[int] = field(default_factory=list)
    clips_discarded: int = 0
    bundle_reloads: int = 0
    seconds: float = 0.0
    stopped: bool = False  # ended by the stop event (signal), not by the source or a limit

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def resolve_face_model(configured: Path | None, bundle: Path) -> Path:
    """The face detector: configured path, else $FEDVFER_FACE_MODEL, else <bundle>/../models/."""
    if configured is not None:
        candidates = [Path(configured)]
    else:
        env = os.environ.get(FACE_MODEL_ENV)
        candidates = [Path(env)] if env else []
        candidates.append(Path(os.path.realpath(bundle)).parent / "models" / FACE_MODEL_NAME)
        candidates.append(Path(bundle).absolute().parent / "models" / FACE_MODEL_NAME)
    candidates = list(dict.fromkeys(candidates))
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(
        f"face detector model not found (looked at {', '.join(str(p) for p in candidates)}); "
        f"download {FACE_MODEL_NAME} from {MODEL_URL} and pass --face-model PATH, "
        f"set face.model in node.yaml or {FACE_MODEL_ENV}"
    )


def process_info() -> ProcessInfo:
    """This process's memory and whether TensorFlow or MediaPipe is loaded (the kiosk's /api/state)."""
    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # not Linux
        rss = 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return ProcessInfo(
        os.getpid(),
        round(rss, 1),
        round(peak, 1),
        tensorflow_loaded="tensorflow" in sys.modules,
        mediapipe_loaded="mediapipe" in sys.modules,
    )


def retention_policy(config: NodeConfig) -> RetentionPolicy:
    r = config.retention
    return RetentionPolicy(r.max_age_days * DAY_S, r.max_bytes, r.thumbnail_max_age_days * DAY_S)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (main thread only); previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        log_from_signal_handler(
            log,
            "%s received: finishing the current frame and stopping",
            signal.Signals(signum).name,
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _start_kiosk(state: NodeState, config: NodeConfig, stop: threading.Event) -> Any:
    try:
        from edge_node.kiosk import start_kiosk  # type: ignore[attr-defined]
    except ImportError as exc:
        log.error("kiosk enabled but edge_node.kiosk is not available (%s); running headless", exc)
        return None
    return start_kiosk(state, config.kiosk, config.db, stop)


def _stage_a(
    source: FrameSource, pipeline: Pipeline, stop: threading.Event, overlap: bool
) -> Iterator[Detected]:
    """Decoded frames with their faces: in a thread one frame ahead, or in this thread."""
    if overlap:
        return detected_frames(source, pipeline, stop)
    return (pipeline.detect(frame) for frame in source.frames(stop))


def _publish_counts(state: NodeState, c: Counters, retention_deleted: int) -> None:
    state.set_capture_counts(
        frames=c.frames,
        face_frames=c.face_frames,
        clips_saved=len(c.saved),
        clips_discarded=c.discarded,
        retention_deleted=retention_deleted,
    )


def run_node(
    config: NodeConfig,
    *,
    face_model: Path,
    stop: threading.Event | None = None,
    state: NodeState | None = None,
    source: FrameSource | None = None,
    kiosk: bool = False,
    max_frames: int | None = None,
    duration_s: float | None = None,
    serve_page: bool = True,
) -> RunSummary:
    """Run the capture loop until the source ends, a limit is reached, or ``stop`` is set; with
    ``kiosk`` (preview frames) and ``serve_page``, serve the kiosk page meanwhile."""
    stop = stop or threading.Event()
    state = state or NodeState()
    source = source or open_source(config.camera)
    summary = RunSummary()
    with ClipStore(config.db) as store:
        deleted = len(store.apply_retention(retention_policy(config), time.time()).delete)
        pipeline, cropper = _open_pipeline(config, face_model, store, state, kiosk)
        log.info(
            "node %s: source %s, bundle %s (%s), db %s",
            config.node_id,
            source.name,
            pipeline.models.bundle.bundle_id[:12],
            pipeline.models.bundle.manifest.head_version,
            config.db,
        )
        t_start = time.monotonic()  # after loading: fps and --duration count the loop only
        state.update(process=process_info(), notice=kiosk_notice(config))
        handle = None
        try:
            if kiosk and serve_page:
                handle = _start_kiosk(state, config, stop)
            limits = _Limits(max_frames, duration_s, t_start)
            deleted = _frame_loop(config, source, pipeline, store, state, stop, limits, deleted)
            summary.stopped = stop.is_set()
            pipeline.finish()
            _publish_counts(state, pipeline.counters, deleted)
        finally:
            if handle is not None:
                handle.stop()
            pipeline.close()
            cropper.close()
    _summarize(summary, pipeline.counters, source, t_start)
    return summary


def _open_pipeline(
    config: NodeConfig, face_model: Path, store: ClipStore, state: NodeState, kiosk: bool
) -> tuple[Pipeline, FaceCropper]:
    models = Models.load(config.bundle)
    f = config.face
    cropper = FaceCropper.from_path(
        face_model, f.min_confidence, f.margin, f.select, f.detect_every, f.detector
    )
    options = PipelineOptions(
        policy=SegmentPolicy(config.clips.gap_s, config.clips.max_s, config.clips.min_frames),
        preview=kiosk,
        preview_fps=config.kiosk.preview_fps,
        thumbnails=config.retention.thumbnails_per_clip if config.retention.thumbnails else 0,
        forget_pause_s=config.forget.pause_s,
        display=config.kiosk.display,
        teacher_every=config.teacher.every,
    )
    return Pipeline(config.bundle, cropper, store, state, options, models), cropper


@dataclass(frozen=True)
class _Limits:
    max_frames: int | None
    duration_s: float | None
    t_start: float

    def reached(self, frames: int, now: float) -> bool:
        return (self.max_frames is not None and frames >= self.max_frames) or (
            self.duration_s is not None and now - self.t_start >= self.duration_s
        )


def _frame_loop(
    config: NodeConfig,
    source: FrameSource,
    pipeline: Pipeline,
    store: ClipStore,
    state: NodeState,
    stop: threading.Event,
    limits: _Limits,
    deleted: int,
) -> int:
    """Every frame through the pipeline; process info each second, retention on its timer.
    Returns the clips retention has deleted so far."""
    next_retention = limits.t_start + config.retention.check_every_s
    next_process = limits.t_start
    for detected in _stage_a(source, pipeline, stop, config.overlap_stages):
        pipeline.infer(detected)
        now = time.monotonic()
        if now >= next_process:
            next_process = now + 1.0
            state.update(process=process_info())
            _publish_counts(state, pipeline.counters, deleted)
        if now >= next_retention:
            next_retention = now + config.retention.check_every_s
            deleted += len(store.apply_retention(retention_policy(config), time.time()).delete)
            pipeline.retry_recording()
        if limits.reached(pipeline.counters.frames, now):
            break
    return deleted


def _summarize(summary: RunSummary, c: Counters, source: FrameSource, t_start: float) -> None:
    summary.frames, summary.face_frames = c.frames, c.face_frames
    summary.clips_saved, summary.clips_discarded = list(c.saved), c.discarded
    summary.bundle_reloads, summary.corrupt_frames = c.reloads, source.corrupt
    summary.seconds = time.monotonic() - t_start
    log.info(
        "stopped after %s frames (%.1f fps): %s clips saved, %s discarded, %s corrupt frames",
        summary.frames,
        summary.fps,
        len(summary.clips_saved),
        summary.clips_discarded,
        summary.corrupt_frames,
    )


def serve(
    config: NodeConfig,
    *,
    face_model: Path,
    stop: threading.Event,
    kiosk: bool = False,
    max_frames: int | None = None,
    duration_s: float | None = None,
    keep_running: bool = False,
) -> RunSummary:
    """The whole node: the capture loop plus, when configured, the personalizer thread.

    The personalizer adapts v in the nightly window (or per federation round) and talks to the
    aggregator; it shares the capture loop's state and stop event. The kiosk page lives as long
    as the node: with ``keep_running`` both stay up after a file source ends, until ``stop``."""
    from edge_node.personalization.loop import Personalizer

    _check_federation(config)
    state = NodeState()
    ops = start_node_metrics(config, state) if config.metrics.enabled else None
    personalizer = None
    if config.adaptation.enabled or config.federation.enabled:
        personalizer = Personalizer(config, state, stop)
        personalizer.start()
    page = None
    try:
        page = _start_kiosk(state, config, stop) if kiosk else None
        summary = run_node(
            config,
            face_model=face_model,
            stop=stop,
            state=state,
            kiosk=kiosk,
            max_frames=max_frames,
            duration_s=duration_s,
            serve_page=False,
        )
        if keep_running and not summary.stopped:
            _stay_up(stop, personalizer)
    finally:
        stop.set()
        if page is not None:
            page.stop()
        if personalizer is not None:
            personalizer.join(timeout=60)
        if ops is not None:
            ops.stop()
    return summary


def _stay_up(stop: threading.Event, personalizer: Any) -> None:
    """After the source ended (``--keep-running``): until ``stop``, or the personalizer fails."""
    log.info("source ended; staying up for personalization and federation until stopped")
    while not stop.wait(1.0):
        if personalizer is not None and personalizer.error is not None:
            raise UserError(f"personalizer failed: {personalizer.error}")


def _check_federation(config: NodeConfig) -> None:
    fed = config.federation
    if fed.enabled and (fed.fleet_public_key is None or not Path(fed.fleet_public_key).is_file()):
        raise UserError(
            "federation.enabled needs federation.fleet_public_key, the fleet's Ed25519 public key "
            f"(got {fed.fleet_public_key}); `python -m provisioning add-node` writes it"
        )
