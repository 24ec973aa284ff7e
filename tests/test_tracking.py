"""Issue 15, item 2: detect every N frames and follow the box in between (keypoints with it).

The follower against a known shift (the oracle), then the real detector on the real videos: the
followed boxes against detection on every frame (IoU), g's per-frame predictions (agreement), and
the clip boundaries of the face-then-no-face video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles
from tests.support.tracking import frames, iou
from vfer.backbone import Backbone
from vfer.faces import FaceCropper
from vfer.runtime import IferHead
from vfer.tracking import BoxFollower, move_keypoints


def textured(seed: int, h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (12, -8), (-30, 20), (40, 36)])
def test_follower_finds_a_shifted_face_patch(dx: int, dy: int) -> None:
    frame = textured(1)
    box = (200, 150, 160, 160)
    follower = BoxFollower(search=0.5, min_score=0.6)
    follower.anchor(frame, box)
    moved = np.roll(frame, (dy, dx), axis=(0, 1))
    found = follower.follow(moved)
    assert found is not None and found.score > 0.8  # sub-template-pixel shifts blur the match
    step = 160 / 32  # one template pixel, in frame pixels
    assert abs(found.x - (200 + dx)) <= step and abs(found.y - (150 + dy)) <= step


def test_follower_loses_a_face_that_is_gone() -> None:
    frame = textured(2)
    follower = BoxFollower(min_score=0.6)
    follower.anchor(frame, (200, 150, 160, 160))
    assert follower.follow(textured(3)) is None  # another scene entirely
    follower.anchor(frame, (200, 150, 160, 160))
    flat = frame.copy()
    flat[50:400, 100:500] = 128
    assert follower.follow(flat) is None
    with pytest.raises(ValueError):
        BoxFollower(search=0)


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_following_every_4th_frame_keeps_boxes_and_g_on_the_real_videos(
    edge_bundles: EdgeBundles,
) -> None:
    videos = [
        require(paths.VIDEO / "face_noface.mov"),
        require(paths.VIDEO / "single_face.mp4"),
        require(paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv"),
        require(paths.CREMA_D / "VideoFlash" / "1001_DFA_ANG_XX.flv"),
    ]
    f = Backbone.from_path(edge_bundles.a / "backbone.tflite", 2)
    g = IferHead.from_path(edge_bundles.a / "ifer_head.tflite")
    ious, agree, presence_same, n = [], 0, 0, 0
    with (
        FaceCropper.from_path(edge_bundles.face_model) as every,
        FaceCropper.from_path(edge_bundles.face_model, detect_every=4) as tracked,
    ):
        for video in videos:
            every.reset()
            tracked.reset()
            for rgb in frames(video):
                a, b = every.crop(rgb), tracked.crop(rgb)
                n += 1
                presence_same += (a is None) == (b is None)
                if a is None or b is None:
                    continue
                ious.append(iou(a.box, b.box))
                ga = int(np.argmax(g.predict_frame(f.embed(a.image))))
                agree += ga == int(np.argmax(g.predict_frame(f.embed(b.image))))
        assert tracked.detections < 0.6 * every.detections  # it did follow
    assert presence_same == n  # a face is found on exactly the same frames
    assert float(np.mean(ious)) > 0.95 and float(np.percentile(ious, 5)) > 0.85
    assert agree / len(ious) >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("video", ["face_noface.mov", "no_face.mp4"])
def test_clip_boundaries_are_those_of_detection_on_every_frame(
    edge_bundles: EdgeBundles, tmp_path: Path, video: str
) -> None:
    from edge_node.config import load_node_config
    from edge_node.service import run_node
    from edge_node.sources import VideoFileSource
    from edge_node.store import ClipStore

    got = []
    for n in (1, 4):
        db = tmp_path / f"n{n}.db"
        config = load_node_config(
            None,
            **{"bundle": str(edge_bundles.a), "db": str(db), "kiosk.enabled": False},
            **{"face.detect_every": n},
        )
        source = VideoFileSource(require(paths.VIDEO / video))
        summary = run_node(config, face_model=edge_bundles.face_model, source=source)
        with ClipStore(db) as store:
            clips = [
                (c.frame_count, c.face_ratio, round(c.ended_at - c.started_at, 3))
                for c in store.clips()
            ]
        got.append((summary.face_frames, clips))
    assert got[0] == got[1]
    if video == "face_noface.mov":
        assert got[0][1][0][:2] == (72, 1.0)


@given(
    st.tuples(
        st.integers(-50, 600), st.integers(-50, 400), st.integers(8, 300), st.integers(8, 300)
    ),
    st.tuples(
        st.integers(-50, 600), st.integers(-50, 400), st.integers(8, 300), st.integers(8, 300)
    ),
    st.lists(st.tuples(st.floats(-100, 900), st.floats(-100, 700)), min_size=1, max_size=6),
)
def test_keypoints_keep_their_place_in_the_box(
    before: tuple[int, int, int, int],
    after: tuple[int, int, int, int],
    points: list[tuple[float, float]],
) -> None:
    moved = move_keypoints(points, before, after)
    np.testing.assert_allclose(move_keypoints(points, before, before), points, atol=1e-9)
    back = move_keypoints(moved, after, before)
    np.testing.assert_allclose(back, points, atol=1e-6)
    bx, by, bw, bh = before
    ax, ay, aw, ah = after
    for (x, y), (mx, my) in zip(points, moved, strict=True):  # same relative place
        assert (mx - ax) / aw == pytest.approx((x - bx) / bw, abs=1e-9)
        assert (my - ay) / ah == pytest.approx((y - by) / bh, abs=1e-9)
    with pytest.raises(ValueError):
        move_keypoints(points, (0, 0, 0, 10), after)


@pytest.mark.slow
def test_followed_faces_carry_their_keypoints_with_the_box() -> None:
    """Between detections the keypoints move with the followed box, and stay near the detector's."""
    model = require(paths.FACE_MODEL)
    followed = 0
    errors = []
    with (
        FaceCropper.from_path(model) as every,
        FaceCropper.from_path(model, detect_every=4) as tracked,
    ):
        for rgb in frames(require(paths.VIDEO / "WolfgangLanger_Pexels.mp4")):
            a, b = every.crop(rgb), tracked.crop(rgb)
            if a is None or b is None:
                continue
            assert len(b.keypoints) == 6
            if not b.followed:
                anchor = b
                assert b.keypoints == a.keypoints  # detected: the detector's own
                continue
            followed += 1
            dx, dy = b.box.x - anchor.box.x, b.box.y - anchor.box.y
            shifted = np.add(anchor.keypoints, (dx, dy))
            np.testing.assert_allclose(b.keypoints, shifted, atol=1e-6)
            errors.append(np.abs(np.subtract(b.keypoints, a.keypoints)).max() / a.box.width)
    assert followed > 200
    print(f"followed keypoints vs detected: median {np.median(errors):.3f} of the box width")
    assert np.median(errors) < 0.1  # a followed eye stays on the eye
