"""The label on screen stays steady (edge_node.display.steady_step, a pure function), the kiosk
publishes it, and the teacher's cadence (edge_node.teacher_stage.TeacherCadence) holds its result
between runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.display import Steady, label_changes, steady_step
from edge_node.live_view import LiveView, Shown
from edge_node.sources import Frame
from edge_node.state import NodeState
from edge_node.teacher_stage import TeacherCadence
from vfer.faces import Box, FaceCrop

CLASSES = ("happiness", "sadness", "anger", "neutral")
A, B = np.array([0.55, 0.45]), np.array([0.45, 0.55])


def run(frames: list[np.ndarray | None], dt: float = 1 / 24, **kw: float) -> list[int | None]:
    s, out = Steady(), []
    for i, p in enumerate(frames):
        s = steady_step(s, p, i * dt, **kw)
        out.append(s.label if p is not None else None)
    return out


def test_alternating_near_ties_flicker_raw_and_stay_put_smoothed() -> None:
    frames: list[np.ndarray | None] = [A, B] * 24
    assert label_changes(run(frames, tau_s=0, margin=0)) == 47  # the frame's own argmax
    assert label_changes(run(frames)) == 0


def test_a_real_change_of_expression_shows_within_the_time_constant() -> None:
    happy, sad = np.array([0.9, 0.1]), np.array([0.1, 0.9])
    labels = run([happy] * 24 + [sad] * 24)
    assert labels[:24] == [0] * 24 and labels[-1] == 1
    switched = labels.index(1) - 24
    assert 1 <= switched <= 24, switched  # within the time constant (1 s) at 24 fps
    assert label_changes(labels) == 1


def test_hysteresis_holds_the_label_until_the_new_leader_is_clearly_ahead() -> None:
    s = steady_step(Steady(), np.array([0.6, 0.4]), 0.0, tau_s=0, margin=0.1)
    s = steady_step(s, np.array([0.46, 0.54]), 0.1, tau_s=0, margin=0.1)
    assert s.label == 0  # 0.54 - 0.46 is not more than 0.1
    s = steady_step(s, np.array([0.4, 0.6]), 0.2, tau_s=0, margin=0.1)
    assert s.label == 1


def test_frames_without_a_face_keep_the_state_until_it_is_forgotten() -> None:
    s = steady_step(Steady(), np.array([0.9, 0.1]), 0.0)
    assert steady_step(s, None, 0.5) is s
    near = steady_step(s, np.array([0.1, 0.9]), 0.1, forget_s=1.0)
    assert near.label == 0  # averaged in: the same visitor
    later = steady_step(s, np.array([0.1, 0.9]), 2.0, forget_s=1.0)
    assert later.label == 1 and np.allclose(later.probs, [0.1, 0.9])  # a new visitor
    back = steady_step(s, np.array([0.1, 0.9]), -1.0)
    assert back.label == 1  # the clock went back (a loop): afresh


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="tau_s"):
        steady_step(Steady(), A, 0.0, tau_s=-1)
    with pytest.raises(ValueError, match="margin"):
        steady_step(Steady(), A, 0.0, margin=1.0)


@given(st.lists(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), min_size=1, max_size=60))
def test_smoothing_never_changes_the_label_more_often_than_the_frames_do(rows: list) -> None:
    frames: list[np.ndarray | None] = [np.asarray(r) / np.sum(r) for r in rows]
    smoothed = run(frames)
    assert label_changes(smoothed) <= label_changes(run(frames, tau_s=0, margin=0))
    last = steady_step(Steady(), frames[0], 0.0)
    for i, p in enumerate(frames[1:], start=1):
        last = steady_step(last, p, i / 24)
        assert last.probs is not None and np.isclose(last.probs.sum(), 1.0)


def test_the_kiosk_publishes_the_steady_label_and_its_average() -> None:
    state = NodeState()
    view = LiveView(state, "ifer", preview=False, preview_fps=15)
    face = FaceCrop(np.zeros((224, 224, 3), np.uint8), Box(10, 10, 50, 50), 0.9)
    seen = []
    for i in range(24):
        g = np.array([0.4, 0.1, 0.45, 0.05] if i % 2 else [0.45, 0.1, 0.4, 0.05], np.float32)
        frame = Frame(np.zeros((120, 160, 3), np.uint8), i / 24, i)
        view.publish(Shown(frame, face, CLASSES, False, ifer=g))
        seen.append(state.snapshot().emotion)
    assert set(seen) == {"happiness"}  # the raw argmax alternates every frame
    probs = state.snapshot().display_probs
    assert 0.4 < probs["happiness"] < 0.45 and 0.4 < probs["anger"] < 0.45


class Counting:
    """A stand-in teacher that counts its runs (the cadence's own logic is what is tested)."""

    classes = CLASSES
    kind = None
    path = Path("counting")

    def __init__(self) -> None:
        self.calls = 0

    def predict_face(self, frame: np.ndarray, face: FaceCrop) -> np.ndarray:
        self.calls += 1
        return np.full(4, float(self.calls))


def test_the_cadence_runs_every_n_frames_of_a_face_and_afresh_after_a_gap_or_cut() -> None:
    t = Counting()
    cadence = TeacherCadence(t, every=4)  # type: ignore[arg-type]
    face = FaceCrop(np.zeros((224, 224, 3), np.uint8), Box(10, 10, 50, 50), 0.9)
    rgb = np.zeros((8, 8, 3), np.uint8)
    got = [cadence(rgb, face, i)[0] for i in range(9)]
    assert got == [1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert cadence(rgb, face, 11)[0] == 4  # frames 9-10 had no face: a new face, run at once
    assert cadence(rgb, face, 12, cut=True)[0] == 5  # another file
    assert cadence.runs == 5
    with pytest.raises(ValueError, match=r"teacher\.every"):
        TeacherCadence(t, every=0)  # type: ignore[arg-type]
