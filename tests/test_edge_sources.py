"""Frame sources: a Picamera2 stand-in, OpenCV cameras that are not there, files and folders."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_node.config import CameraConfig
from edge_node.sources import (
    Backoff,
    FolderSource,
    OpenCVSource,
    Picamera2Source,
    SourceError,
    VideoFileSource,
    open_source,
    source_kind,
)
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import FakePicamera2


def bgr(value: int, h: int = 48, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value  # blue channel
    return img


def write_video(path: Path, n: int, fps: float = 20.0) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(n):
        out.write(bgr(10 * i % 250))
    out.release()
    return path


def test_picamera2_stand_in_configures_starts_and_reconnects() -> None:
    cams: list[FakePicamera2] = []
    feeds = [[bgr(200), np.zeros((4, 4), np.uint8), bgr(201), None], [bgr(202)]]

    def factory() -> FakePicamera2:
        cams.append(FakePicamera2(feeds[len(cams)] if len(cams) < len(feeds) else []))
        return cams[-1]

    src = Picamera2Source(640, 480, 15.0, Backoff(0.001, 0.002, attempts=3), factory=factory)
    with pytest.raises(SourceError, match="giving up after 3 attempts"):
        got = []
        for frame in src.frames(threading.Event()):
            got.append(frame)
    assert [f.rgb[0, 0, 2] for f in got] == [200, 201, 202]  # BGR in memory -> RGB out
    assert src.corrupt == 1 and [f.index for f in got] == [0, 1, 2]
    assert cams[0].config == {
        "main": {"size": (640, 480), "format": "RGB888"},
        "controls": {"FrameRate": 15.0},
    }
    assert cams[0].calls[:3] == ["create_video_configuration", "configure", "start"]
    # a good frame resets the count: 2 cameras delivered, then 3 failed opens in a row
    assert all(c.closed for c in cams) and len(cams) == 4


def test_picamera2_stops_on_the_event() -> None:
    stop = threading.Event()
    cam = FakePicamera2([bgr(1)] * 100)
    src = Picamera2Source(64, 48, 30.0, factory=lambda: cam)
    n = 0
    for _ in src.frames(stop):
        n += 1
        if n == 5:
            stop.set()
    assert n == 5 and cam.closed


def test_missing_picamera2_is_a_clear_error() -> None:
    """picamera2 exists only on Raspberry Pi OS; elsewhere opening it says so."""
    src = Picamera2Source(64, 48, 30.0, Backoff(0.001, 0.001, attempts=1))
    with pytest.raises(SourceError, match="picamera2 is not installed"):
        next(src.frames(threading.Event()))


def test_a_missing_webcam_retries_with_backoff_then_gives_up() -> None:
    assert [Backoff(0.5, 4).delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    src = OpenCVSource(97, 640, 480, 15, Backoff(0.01, 0.02, attempts=3))
    t0 = time.monotonic()
    with pytest.raises(
        SourceError, match=r"camera 97: giving up after 3 attempts: cannot open camera 97"
    ):
        next(src.frames(threading.Event()))
    assert time.monotonic() - t0 >= 0.03  # waited 0.01 + 0.02 between the attempts
    stop = threading.Event()
    stop.set()
    assert list(OpenCVSource(97, 64, 48, 15).frames(stop)) == []


def test_stream_urls_are_redacted_in_names() -> None:
    assert OpenCVSource("rtsp://user:pw@cam.local/s", 64, 48, 15).name == "rtsp://***@cam.local/s"


def test_video_file_fast_native_pacing_and_loop(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 10, fps=20.0)
    fast = VideoFileSource(video)
    frames = list(fast.frames(threading.Event()))
    assert len(frames) == 10 and frames[-1].t == pytest.approx(9 / 20)
    assert frames[0].rgb.shape == (48, 64, 3) and not any(f.cut for f in frames)
    t0 = time.monotonic()
    assert len(list(VideoFileSource(video, realtime=True).frames(threading.Event()))) == 10
    assert time.monotonic() - t0 >= 9 / 20 - 0.02  # paced at 20 fps
    stop = threading.Event()
    looped = []
    for f in VideoFileSource(video, loop=True).frames(stop):
        looped.append(f)
        if len(looped) == 25:
            stop.set()
    assert [f.index for f in looped if f.cut] == [10, 20]
    assert looped[10].t == pytest.approx(10 / 20)  # media time keeps growing across loops


def test_missing_and_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such video file"):
        VideoFileSource(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        VideoFileSource(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no video files"):
        FolderSource(tmp_path / "empty")


def test_folder_plays_each_video_as_its_own_scene(tmp_path: Path) -> None:
    write_video(tmp_path / "b.avi", 4)
    write_video(tmp_path / "a.avi", 3)
    (tmp_path / "c.mp4").write_bytes(b"broken")
    src = FolderSource(tmp_path)
    frames = list(src.frames(threading.Event()))
    assert len(frames) == 7 and [f.index for f in frames if f.cut] == [0, 3]
    assert all(b.t > a.t for a, b in itertools.pairwise(frames))
    assert src.corrupt == 1  # the broken file


def test_real_video_reads_every_frame_without_counting_the_missing_tail() -> None:
    src = VideoFileSource(require(paths.VIDEO / "no_face.mp4"))  # header says 98, stream holds 95
    assert len(list(src.frames(threading.Event()))) == 95 and src.corrupt == 0


def test_source_kind_guesses_from_the_form(tmp_path: Path) -> None:
    def kind(s: str) -> str:
        return source_kind(CameraConfig(source=s))

    assert [
        kind("picamera2"),
        kind("0"),
        kind("rtsp://x/y"),
        kind("http://x"),
        kind(str(tmp_path)),
        kind("a.mp4"),
    ] == ["picamera2", "opencv", "opencv", "opencv", "folder", "file"]
    with pytest.raises(SourceError, match="no such video file"):
        open_source(CameraConfig(source=str(tmp_path / "x.mp4")))
