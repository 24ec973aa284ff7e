"""The synthetic corpus: dynamics (pure), determinism, files it writes, and the real face detector."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from training.corpora import load_corpus
from training.synthetic.expressions import (
    AU_INDEX,
    PROTOTYPES,
    Timeline,
    clip_timeline,
    envelope,
    subject_styles,
)
from training.synthetic.face import random_appearance
from training.synthetic.generate import SynthConfig, clip_frames, generate, make_subjects, plan
from training.synthetic.render import random_scene, render_frame
from vfer.classes import EMOTIONS_4, EMOTIONS_6
from vfer.video import read_frames

SMALL = SynthConfig(
    subjects=3, clips_per_class=1, classes=EMOTIONS_4, seed=11, min_frames=20, max_frames=24
)


def test_envelope_has_onset_apex_offset() -> None:
    ends = []
    for seed in range(40):
        env = envelope(np.random.default_rng(seed), 80)
        apex = np.flatnonzero(env > env.max() - 1e-9)
        assert env.max() == pytest.approx(1.0) and env[0] < 0.3
        assert np.all(np.diff(env[: apex[0] + 1]) >= -1e-12)  # onset: rises to the apex
        assert np.all(np.diff(env[apex[-1] :]) <= 1e-12)  # offset: relaxes after it
        ends.append(env[-1])
    assert np.mean(np.array(ends) < 0.8) > 0.5  # most clips relax well before they end


def test_speech_moves_the_jaw_at_syllable_rate() -> None:
    style = subject_styles(np.random.default_rng(1), EMOTIONS_6)
    tl = clip_timeline(np.random.default_rng(2), style, "neutral", 100, 20.0)
    jaw = tl.au[:, AU_INDEX["jaw_drop"]]
    peaks = np.flatnonzero((jaw[1:-1] > jaw[:-2]) & (jaw[1:-1] >= jaw[2:]) & (jaw[1:-1] > 0.1))
    seconds = 100 / 20.0
    assert 1.5 * seconds <= len(peaks) <= 7 * seconds


def test_subjects_express_the_same_emotion_differently() -> None:
    styles = [subject_styles(np.random.default_rng([0, i]), EMOTIONS_6) for i in range(8)]
    for emotion in ("happiness", "anger", "sadness"):
        apexes = np.array([s.apex[emotion] for s in styles])
        proto = PROTOTYPES[emotion]
        cos = apexes @ proto / (np.linalg.norm(apexes, axis=1) * np.linalg.norm(proto))
        assert cos.mean() > 0.6  # recognisably the emotion
        assert apexes.std(axis=0).max() > 0.15  # but not the same display for everyone
    assert len({round(s.expressivity, 3) for s in styles}) == 8


def test_emotion_changes_the_face_and_only_the_face() -> None:
    rng = np.random.default_rng(4)
    look = random_appearance(rng)
    style = subject_styles(rng, EMOTIONS_6)
    scene = random_scene(np.random.default_rng(5), 320, 240, room=1)

    def still(au: np.ndarray) -> np.ndarray:
        one = Timeline(
            au[None], np.zeros(1), np.zeros(1), np.zeros((1, 6)), np.zeros((1, 2)), np.ones(1)
        )
        return render_frame(look, one, scene, 0, np.random.default_rng(6)).astype(int)

    neutral = still(style.resting)
    for emotion in ("happiness", "sadness", "anger"):
        diff = np.abs(still(style.resting + style.apex[emotion]) - neutral).max(axis=2)
        ys, xs = np.nonzero(diff > 20)
        assert len(ys) > 50, emotion  # a visible change...
        reach = 1.6 * scene.face_px
        assert np.all(np.abs(xs - scene.cx) < reach) and np.all(np.abs(ys - scene.cy) < reach * 1.4)


def test_rendering_is_deterministic_and_class_count_independent() -> None:
    job = plan(SMALL, make_subjects(SMALL))[5]
    a, b = clip_frames(SMALL, job), clip_frames(SMALL, job)
    assert np.array_equal(a, b)
    assert a.shape[1:] == (240, 320, 3) and 20 <= len(a) <= 24
    six = replace(SMALL, classes=EMOTIONS_6)
    same = next(
        j
        for j in plan(six, make_subjects(six))
        if (j.subject.id, j.label) == (job.subject.id, job.label)
    )
    assert np.array_equal(clip_frames(six, same), a)
    other = replace(SMALL, seed=12)
    assert not np.array_equal(clip_frames(other, plan(other, make_subjects(other))[5]), a)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="exceeds subjects"):
        SynthConfig(subjects=2, test_subjects=2, dev_subjects=1)
    with pytest.raises(ValueError, match="fps"):
        SynthConfig(fps=2)


def test_generate_writes_clips_manifest_and_subjects(tmp_path: Path) -> None:
    manifest = generate(SMALL, tmp_path / "syn")
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 3 * 4
    assert {r["label"] for r in rows} == set(EMOTIONS_4)
    splits = {r["subject"]: r["split"] for r in rows}
    assert (
        sorted(splits.values()) == ["dev", "test", "train"]
        or sorted(splits.values()).count("train") >= 1
    )
    info = json.loads((tmp_path / "syn" / "subjects.json").read_text())
    assert [s["id"] for s in info["subjects"]] == sorted(splits)
    assert set(info["subjects"][0]["style"]["apex"]) == set(EMOTIONS_4)
    clip = read_frames(tmp_path / "syn" / rows[0]["path"])
    assert clip.fps == 20.0 and 20 <= len(clip) <= 24 and clip.frames[0].shape == (240, 320, 3)
    job = plan(SMALL, make_subjects(SMALL))[0]
    diff = np.abs(clip.array().astype(int) - clip_frames(SMALL, job).astype(int)).mean()
    assert diff < 6  # the mp4 holds the rendered frames, up to compression
    corpus = load_corpus("synthetic", tmp_path / "syn", EMOTIONS_4)
    assert len(corpus) == 12 and set(corpus.subjects()) == set(splits)
    with pytest.raises(FileExistsError, match=r"manifest\.csv exists"):
        generate(SMALL, tmp_path / "syn")


def test_workers_do_not_change_the_corpus(tmp_path: Path) -> None:
    cfg = replace(
        SMALL, subjects=2, classes=EMOTIONS_4, min_frames=10, max_frames=12, dev_subjects=0
    )
    one = generate(cfg, tmp_path / "one", workers=1).parent
    two = generate(cfg, tmp_path / "two", workers=2).parent
    assert (one / "manifest.csv").read_text() == (two / "manifest.csv").read_text()
    assert (one / "subjects.json").read_text() == (two / "subjects.json").read_text()
    for row in csv.DictReader((one / "manifest.csv").open()):
        a, b = read_frames(one / row["path"]).array(), read_frames(two / row["path"]).array()
        assert np.array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["mediapipe", "litert"])
def test_faces_pass_the_real_mediapipe_detector(
    face_model: Path, detector: Literal["mediapipe", "litert"]
) -> None:
    from vfer.faces import FaceCropper

    cfg = SynthConfig(
        subjects=4, clips_per_class=1, classes=EMOTIONS_6, seed=21, min_frames=40, max_frames=40
    )
    scores = []
    with FaceCropper.from_path(
        face_model, min_confidence=0.5, margin=0.25, detector=detector
    ) as cropper:
        for job in plan(cfg, make_subjects(cfg)):
            for frame in clip_frames(cfg, job)[::5]:
                crop = cropper.crop(frame)
                scores.append(crop.score if crop is not None else 0.0)
                if crop is not None:
                    assert crop.image.shape == (224, 224, 3)
    rate = float(np.mean(np.array(scores) > 0.8))
    assert len(scores) == 4 * 6 * 8
    assert rate >= 0.95, f"only {rate:.1%} of frames have a face scoring > 0.8"


@pytest.mark.slow
def test_cli_synth(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "training", "synth", "--subjects", "1", "--clips-per-class", "1"]
    cmd += ["--classes", "4", "--seed", "3", "--out", str(tmp_path / "o"), "--size", "160x120"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "o" / "manifest.csv").read_text().splitlines()) == 5
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "Error: " in again.stderr and "exists" in again.stderr
    bad = subprocess.run([*cmd[:-2], "--size", "big"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "WIDTHxHEIGHT" in bad.stderr


def test_corpus_folders_name_the_render_version(tmp_path: Path) -> None:
    """A corpus drawn by older drawing code is never taken for one the current code draws."""
    from training.experiments.setup import SynthSizes, synthetic_corpus
    from training.synthetic.render import RENDER_VERSION
    from training.synthetic.stills import StillsConfig

    assert StillsConfig(identities=10, per_class=1).tag().endswith(f"-r{RENDER_VERSION}")
    sizes = SynthSizes(3, 1, 1, 1, 8, 8, 6.0, width=64, height=64)
    folder = synthetic_corpus(tmp_path, sizes, EMOTIONS_4, seed=2)
    assert folder.name.endswith(f"-r{RENDER_VERSION}") and (folder / "manifest.csv").is_file()
