"""A synthetic *image* corpus: the AffectNet stand-in g learns from (the paper's two-corpus setting).

Many identities (300 by default), each photographed a few times per class: one still per sample,
taken at a random point of a rendered expression (so intensity varies from subtle to full), with
extra pose (yaw, pitch, roll, framing), a new scene (room, key light, exposure, white balance,
focus, sensor noise) for every photo, and each identity's own expression style from
:func:`training.synthetic.expressions.subject_styles`.

The identities are drawn from generator seeds ``(seed, 0x57111, i)``, a stream the video corpus
(``(seed, i)``) never uses, so g's people are not v's and not the personalized ones. Written as
``images/<subject>/<subject>_<class>_<k>.png`` plus ``manifest.csv`` (path, subject, label, split,
gender) and ``subjects.json``; deterministic for a seed whatever the worker count.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from training.synthetic.expressions import clip_timeline, subject_styles
from training.synthetic.face import random_appearance
from training.synthetic.generate import Subject
from training.synthetic.render import RENDER_VERSION, random_scene, render_frame
from vfer.atomic import atomic_write_text
from vfer.classes import EMOTIONS_4, EMOTIONS_6

STREAM = 0x57111  # generator stream of the image corpus's identities


@dataclass(frozen=True)
class StillsConfig:
    identities: int = 300
    per_class: int = 2
    classes: tuple[str, ...] = EMOTIONS_4
    seed: int = 0
    width: int = 256
    height: int = 256
    dev_fraction: float = 0.1
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not 10 <= self.identities <= 20_000:
            raise ValueError(f"identities must be 10..20000, got {self.identities}")
        if not 1 <= self.per_class <= 100:
            raise ValueError(f"per_class must be 1..100, got {self.per_class}")
        if tuple(self.classes) not in (EMOTIONS_4, EMOTIONS_6):
            raise ValueError(f"classes must be EMOTIONS_4 or EMOTIONS_6, got {self.classes}")
        if not (64 <= self.width <= 1024 and 64 <= self.height <= 1024):
            raise ValueError(f"image size must be 64..1024, got {self.width}x{self.height}")
        if not (0 < self.dev_fraction < 0.5 and 0 < self.test_fraction < 0.5):
            raise ValueError("dev_fraction and test_fraction must be in (0, 0.5)")

    def tag(self) -> str:
        return (
            f"{len(self.classes)}c-s{self.seed}-{self.identities}id-x{self.per_class}-"
            f"{self.width}x{self.height}-r{RENDER_VERSION}"
        )


def identities(cfg: StillsConfig) -> list[Subject]:
    n = cfg.identities
    n_test, n_dev = max(1, round(n * cfg.test_fraction)), max(1, round(n * cfg.dev_fraction))
    order = np.random.default_rng([cfg.seed, STREAM, 0xD15]).permutation(n)
    split_of = {int(i): "test" for i in order[:n_test]}
    split_of.update({int(i): "dev" for i in order[n_test : n_test + n_dev]})
    out = []
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, STREAM, i])
        look = random_appearance(rng)
        style = subject_styles(rng, EMOTIONS_6)
        style = replace(style, apex={c: style.apex[c] for c in cfg.classes})
        out.append(Subject(f"p{i + 1:04d}", split_of.get(i, "train"), look, style))
    return out


def still(
    cfg: StillsConfig, subject_index: int, subject: Subject, label: str, k: int
) -> np.ndarray:
    """One photo, RGB uint8: a pure function of the config, the identity, the class and k."""
    rng = np.random.default_rng([cfg.seed, STREAM, subject_index, EMOTIONS_6.index(label), k])
    n = 12
    timeline = clip_timeline(rng, subject.style, label, n, 10.0)
    # a moment of the expression: mostly near the apex, sometimes early or late (weak)
    i = int(np.argmax(timeline.envelope)) if rng.random() < 0.6 else int(rng.integers(2, n))
    pose = timeline.pose.copy()
    pose[i, :3] += rng.normal(0.0, [0.25, 0.15, 0.12])  # yaw, pitch, roll: photos vary more
    pose[i, 3:5] += rng.normal(0.0, 0.15, 2)
    pose[i, 5] += rng.uniform(-0.15, 0.25)
    timeline = replace(timeline, pose=pose)
    scene = random_scene(
        rng, cfg.width, cfg.height, room=int(rng.integers(0, 2**31)), grain_frames=1
    )
    return render_frame(subject.look, timeline, scene, i, rng)


def _write(args: tuple[StillsConfig, int, Subject, str, int, Path]) -> None:
    cfg, si, subject, label, k, path = args
    cv2.setNumThreads(1)
    img = still(cfg, si, subject, label, k)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {tmp}")
    os.replace(tmp, path)


def generate_stills(cfg: StillsConfig, out: Path, workers: int = 1) -> Path:
    """Write the image corpus under ``out``; returns its manifest. Refuses to overwrite one."""
    out = Path(out)
    manifest = out / "manifest.csv"
    if manifest.exists():
        raise FileExistsError(f"{manifest} exists; choose an empty folder")
    people = identities(cfg)
    jobs = []
    rows = []
    for si, subject in enumerate(people):
        (out / "images" / subject.id).mkdir(parents=True, exist_ok=True)
        for label in cfg.classes:
            for k in range(cfg.per_class):
                rel = f"images/{subject.id}/{subject.id}_{label}_{k + 1:02d}.png"
                jobs.append((cfg, si, subject, label, k, out / rel))
                rows.append([rel, subject.id, label, subject.split, subject.look.gender])
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")  # see generate.generate: never fork here
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            list(pool.map(_write, jobs, chunksize=16))
    else:
        for job in jobs:
            _write(job)
    info = {
        "generator": "fedvfer synthetic stills v1",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "images": len(jobs),
        "subjects": [s.to_json() for s in people],
    }
    atomic_write_text(out / "subjects.json", json.dumps(info, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "subject", "label", "split", "gender"])
    writer.writerows(rows)
    atomic_write_text(manifest, buf.getvalue())
    return manifest
