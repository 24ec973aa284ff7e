"""Frame sources behind one small interface: ``frames(stop)`` yields RGB :class:`Frame`s.

* :class:`Picamera2Source`: the Pi camera (``picamera2`` is imported only when it opens; it needs
  libcamera, which exists only on Raspberry Pi OS).
* :class:`OpenCVSource`: a USB webcam index, an ``rtsp://`` or ``http(s)://`` stream; reconnects
  with exponential backoff when it cannot open or stops delivering.
* :class:`VideoFileSource`: a video file, optionally looping, paced at its native fps or as fast
  as possible.
* :class:`FolderSource`: every video file in a folder in name order (the Docker simulation).

Timestamps are the source's own clock: media time for files (so segmentation does not depend on
pacing), a monotonic clock for cameras. ``cut`` marks a discontinuity (next file, loop restart).
Undecodable or malformed frames are skipped and counted in ``corrupt``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_node.config import CameraConfig
from vfer.video import VIDEO_SUFFIXES, FrameReader, VideoError, to_rgb

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0


class SourceError(OSError):
    """A source that cannot deliver frames; the message says which and why."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    t: float  # seconds on the source's clock
    index: int  # frames delivered before this one
    cut: bool = False  # a discontinuity before this frame


@dataclass(frozen=True)
class Backoff:
    """Retry delays for live cameras: ``initial``, doubling up to ``maximum``."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    attempts: int = 0  # consecutive failures before giving up; 0: never give up

    def delay(self, failures: int) -> float:
        return float(min(self.maximum_s, self.initial_s * 2 ** max(0, failures - 1)))


def valid_frame(image: Any) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] in (3, 4)
        and image.shape[0] >= 16
        and image.shape[1] >= 16
    )


class FrameSource:
    """Base: ``frames(stop)`` yields until the source ends or ``stop`` is set."""

    name = "source"
    live = False

    def __init__(self) -> None:
        self.corrupt = 0
        self.delivered = 0

    def frames(self, stop: threading.Event) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _frame(self, rgb: np.ndarray, t: float, cut: bool = False) -> Frame:
        frame = Frame(rgb, t, self.delivered, cut)
        self.delivered += 1
        return frame


class Picamera2Source(FrameSource):
    """The Pi camera through Picamera2 (``factory`` builds the camera; tests pass a stand-in)."""

    live = True

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        backoff: Backoff = Backoff(),
        factory: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = "picamera2"
        self.size, self.fps, self.backoff = (width, height), fps, backoff
        self._factory = factory

    def _open(self) -> Any:
        factory = self._factory
        if factory is None:
            try:
                from picamera2 import Picamera2  # type: ignore[import-not-found]
            except ImportError as exc:
                raise SourceError(
                    "picamera2 is not installed (it ships with Raspberry Pi OS: "
                    "apt install python3-picamera2); use a webcam index, a URL or a file as source"
                ) from exc
            factory = Picamera2
        cam = factory()
        config = cam.create_video_configuration(
            main={"size": self.size, "format": "RGB888"}, controls={"FrameRate": self.fps}
        )
        cam.configure(config)
        cam.start()
        return cam

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        failures, t0 = 0, time.monotonic()
        while not stop.is_set():
            try:
                cam = self._open()
            except SourceError:
                raise
            except Exception as exc:  # libcamera raises RuntimeError and friends
                failures = _wait_retry(self.name, exc, failures, self.backoff, stop)
                continue
            try:
                while not stop.is_set():
                    array = cam.capture_array("main")
                    if not valid_frame(array):
                        self.corrupt += 1
                        continue
                    failures = 0
                    # "RGB888" is libcamera's name for B, G, R bytes in memory
                    yield self._frame(
                        cv2.cvtColor(array[:, :, :3], cv2.COLOR_BGR2RGB), time.monotonic() - t0
                    )
            except Exception as exc:
                failures = _wait_retry(self.name, exc, failures, self.backoff, stop)
            finally:
                _quietly(cam.stop)
                _quietly(cam.close)


class OpenCVSource(FrameSource):
    """A webcam index or a network stream through cv2.VideoCapture, reconnecting with backoff."""

    live = True

    def __init__(
        self, target: int | str, width: int, height: int, fps: float, backoff: Backoff = Backoff()
    ) -> None:
        super().__init__()
        self.target, self.backoff = target, backoff
        self.name = f"camera {target}" if isinstance(target, int) else _redact(str(target))
        self.size, self.fps = (width, height), fps

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}")
        if isinstance(self.target, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        return cap

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        failures, t0 = 0, time.monotonic()
        while not stop.is_set():
            try:
                cap = self._open()
            except SourceError as exc:
                failures = _wait_retry(self.name, exc, failures, self.backoff, stop)
                continue
            try:
                while not stop.is_set():
                    ok, bgr = cap.read()
                    if not ok:
                        raise SourceError(f"{self.name} stopped delivering frames")
                    if not valid_frame(bgr):
                        self.corrupt += 1
                        continue
                    failures = 0
                    yield self._frame(to_rgb(bgr), time.monotonic() - t0)
            except SourceError as exc:
                failures = _wait_retry(self.name, exc, failures, self.backoff, stop)
            finally:
                cap.release()


class VideoFileSource(FrameSource):
    """A video file; ``loop`` starts it over at the end, ``realtime`` paces it at its fps."""

    def __init__(self, path: str | Path, *, loop: bool = False, realtime: bool = False) -> None:
        super().__init__()
        self.path, self.loop, self.realtime = Path(path), loop, realtime
        self.name = str(self.path)
        self.fps = DEFAULT_FPS
        self.offset_t = 0.0  # media time where the current pass started
        self._check()

    def _check(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"no such video file: {self.path}")
        with self._reader() as reader:
            if next(iter(reader), None) is None:
                raise SourceError(f"{self.path} holds no decodable video frames")

    def _reader(self) -> FrameReader:
        """The one frame reader the lab uses too (vfer.video): decoding, colour, corrupt frames."""
        try:
            reader = FrameReader.open(self.path)
        except (VideoError, OSError) as exc:
            raise SourceError(str(exc)) from None
        self.fps = reader.fps or DEFAULT_FPS
        return reader

    def frames(self, stop: threading.Event, cut_first: bool = False) -> Iterator[Frame]:
        cut = cut_first
        while not stop.is_set():
            pace = _Pacer(self.realtime, stop)
            n = 0
            for rgb in self._decode(stop):
                t = self.offset_t + n / self.fps
                if not pace.wait(n / self.fps):
                    return
                yield self._frame(rgb, t, cut)
                cut, n = False, n + 1
            self.offset_t += max(n, 1) / self.fps
            if not self.loop:
                return
            cut = True

    def _decode(self, stop: threading.Event) -> Iterator[np.ndarray]:
        with self._reader() as reader:
            frames = iter(reader)
            while not stop.is_set():
                try:
                    rgb = next(frames)
                except StopIteration:
                    break
                except VideoError:  # no frame at all this pass (a file that changed)
                    break
                if valid_frame(rgb):
                    yield rgb
                else:
                    self.corrupt += 1
            self.corrupt += reader.skipped


class FolderSource(FrameSource):
    """Every video in a folder, in name order; each file starts a new clip."""

    def __init__(self, path: str | Path, *, loop: bool = False, realtime: bool = False) -> None:
        super().__init__()
        self.path, self.loop, self.realtime = Path(path), loop, realtime
        self.name = str(self.path)
        if not self.path.is_dir():
            raise SourceError(f"no such folder of clips: {self.path}")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not self.files:
            raise SourceError(
                f"{self.path} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})"
            )

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        offset, usable = 0.0, False
        while not stop.is_set():
            for path in self.files:
                try:
                    video = VideoFileSource(path, realtime=self.realtime)
                except SourceError as exc:
                    log.warning("skipping %s", exc)
                    self.corrupt += 1
                    continue
                usable = True
                video.offset_t = offset
                for frame in video.frames(stop, cut_first=True):
                    yield self._frame(frame.rgb, frame.t, frame.cut)
                self.corrupt += video.corrupt
                offset = video.offset_t
            if not usable:
                raise SourceError(f"no video in {self.path} could be decoded")
            if not self.loop:
                return


class _Pacer:
    """Sleeps (interruptibly) so that media time ``t`` is shown at wall time start + t."""

    def __init__(self, enabled: bool, stop: threading.Event) -> None:
        self.enabled, self.stop = enabled, stop
        self.start = time.monotonic()

    def wait(self, t: float) -> bool:
        if self.enabled:
            delay = self.start + t - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return False
        return not self.stop.is_set()


def _redact(url: str) -> str:
    """A stream URL without its password, for logs and errors."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _wait_retry(
    name: str, exc: BaseException, failures: int, backoff: Backoff, stop: threading.Event
) -> int:
    failures += 1
    if backoff.attempts and failures >= backoff.attempts:
        raise SourceError(f"{name}: giving up after {failures} attempts: {exc}") from exc
    delay = backoff.delay(failures)
    log.warning("%s: %s; retrying in %.1f s (attempt %s)", name, exc, delay, failures + 1)
    stop.wait(delay)
    return failures


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # closing a broken camera must not hide why it broke
        log.debug("ignored error while closing the camera", exc_info=True)


def source_kind(cfg: CameraConfig) -> str:
    """Which source ``camera.source`` means when ``camera.kind`` is 'auto'."""
    if cfg.kind != "auto":
        return cfg.kind
    s = cfg.source
    if s == "picamera2":
        return "picamera2"
    if s.isdigit() or s.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https"):
        return "opencv"
    return "folder" if Path(s).is_dir() else "file"


def open_source(cfg: CameraConfig) -> FrameSource:
    """The source ``cfg`` names; a clear :class:`SourceError` when it cannot exist."""
    kind = source_kind(cfg)
    backoff = Backoff(cfg.retry_initial_s, cfg.retry_max_s, cfg.retry_attempts)
    if kind == "picamera2":
        return Picamera2Source(cfg.width, cfg.height, cfg.fps, backoff)
    if kind == "opencv":
        target: int | str = int(cfg.source) if cfg.source.isdigit() else cfg.source
        return OpenCVSource(target, cfg.width, cfg.height, cfg.fps, backoff)
    if kind == "folder":
        return FolderSource(cfg.source, loop=cfg.loop, realtime=cfg.realtime)
    return VideoFileSource(cfg.source, loop=cfg.loop, realtime=cfg.realtime)
