"""Frames from a path: a video file, a still image, or a folder of frames in order -> RGB uint8.

Shared by training (corpora ship all three) and the edge node. Missing or unreadable inputs raise
a clear error; a corrupt frame in the middle of a video or an unreadable file in a frame folder is
skipped and counted, never silently dropped::

    with FrameReader.open("clip.mp4") as reader:
        for rgb in reader:
            ...
        print(reader.fps, reader.skipped)

    clip = read_frames("frames_dir/", fps=30)  # Frames(frames=[...], fps=30.0, skipped=0, ...)
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
#: What the node's folder source and the lab take for a video file.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".flv", ".webm", ".m4v", ".mpg"})
#: Consecutive undecodable frames after which a video is treated as ended.
MAX_CONSECUTIVE_FAILURES = 25

Kind = Literal["video", "image", "folder"]


class VideoError(ValueError):
    """The path exists but holds no decodable frames (or is not a video, image or frame folder)."""


def source_kind(path: str | os.PathLike[str]) -> Kind:
    """What ``path`` is: a folder of frames, a still image (by suffix), or a video file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such video, image or frame folder: {p}")
    if p.is_dir():
        return "folder"
    return "image" if p.suffix.lower() in IMAGE_SUFFIXES else "video"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An OpenCV image (BGR, BGRA, grey, 8 or 16 bit) as contiguous RGB uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise VideoError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One still image as RGB uint8; ``VideoError`` if it cannot be decoded."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such image: {p}")
    data = np.fromfile(p, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise VideoError(f"cannot decode image {p}")
    return to_rgb(image)


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files in a folder in frame order (natural sort: frame2 before frame10)."""
    files = [
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


class FrameReader:
    """Iterate over a source's frames once; ``fps``, ``skipped`` and ``count`` are known as you go.

    ``fps`` is the container's rate for videos, ``fps`` given to :meth:`open` for folders (a video's
    own rate wins unless it reports none), and None when unknown or for a still image.
    """

    def __init__(self, path: Path, kind: Kind, fps: float | None) -> None:
        self.path = path
        self.kind: Kind = kind
        self.fps = fps
        self.skipped = 0  # corrupt frames skipped in the middle of the source
        self.missing_tail = 0  # frames a video's header promised but its stream did not hold
        self.count = 0  # frames yielded so far
        self._cap: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        if kind == "video":
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                cap.release()
                raise VideoError(f"cannot open {path} as a video (unknown format or corrupt file)")
            self._cap = cap
            rate = cap.get(cv2.CAP_PROP_FPS)
            if rate and math.isfinite(rate) and 0 < rate < 1000:
                self.fps = float(rate)
        elif kind == "folder":
            self._files = frame_files(path)
            if not self._files:
                raise VideoError(
                    f"frame folder {path} holds no image files ({sorted(IMAGE_SUFFIXES)})"
                )
        else:
            self.fps = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], fps: float | None = None) -> FrameReader:
        """Open a video file, a still image or a folder of frames (``fps`` for folders)."""
        p = Path(path)
        if fps is not None and not (0 < fps < 1000):
            raise ValueError(f"fps must be in (0, 1000), got {fps}")
        return cls(p, source_kind(p), fps)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.kind == "image":
            yield from self._counted([read_image(self.path)])
        elif self.kind == "folder":
            yield from self._counted(self._folder())
        else:
            yield from self._counted(self._video())
        if self.count == 0:
            raise VideoError(f"{self.path} holds no decodable frames")

    def _counted(self, frames: Iterator[np.ndarray] | list[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            self.count += 1
            yield frame

    def _folder(self) -> Iterator[np.ndarray]:
        for file in self._files:
            try:
                yield read_image(file)
            except (VideoError, OSError) as exc:
                self.skipped += 1
                log.warning("skipping frame %s: %s", file.name, exc)

    def _video(self) -> Iterator[np.ndarray]:
        cap = self._cap
        if cap is None:
            raise ValueError(f"reader for {self.path} is closed; open a new one to read again")
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        failures = 0
        position = 0
        while True:
            ok, frame = cap.read()
            position += 1
            if ok and frame is not None and frame.size:
                self.skipped += failures  # failures followed by a good frame were corrupt frames
                failures = 0
                yield to_rgb(frame)
                continue
            failures += 1
            if position >= expected or failures >= MAX_CONSECUTIVE_FAILURES:
                break
        self.missing_tail = max(0, expected - self.count - self.skipped) if expected > 0 else 0
        if self.skipped or self.missing_tail:
            log.warning(
                "%s: %s corrupt frames skipped, %s missing at the end",
                self.path.name,
                self.skipped,
                self.missing_tail,
            )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Frames:
    """All frames of a source, RGB uint8 (H, W, 3) each."""

    frames: list[np.ndarray]
    fps: float | None
    skipped: int
    kind: Kind

    def __len__(self) -> int:
        return len(self.frames)

    def array(self) -> np.ndarray:
        """(T, H, W, 3); ``VideoError`` if the frames differ in size (a folder of mixed images)."""
        shapes = {f.shape for f in self.frames}
        if len(shapes) != 1:
            raise VideoError(f"frames differ in size: {sorted(shapes)}")
        return np.stack(self.frames)


def read_frames(
    path: str | os.PathLike[str], fps: float | None = None, max_frames: int | None = None
) -> Frames:
    """Read a whole source (at most ``max_frames``); see :class:`FrameReader`."""
    with FrameReader.open(path, fps=fps) as reader:
        frames = []
        for frame in reader:
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
        return Frames(frames, reader.fps, reader.skipped, reader.kind)
