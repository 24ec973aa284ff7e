"""vfer.video: real clips from ../shared/data, still images, frame folders, and broken inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import require
from tests.support import paths
from vfer.video import FrameReader, VideoError, frame_files, read_frames, source_kind


def test_real_crema_d_flv_decodes_to_rgb_frames() -> None:
    clip = read_frames(require(paths.CREMA_D / "VideoFlash" / "1001_DFA_SAD_XX.flv"))
    assert (len(clip), clip.kind, clip.skipped) == (60, "video", 0)
    assert clip.fps == pytest.approx(29.97, abs=0.01)
    frames = clip.array()
    assert frames.shape == (60, 360, 480, 3) and frames.dtype == np.uint8


def test_hevc_mov_and_max_frames() -> None:
    clip = read_frames(require(paths.VIDEO / "face_noface.mov"), max_frames=10)
    assert len(clip) == 10 and clip.frames[0].shape == (540, 960, 3)


def test_channel_order_is_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((32, 48, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    clip = read_frames(tmp_path / "red.png")
    assert (clip.kind, clip.fps, len(clip)) == ("image", None, 1)
    assert clip.frames[0][0, 0].tolist() == [200, 0, 0]


def test_still_image_grey_and_alpha(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g.png"), np.full((8, 8), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 4), 50, np.uint8))
    assert read_frames(tmp_path / "g.png").frames[0].shape == (8, 8, 3)
    assert read_frames(tmp_path / "a.png").frames[0][0, 0].tolist() == [50, 50, 50]


def test_frame_folder_in_natural_order_with_a_corrupt_frame(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10):
        cv2.imwrite(str(folder / f"frame{i}.jpg"), np.full((16, 16, 3), i * 20, np.uint8))
    (folder / "frame3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in frame_files(folder)] == [
        "frame1.jpg",
        "frame2.jpg",
        "frame3.jpg",
        "frame10.jpg",
    ]
    clip = read_frames(folder, fps=25)
    assert (clip.kind, clip.fps, clip.skipped, len(clip)) == ("folder", 25.0, 1, 3)
    means = [int(f.mean()) for f in clip.frames]
    assert means == sorted(means) and abs(means[-1] - 200) < 5


def test_written_mp4_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15.0, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    with FrameReader.open(path) as reader:
        means = [float(f.mean()) for f in reader]
        assert (reader.count, reader.skipped, reader.fps) == (12, 0, 15.0)
    assert np.allclose(means, [i * 20 for i in range(12)], atol=4)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such video, image or frame folder"):
        read_frames(tmp_path / "absent.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoError, match=r"junk\.mp4"):
        read_frames(tmp_path / "junk.mp4")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(VideoError, match="cannot decode image"):
        read_frames(tmp_path / "bad.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="holds no image files"):
        read_frames(tmp_path / "empty")
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "0.jpg").write_bytes(b"x")
    with pytest.raises(VideoError, match="no decodable frames"):
        read_frames(tmp_path / "allbad")
    with pytest.raises(ValueError, match="fps"):
        FrameReader.open(tmp_path / "bad.png", fps=0)
    assert source_kind(tmp_path / "empty") == "folder"
