"""The teacher on the node: per-frame probabilities stored with the frame, and what the kiosk shows.

WolfgangLanger_Pexels.mp4 (472 frames, 23.98 fps): hand-labelled by looking at frames extracted
as PNG every 20 frames: frames 20-130 she grimaces/cries (eyes shut, hand at the mouth), 160-220
she looks up with a hand at the mouth, from about 260 to the end she smiles broadly (teeth showing
at 260, 300-460). The smiling range asserted is 290-460.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_node.pipeline import Pipeline, PipelineOptions
from edge_node.segmenter import SegmentPolicy
from edge_node.sources import VideoFileSource
from edge_node.state import NodeState
from edge_node.store import ClipStore
from tests.support import paths
from tests.support.bundles import cut_backbone, random_head
from vfer.bundle import write_bundle
from vfer.classes import EMOTIONS_4
from vfer.faces import FaceCropper
from vfer.heads_spec import ifer_spec, vfer_spec

pytestmark = pytest.mark.slow

VIDEO = paths.VIDEO / "WolfgangLanger_Pexels.mp4"
SMILING = range(290, 461)


TEACHERS = {"fer2013": paths.TEACHER, "mobilefacenet": paths.TEACHER_MOBILEFACENET}
#: the share of smiling face frames the (steady) display must call happiness, per teacher kind:
#: issue 22's bar for the recommended teacher; the FER2013 one is held to what it always met
BAR = {"fer2013": 0.5, "mobilefacenet": 0.95}


@pytest.fixture(scope="module", params=list(TEACHERS))
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    kind = request.param
    for need in (TEACHERS[kind], paths.FACE_MODEL, VIDEO):
        if not need.is_file():
            pytest.skip(f"{need} absent")
    root = tmp_path_factory.mktemp("teach")
    bundle = write_bundle(
        root / "bundle",
        classes=EMOTIONS_4,
        backbone=cut_backbone(root / "backbone.tflite"),
        ifer_weights=random_head(ifer_spec(4), 1),
        vfer_weights=random_head(vfer_spec(4), 2),
        head_version="central-r0",
        teacher=TEACHERS[kind],
    )
    state = NodeState()
    shown: dict[int, tuple[str | None, str]] = {}
    store = ClipStore(root / "n.db")
    policy = SegmentPolicy(gap_s=1.0, max_s=10.0, min_frames=8)
    with FaceCropper.from_path(paths.FACE_MODEL) as cropper:
        pipe = Pipeline(bundle.path, cropper, store, state, PipelineOptions(policy=policy))
        for frame in VideoFileSource(VIDEO).frames(threading.Event()):
            pipe.process(frame)
            snap = state.snapshot()
            shown[frame.index] = (snap.emotion, snap.display)
        pipe.finish()
        pipe.close()
    return {"shown": shown, "store": store, "kind": kind}


def test_teacher_probabilities_are_stored_with_each_frame(run: dict[str, object]) -> None:
    store = run["store"]
    assert isinstance(store, ClipStore)
    rows = store.clips()
    assert rows
    for row in rows:
        t = store.frame_teacher(row.id)
        assert t is not None and t.shape == (row.frame_count, 4)
        np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-5)
        assert not np.allclose(t, store.frame_ifer(row.id))


def test_the_steady_default_display_says_happiness_where_she_smiles(run: dict[str, object]) -> None:
    shown = run["shown"]
    assert isinstance(shown, dict)
    smiling = [shown[i] for i in SMILING if shown.get(i, (None, ""))[0] is not None]
    assert len(smiling) > 0.9 * len(SMILING)  # a face on nearly every frame
    assert {d for _, d in smiling} == {"teacher"}
    happy = sum(e == "happiness" for e, _ in smiling) / len(smiling)
    print(f"{run['kind']}: happiness on {happy:.1%} of {len(smiling)} smiling frames")
    assert happy >= BAR[str(run["kind"])], f"happiness on {happy:.0%} of the smiling frames"
