"""`python -m edge_node evaluate` on the London set through the node's own models, and its parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_node.display import display_probs, effective_display, ensemble, pseudo_probs
from edge_node.evaluate import read_manifest
from tests.support import paths
from tests.support.bundles import cut_backbone, random_head
from vfer.bundle import write_bundle
from vfer.classes import EMOTIONS_4, LABEL_SYNONYMS
from vfer.heads_spec import ifer_spec, vfer_spec

KEYS = ("g", "v", "teacher", "ensemble", "display")


def test_display_choice_and_fallback() -> None:
    v, g, t = np.array([0.7, 0.3]), np.array([0.2, 0.8]), np.array([0.4, 0.6])
    assert display_probs("vfer", vfer=v, ifer=g, teacher=t)[1] is v
    assert display_probs("ifer", vfer=v, ifer=g, teacher=t)[1] is g
    assert display_probs("teacher", vfer=v, ifer=g, teacher=t)[1] is t
    used, p = display_probs("ensemble", vfer=v, ifer=g, teacher=t)
    assert used == "ensemble" and np.allclose(p, [0.3, 0.7])
    assert display_probs("teacher", vfer=v, ifer=g, teacher=None) == ("vfer", v)
    assert display_probs("teacher", vfer=None, ifer=None, teacher=None, has_teacher=True) == (
        "teacher",
        None,
    )  # no face this frame: nothing to show, the display stays
    assert effective_display("ensemble", False) == "vfer"
    assert np.allclose(ensemble(g, t).sum(), 1)
    assert np.allclose(pseudo_probs("external", g, t), t)
    assert np.allclose(pseudo_probs("external", g, None), g)  # recorded without a teacher
    assert np.allclose(pseudo_probs("ensemble", g, t), [0.3, 0.7])
    assert np.allclose(pseudo_probs("g", g, t), g)


def test_manifest_rows_are_checked(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("path,subject,label\na.jpg,1,Happy\n/abs/b.mp4,2,neutral\n")
    rows = read_manifest(m)
    assert rows == [(tmp_path / "a.jpg", "1", "happiness"), (Path("/abs/b.mp4"), "2", "neutral")]
    m.write_text("path,label\na.jpg,happy\n")
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(m)
    m.write_text("path,subject,label\na.jpg,,happy\n")
    with pytest.raises(ValueError, match=":2: path, subject and label"):
        read_manifest(m)


def test_the_node_and_the_lab_read_manifest_labels_with_one_table(tmp_path: Path) -> None:
    from training.corpora.manifest import load_manifest

    (tmp_path / "a.jpg").write_bytes(b"")
    m = tmp_path / "m.csv"
    spellings = [*LABEL_SYNONYMS, "Neutral"]
    m.write_text(
        "path,subject,label\n"
        + "".join(f"a.jpg,p{i}, {w.upper()}\n" for i, w in enumerate(spellings))
    )
    node = [label for _, _, label in read_manifest(m)]
    lab = [r.label for r in load_manifest(m).records]
    assert node == lab == [*LABEL_SYNONYMS.values(), "neutral"]
    assert {"smiling", "joy", "happy"} <= {k for k, v in LABEL_SYNONYMS.items() if v == "happiness"}


@pytest.fixture(scope="module")
def london_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for need in (paths.TEACHER, paths.FACE_MODEL, paths.LONDON / "faces.csv"):
        if not need.is_file():
            pytest.skip(f"{need} absent")
    root = tmp_path_factory.mktemp("eval")
    env = {**os.environ, "PYTHONPATH": str(paths.REPO)}
    london = root / "london.csv"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "london-manifest",
            "--faces",
            str(paths.LONDON / "faces.csv"),
            "--out",
            str(london),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    assert "204 photos" in made.stdout
    with london.open("a") as fh:  # a label the bundle does not have: counted, not dropped
        fh.write(f"{paths.LONDON / 'neutral/001_03.jpg'},001,surprise,female\n")
    write_bundle(
        root / "bundle",
        classes=EMOTIONS_4,
        backbone=cut_backbone(root / "backbone.tflite"),
        ifer_weights=random_head(ifer_spec(4), 1),
        vfer_weights=random_head(vfer_spec(4), 2),
        head_version="test",
        teacher=paths.TEACHER,
    )
    cmd = [sys.executable, "-m", "edge_node", "evaluate", "--bundle", str(root / "bundle")]
    cmd += ["--manifest", str(london), "--face-model", str(paths.FACE_MODEL), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.slow
def test_london_report_has_every_model_and_counts_every_row(london_report: dict[str, Any]) -> None:
    assert set(KEYS) <= set(london_report)
    for key in KEYS:
        s = london_report[key]
        assert set(s["per_class"]) == set(EMOTIONS_4)
        assert set(s["per_class"]["neutral"]) >= {"precision", "recall", "f1", "support"}
        assert {"macro", "micro", "confusion"} <= set(s)
        assert np.asarray(s["confusion"]).sum() == 204
    rows = london_report["meta"]["rows"]
    assert rows["total"] == 205 and rows["used"] == 204
    assert rows["label_not_in_classes"] == 1 and rows["labels_not_in_classes"] == {"surprise": 1}


@pytest.mark.slow
def test_default_display_on_london_is_the_teacher_and_meets_the_bar(
    london_report: dict[str, Any],
) -> None:
    d = london_report["display"]
    assert d["choice"] == "teacher"
    assert d["per_class"]["neutral"]["recall"] >= 0.90
    assert d["per_class"]["happiness"]["recall"] >= 0.50
    assert d["per_class"]["neutral"]["support"] == 102
