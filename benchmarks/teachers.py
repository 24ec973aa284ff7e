"""The teachers on real faces, through the node's detector and each kind's own preprocessing.

    python -m benchmarks.teachers [--quick]

Every face is found by the node's :class:`~vfer.faces.FaceCropper` (BlazeFace on LiteRT, its
keypoints; min_confidence 0.7, margin 0.25, as ``edge_node evaluate``) and scored by
``open_teacher(...).predict_face(frame, face)``, the call the node, ``evaluate`` and ``distill``
make. Written to ``benchmarks/results/teachers.json``:

* ``london``: per teacher and class set (4 and 6 classes), the recall on the 102 neutral photos
  (called neutral) and the 102 smiling ones (called happiness). For the MobileFaceNet also the
  alignments compared: the shipped one (eyes, nose tip, mouth centre), eyes and nose, eyes only,
  eyes and mouth, the shipped points in BGR order (a colour-order check), and YuNet's own 5
  landmarks (a second detector the node does not run: the reference ceiling).
* ``crema_d``: each teacher's Eq. 1 clip label (argmax of the mean of its frame probabilities)
  on the 6 CREMA-D clips against the official plurality of the audio-visual votes, 6 classes.
* ``wolfgang``: the share of face frames each teacher calls happiness in frames 290-460 of
  ``WolfgangLanger_Pexels.mp4``, where she smiles broadly (hand-labelled from frames extracted
  every 20; tests/test_edge_teacher.py), 4 classes.
* ``cost``: per-face milliseconds of each teacher on one core (the process pinned to one CPU, the
  model on one thread): preprocessing and the model apart, median and 90th percentile over the
  London faces. ``cpu_ms`` is the calling thread's CPU time (both runtimes compute in the calling
  thread on one thread), which a busy shared machine hardly moves; ``wall_ms`` is what a
  quiet core would see only when the load average (recorded) is low.

``--quick`` scores 20 London people and leaves out the Wolfgang video.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.support import paths
from training.corpora.crema_d import load_crema_d
from training.corpora.london import london_rows
from vfer.align import BLAZEFACE_TEMPLATE, TEMPLATE_112, align
from vfer.classes import EMOTIONS_4, EMOTIONS_6
from vfer.faces import FaceCrop, FaceCropper
from vfer.teacher import mapping
from vfer.teachers import (
    MOBILEFACENET,
    DnnTeacher,
    TeacherModel,
    mobilefacenet_blob,
    open_teacher,
    softmax,
)
from vfer.video import FrameReader

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {"fer2013": paths.TEACHER, "mobilefacenet": paths.TEACHER_MOBILEFACENET}
SMILING = range(290, 461)
MOUTH = TEMPLATE_112[3:].mean(axis=0)
#: name -> (which BlazeFace keypoints, their template points, channel order)
ALIGNMENTS: dict[str, tuple[list[int], np.ndarray, str]] = {
    "eyes_nose_mouth (shipped)": ([0, 1, 2, 3], BLAZEFACE_TEMPLATE, "rgb"),
    "eyes_nose": ([0, 1, 2], TEMPLATE_112[:3], "rgb"),
    "eyes": ([0, 1], TEMPLATE_112[:2], "rgb"),
    "eyes_mouth": ([0, 1, 3], np.vstack([TEMPLATE_112[:2], MOUTH]), "rgb"),
    "eyes_nose_mouth, BGR": ([0, 1, 2, 3], BLAZEFACE_TEMPLATE, "bgr"),
}

Scorer = Callable[[np.ndarray, FaceCrop], np.ndarray]


def london_faces(people: int | None) -> Iterator[tuple[str, np.ndarray, FaceCrop | None]]:
    rows = london_rows(paths.LONDON / "faces.csv")
    if people is not None:
        keep = sorted({r["subject"] for r in rows})[:people]
        rows = [r for r in rows if r["subject"] in keep]
    with FaceCropper.from_path(paths.FACE_MODEL) as cropper:
        for r in rows:
            rgb = cv2.cvtColor(cv2.imread(r["path"]), cv2.COLOR_BGR2RGB)
            yield r["label"], rgb, cropper.crop(rgb)


def recalls(calls: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in ("neutral", "happiness"):
        mine = [c for t, c in calls if t == label]
        hit = sum(c == label for c in mine)
        out[label] = {"recall": round(hit / len(mine), 3) if mine else None, "hit": hit}
        out[label]["of"] = len(mine)
    return out


def variant_scorer(teacher: DnnTeacher, name: str, classes: tuple[str, ...]) -> Scorer:
    points, template, order = ALIGNMENTS[name]
    index = mapping(MOBILEFACENET.source_classes, classes)

    def score(rgb: np.ndarray, face: FaceCrop) -> np.ndarray:
        image = rgb if order == "rgb" else np.ascontiguousarray(rgb[:, :, ::-1])
        kps = np.asarray(face.keypoints)[points]
        return softmax(teacher.raw_input(mobilefacenet_blob(align(image, kps, template))))[index]

    return score


def yunet_scorer(teacher: DnnTeacher, classes: tuple[str, ...]) -> Scorer:
    """YuNet's own 5 landmarks on the whole photo: the reference, not what the node runs."""
    det = cv2.FaceDetectorYN.create(str(paths.YUNET), "", (320, 320), 0.6, 0.3, 50)
    index = mapping(MOBILEFACENET.source_classes, classes)

    def score(rgb: np.ndarray, face: FaceCrop) -> np.ndarray:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, found = det.detect(bgr)
        if found is None:
            return np.full(len(classes), 1.0 / len(classes))
        best = found[np.argmax(found[:, 2] * found[:, 3])]
        aligned = align(rgb, best[4:14].reshape(5, 2), TEMPLATE_112)
        return softmax(teacher.raw_input(mobilefacenet_blob(aligned)))[index]

    return score


def london(people: int | None) -> dict[str, Any]:
    faces = list(london_faces(people))
    out: dict[str, Any] = {"photos": len(faces), "no_face": sum(f is None for *_, f in faces)}
    for classes in (EMOTIONS_4, EMOTIONS_6):
        key = f"{len(classes)}_classes"
        scorers: dict[str, Scorer] = {}
        opened = {kind: open_teacher(path, classes) for kind, path in TEACHERS.items()}
        for kind, t in opened.items():
            scorers[kind] = t.predict_face
        dnn = opened["mobilefacenet"]
        assert isinstance(dnn, DnnTeacher)
        for name in ALIGNMENTS:
            scorers[f"mobilefacenet alignment: {name}"] = variant_scorer(dnn, name, classes)
        scorers["mobilefacenet alignment: YuNet 5 landmarks (reference)"] = yunet_scorer(
            dnn, classes
        )
        out[key] = {}
        for name, score in scorers.items():
            calls = [
                (label, classes[int(np.argmax(score(rgb, f)))])
                for label, rgb, f in faces
                if f is not None
            ]
            out[key][name] = recalls(calls)
        for t in opened.values():
            t.close()
    return out


def clip_probs(teacher: TeacherModel, cropper: FaceCropper, video: Path) -> list[np.ndarray]:
    """The teacher's probabilities on every face frame of a video (None where no face)."""
    cropper.reset()
    rows = []
    with FrameReader.open(video) as reader:
        for rgb in reader:
            face = cropper.crop(rgb)
            rows.append(None if face is None else teacher.predict_face(rgb, face))
    return rows  # type: ignore[return-value]


def crema_d() -> dict[str, Any]:
    corpus = load_crema_d(paths.CREMA_D, EMOTIONS_6)
    out: dict[str, Any] = {"classes": list(EMOTIONS_6), "labels": "plurality, audio-visual votes"}
    with FaceCropper.from_path(paths.FACE_MODEL) as cropper:
        for kind, path in TEACHERS.items():
            with open_teacher(path, EMOTIONS_6) as t:
                clips = []
                for rec in corpus.records:
                    rows = [p for p in clip_probs(t, cropper, rec.path) if p is not None]
                    call = EMOTIONS_6[int(np.argmax(np.mean(rows, axis=0)))]
                    clips.append({"clip": rec.path.name, "label": rec.label, "eq1": call})
            right = sum(c["label"] == c["eq1"] for c in clips)
            out[kind] = {"accuracy": round(right / len(clips), 3), "right": right, "clips": clips}
    return out


def wolfgang() -> dict[str, Any]:
    video = paths.VIDEO / "WolfgangLanger_Pexels.mp4"
    out: dict[str, Any] = {"frames": f"{SMILING.start}-{SMILING.stop - 1}", "classes": 4}
    with FaceCropper.from_path(paths.FACE_MODEL) as cropper:
        for kind, path in TEACHERS.items():
            with open_teacher(path, EMOTIONS_4) as t:
                rows = clip_probs(t, cropper, video)
            smiling = [rows[i] for i in SMILING if i < len(rows) and rows[i] is not None]
            happy = sum(EMOTIONS_4[int(np.argmax(p))] == "happiness" for p in smiling)
            out[kind] = {"happiness": happy, "face_frames": len(smiling)}
            out[kind]["share"] = round(happy / len(smiling), 3) if smiling else None
    return out


def cost(people: int | None) -> dict[str, Any]:
    cpu = sorted(os.sched_getaffinity(0))[-1] if hasattr(os, "sched_getaffinity") else None
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    faces = [(rgb, f) for _, rgb, f in london_faces(people) if f is not None]
    out: dict[str, Any] = {"cpu": cpu, "faces": len(faces), "load_before": os.getloadavg()[0]}
    for kind, path in TEACHERS.items():
        with open_teacher(path, EMOTIONS_4, num_threads=1) as t:
            for _ in range(2):  # the first pass warms caches; the second is timed
                times: dict[str, list[float]] = {}
                for rgb, f in faces:
                    w0, c0 = time.perf_counter(), time.thread_time()
                    x = t.prepare(rgb, f)
                    w1, c1 = time.perf_counter(), time.thread_time()
                    t.predict_input(x)
                    w2, c2 = time.perf_counter(), time.thread_time()
                    for key, ms in (("prepare_cpu", c1 - c0), ("model_cpu", c2 - c1),
                                    ("prepare_wall", w1 - w0), ("model_wall", w2 - w1)):  # fmt: skip
                        times.setdefault(key, []).append(ms * 1e3)
        out[kind] = {key: _stats(ms) for key, ms in times.items()}
        out[kind]["cpu_ms_median"] = round(
            float(np.median(np.add(times["prepare_cpu"], times["model_cpu"]))), 3
        )
    out["load_after"] = os.getloadavg()[0]
    return out


def _stats(ms: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(ms)), 3), "p90": round(float(np.percentile(ms, 90)), 3)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 London people, no Wolfgang video")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "teachers.json")
    args = ap.parse_args(argv)
    people = 20 if args.quick else None
    t0 = time.perf_counter()
    report: dict[str, Any] = {"london": london(people), "crema_d": crema_d()}
    if not args.quick:
        report["wolfgang"] = wolfgang()
    report["cost"] = cost(people)  # last: it pins this process to one CPU
    l4 = report["london"]["4_classes"]
    report["summary"] = {
        kind: {
            "london_4": [l4[kind]["neutral"]["recall"], l4[kind]["happiness"]["recall"]],
            "crema_d": report["crema_d"][kind]["accuracy"],
            "wolfgang": report.get("wolfgang", {}).get(kind, {}).get("share"),
            "cpu_ms": report["cost"][kind]["cpu_ms_median"],
        }
        for kind in TEACHERS
    }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
