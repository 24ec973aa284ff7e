"""Write a synthetic corpus: one .mp4 per clip, ``manifest.csv`` and ``subjects.json``.

Every random draw comes from a generator seeded by (seed, subject) or (seed, subject, class,
clip), so a corpus is the same for a seed whatever the worker count, and adding subjects or clips
leaves the existing ones unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from training.synthetic.expressions import SubjectStyle, clip_timeline, subject_styles
from training.synthetic.face import Appearance, random_appearance
from training.synthetic.render import random_scene, render_clip
from vfer.atomic import atomic_write_text
from vfer.classes import EMOTIONS_4, EMOTIONS_6

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Validated on construction (``ValueError`` names the field)."""

    subjects: int = 8
    clips_per_class: int = 5
    classes: tuple[str, ...] = EMOTIONS_6
    seed: int = 0
    width: int = 320
    height: int = 240
    fps: float = 20.0
    min_frames: int = 50
    max_frames: int = 90
    dev_subjects: int | None = None  # default: 1 when there are at least 4 subjects
    test_subjects: int | None = None  # default: a third of the subjects, at least 1

    def __post_init__(self) -> None:
        if not 1 <= self.subjects <= 1000:
            raise ValueError(f"subjects must be 1..1000, got {self.subjects}")
        if not 1 <= self.clips_per_class <= 1000:
            raise ValueError(f"clips_per_class must be 1..1000, got {self.clips_per_class}")
        if tuple(self.classes) not in (EMOTIONS_4, EMOTIONS_6):
            raise ValueError(f"classes must be EMOTIONS_4 or EMOTIONS_6, got {self.classes}")
        if not (64 <= self.width <= 1920 and 64 <= self.height <= 1080):
            raise ValueError(f"frame size must be 64x64..1920x1080, got {self.width}x{self.height}")
        if not 5 <= self.fps <= 60:
            raise ValueError(f"fps must be 5..60, got {self.fps}")
        if not 8 <= self.min_frames <= self.max_frames <= 1000:
            raise ValueError(
                f"need 8 <= min_frames <= max_frames <= 1000, got {self.min_frames}, {self.max_frames}"
            )
        dev, test = self.split_sizes()
        if dev + test > self.subjects:
            raise ValueError(
                f"dev_subjects + test_subjects ({dev} + {test}) exceeds subjects ({self.subjects})"
            )

    def split_sizes(self) -> tuple[int, int]:
        n = self.subjects
        dev = self.dev_subjects if self.dev_subjects is not None else (1 if n >= 4 else 0)
        test = self.test_subjects if self.test_subjects is not None else max(1, round(n / 3))
        if dev < 0 or test < 0:
            raise ValueError(f"dev_subjects and test_subjects must be >= 0, got {dev}, {test}")
        return dev, (min(test, n - dev) if self.test_subjects is None else test)


@dataclass(frozen=True)
class Subject:
    id: str
    split: str
    look: Appearance
    style: SubjectStyle

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "split": self.split,
            "gender": self.look.gender,
            "appearance": self.look.to_json(),
            "style": self.style.to_json(),
        }


def make_subjects(cfg: SynthConfig) -> list[Subject]:
    """Subjects with their look, style and split (splits assigned by a seeded shuffle)."""
    n = cfg.subjects
    dev, test = cfg.split_sizes()
    order = np.random.default_rng([cfg.seed, 0xD15]).permutation(n)
    split_of = {int(i): "test" for i in order[:test]}
    split_of.update({int(i): "dev" for i in order[test : test + dev]})
    out = []
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, i])
        look = random_appearance(rng)
        style = subject_styles(rng, EMOTIONS_6)  # always all six, so 4 and 6 classes agree
        style = replace(style, apex={c: style.apex[c] for c in cfg.classes})
        out.append(Subject(f"s{i + 1:03d}", split_of.get(i, "train"), look, style))
    return out


@dataclass(frozen=True)
class ClipJob:
    subject_index: int
    subject: Subject
    label: str
    class_index: int
    clip: int
    relpath: str


def clip_frames(cfg: SynthConfig, job: ClipJob) -> np.ndarray:
    """Render one clip, (T, H, W, 3) RGB uint8; a pure function of the config and the job."""
    rng = np.random.default_rng([cfg.seed, job.subject_index, job.class_index, job.clip])
    n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    timeline = clip_timeline(rng, job.subject.style, job.label, n, cfg.fps)
    scene = random_scene(rng, cfg.width, cfg.height, room=cfg.seed * 100003 + job.subject_index)
    return render_clip(job.subject.look, timeline, scene, rng)


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """MPEG-4 Part 2 (mp4v) .mp4 that OpenCV reads back; written to a temp name, then renamed."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write mp4v video to {tmp}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)


def _render_and_write(args: tuple[SynthConfig, ClipJob, Path]) -> int:
    cfg, job, out = args
    cv2.setNumThreads(1)
    frames = clip_frames(cfg, job)
    write_video(out / job.relpath, frames, cfg.fps)
    return len(frames)


def plan(cfg: SynthConfig, subjects: list[Subject]) -> list[ClipJob]:
    jobs = []
    for si, subject in enumerate(subjects):
        for label in cfg.classes:
            class_index = EMOTIONS_6.index(label)  # stable across 4 and 6 classes
            for k in range(cfg.clips_per_class):
                rel = f"clips/{subject.id}/{subject.id}_{label}_{k + 1:02d}.mp4"
                jobs.append(ClipJob(si, subject, label, class_index, k, rel))
    return jobs


def generate(cfg: SynthConfig, out: Path, workers: int = 1) -> Path:
    """Write the corpus under ``out`` and return the manifest path.

    ``out`` may exist but must not already hold a manifest (no silent overwrite).
    """
    out = Path(out)
    manifest = out / "manifest.csv"
    if manifest.exists():
        raise FileExistsError(f"{manifest} exists; choose an empty --out folder")
    subjects = make_subjects(cfg)
    jobs = plan(cfg, subjects)
    for subject in subjects:
        (out / "clips" / subject.id).mkdir(parents=True, exist_ok=True)
    args = [(cfg, job, out) for job in jobs]
    if workers > 1:
        # spawn, not fork: callers (the experiments, the demo, pytest) may already run
        # TensorFlow's or MediaPipe's threads, and a forked child can deadlock on their locks
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            counts = list(pool.map(_render_and_write, args, chunksize=4))
    else:
        counts = [_render_and_write(a) for a in args]
    info = {
        "generator": "fedvfer synthetic faces v1",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "clips": len(jobs),
        "frames": int(sum(counts)),
        "subjects": [s.to_json() for s in subjects],
    }
    atomic_write_text(out / "subjects.json", json.dumps(info, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "subject", "label", "split", "gender"])
    for job in jobs:
        writer.writerow(
            [job.relpath, job.subject.id, job.label, job.subject.split, job.subject.look.gender]
        )
    atomic_write_text(manifest, buf.getvalue())
    log.info(
        "wrote %s clips (%s frames) of %s subjects to %s",
        len(jobs),
        sum(counts),
        len(subjects),
        out,
    )
    return manifest
