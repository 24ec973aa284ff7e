"""Issue acceptance: ingest one synthetic subject and the 6 real CREMA-D clips, adapt, use the new bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_node.bundles import BundleHome
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.bundles import build_bundle
from vfer.bundle import VFER_STEP
from vfer.classes import EMOTIONS_6
from vfer.personalization_defaults import BALANCE
from vfer.selection import select_clips

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "FEDVFER_FACE_MODEL": str(paths.FACE_MODEL)}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_ingest_adapt_and_the_node_uses_the_new_bundle(tmp_path: Path) -> None:
    require(paths.FACE_MODEL)
    crema = require(paths.CREMA_D / "VideoFlash")
    synth = tmp_path / "synth"
    out = cli("training", "synth", "--subjects", "1", "--clips-per-class", "2", "--classes", "6",
              "--seed", "5", "--out", str(synth), "--dev-subjects", "0", "--test-subjects", "0")  # fmt: skip
    assert out.returncode == 0, out.stderr
    b = build_bundle(tmp_path / "node" / "bundle", EMOTIONS_6, seed=11).path
    db = tmp_path / "node" / "clips.db"
    for folder in (synth / "clips", crema):
        videos = folder if folder == crema else next(folder.iterdir())
        ing = cli(
            "edge_node", "ingest", "--video", str(videos), "--db", str(db), "--bundle", str(b)
        )
        assert ing.returncode == 0, ing.stderr
    with ClipStore(db) as store:
        rows = store.clips()
    assert len(rows) >= 6 + 12 - 2  # every real clip, nearly every synthetic one
    old_step = (b / VFER_STEP).read_bytes()

    # untrained heads are unsure of everything: a threshold of 0 lets the rule rank them all;
    # the safety gate (tests/test_gate_node.py) only reports here: this is the plumbing test
    ad = cli("edge_node", "adapt", "--db", str(db), "--bundle", str(b), "--p", "2", "--p-threshold", "0",
             "--min-clips", "2", "--gate-report", "--json")  # fmt: skip
    assert ad.returncode == 0, ad.stderr
    result = json.loads(ad.stdout)
    assert set(result["gate"]) == {"passed", "reasons", "notes", "metrics"}  # judged, not enforced
    # the node's default rule: the top P per class, class-balanced (vfer.personalization_defaults)
    expected = select_clips(np.stack([r.ifer_mean for r in rows]), 2, 0.0, BALANCE)
    assert result["selected_per_class"] == dict(
        zip(EMOTIONS_6, expected.per_class.tolist(), strict=True)
    )
    assert result["status"] == "adapted" and result["step_changed"]
    active = BundleHome(b).active()
    assert active.manifest.personalized and (active.path / VFER_STEP).read_bytes() != old_step

    # the next clip is predicted, and stored, with the personalized bundle
    nxt = cli(
        "edge_node",
        "ingest",
        "--video",
        str(crema / "1001_DFA_HAP_XX.flv"),
        "--db",
        str(db),
        "--bundle",
        str(b),
    )
    assert nxt.returncode == 0, nxt.stderr
    with ClipStore(db) as store:
        newest = store.recent_clips(1)[0]
    assert newest.bundle_id == active.bundle_id
    shutil.rmtree(synth, ignore_errors=True)
