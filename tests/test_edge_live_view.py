"""What the kiosk sees of a frame (edge_node.live_view) and how a clip keeps its thumbnails
(edge_node.clip_buffer.spread): pure parts of the frame loop, on a real NodeState."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edge_node.clip_buffer import spread
from edge_node.live_view import LiveView, Shown
from edge_node.sources import Frame
from edge_node.state import NodeState
from vfer.faces import Box, FaceCrop

CLASSES = ("happiness", "sadness", "anger", "neutral")


def frame(width: int = 1280, height: int = 720) -> Frame:
    return Frame(np.zeros((height, width, 3), np.uint8), 0.0, 0)


def face() -> FaceCrop:
    return FaceCrop(np.zeros((224, 224, 3), np.uint8), Box(200, 100, 300, 300), 0.9)


def test_a_face_frame_shows_the_display_choice_scaled_to_the_preview() -> None:
    state = NodeState()
    view = LiveView(state, "ifer", preview=False, preview_fps=15)
    g = np.array([0.1, 0.2, 0.6, 0.1], np.float32)
    v = np.array([0.7, 0.1, 0.1, 0.1], np.float32)
    view.publish(Shown(frame(), face(), CLASSES, False, ifer=g, vfer=v, in_clip=True))
    snap = state.snapshot()
    assert snap.emotion == "anger" and snap.display == "ifer"  # g shown, not v
    assert snap.display_probs == {"happiness": 0.1, "sadness": 0.2, "anger": 0.6, "neutral": 0.1}
    assert snap.vfer_probs["happiness"] == 0.7
    assert snap.frame_size == (640, 360) and snap.face_box == (100, 50, 150, 150)  # half size
    assert snap.face_present and not snap.recording


def test_between_face_frames_an_open_clip_keeps_its_v_and_a_preview_waits_for_a_viewer() -> None:
    state = NodeState()
    view = LiveView(state, "vfer", preview=True, preview_fps=1000)
    v = np.array([0.1, 0.1, 0.1, 0.7], np.float32)
    view.publish(Shown(frame(320, 240), face(), CLASSES, False, vfer=v, in_clip=True))
    assert state.preview() == (0, None)  # nobody watched: nothing encoded; now somebody does
    view.publish(Shown(frame(320, 240), None, CLASSES, False, in_clip=True, recording=True))
    snap = state.snapshot()
    assert snap.emotion is None and not snap.face_present and snap.recording
    assert snap.vfer_probs["neutral"] == 0.7  # the clip's v stays up
    seq, jpeg = state.preview()
    assert seq == 1 and jpeg is not None and jpeg[:2] == b"\xff\xd8"
    assert snap.frame_size == (320, 240)  # narrow frames are sent as they are
    view.publish(Shown(frame(320, 240), None, CLASSES, False))
    assert state.snapshot().vfer_probs == {}  # no clip: nothing to keep


@given(st.integers(0, 40), st.integers(0, 8))
def test_spread_keeps_at_most_n_evenly_with_both_ends(count: int, n: int) -> None:
    items = [bytes([i]) for i in range(count)]
    kept = spread(items, n)
    assert len(kept) == min(count, n)
    assert list(kept) == sorted(set(kept))  # in order, none twice
    if kept and n > 1:
        assert kept[0] == items[0] and kept[-1] == items[-1]
