"""How often the kiosk's label changes on a steady face, before and after smoothing.

    python -m benchmarks.display_flicker [--quick]

Each video runs through the node's own frame loop (:class:`~edge_node.pipeline.Pipeline`, the
node's defaults: BlazeFace on LiteRT every 4th frame with the box followed in between, the
default display ``teacher``) with a bundle carrying each teacher kind. Per face frame it records
the label the display's raw probabilities give (their argmax: what the kiosk showed before the
steady label) and the label the kiosk publishes now (``NodeState.emotion``: the moving average
with hysteresis of :func:`edge_node.display.steady_step`). Label changes are counted between
consecutive frames that show a label, per minute of the frames' own time. Each kind runs twice:
the teacher on every frame (``teacher.every: 1``, as before) and at the default cadence.
``sweep``: the same frames relabelled offline at each (time constant, margin) of ``GRID``, the
numbers the shipped pair was chosen by.

Videos: ``WolfgangLanger_Pexels.mp4`` (whole, and frames 290-460 where she smiles broadly:
the steady face) and the 6 CREMA-D clips (one actor, one acted emotion per clip), 6 classes for
CREMA-D and 4 for the video. Written to ``benchmarks/results/display_flicker.json``.
``--quick``: the FER2013 teacher left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge_node.display import DEFAULT_TEACHER_EVERY, Steady, label_changes, steady_step
from edge_node.pipeline import Pipeline, PipelineOptions
from edge_node.sources import VideoFileSource
from edge_node.state import NodeState
from edge_node.store import ClipStore
from tests.support import paths
from tests.support.bundles import cut_backbone, random_head
from training.corpora.crema_d import load_crema_d
from vfer.bundle import write_bundle
from vfer.classes import EMOTIONS_4, EMOTIONS_6
from vfer.faces import FaceCropper
from vfer.heads_spec import ifer_spec, vfer_spec

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {"mobilefacenet": paths.TEACHER_MOBILEFACENET, "fer2013": paths.TEACHER}
WOLFGANG = paths.VIDEO / "WolfgangLanger_Pexels.mp4"
SMILING = range(290, 461)


def bundle(root: Path, classes: tuple[str, ...], teacher: Path) -> Path:
    k = len(classes)
    out = root / f"bundle-{k}-{teacher.stem}"
    if out.is_dir():  # built for the other cadence
        return out
    return write_bundle(
        out,
        classes=classes,
        backbone=cut_backbone(root / "backbone.tflite"),
        ifer_weights=random_head(ifer_spec(k), 1),
        vfer_weights=random_head(vfer_spec(k), 2),
        head_version="central-r0",
        teacher=teacher,
    ).path


def shown(video: Path, bundle_path: Path, db: Path, every: int) -> list[tuple[float, Any, Any]]:
    """(time, raw label, published label) per frame with a face, through the node's loop."""
    out = []
    state = NodeState()
    with (
        ClipStore(db) as store,
        FaceCropper.from_path(paths.FACE_MODEL, detect_every=4) as cropper,
    ):
        pipe = Pipeline(bundle_path, cropper, store, state, PipelineOptions(teacher_every=every))
        classes = pipe.models.bundle.classes
        for frame in VideoFileSource(video).frames(threading.Event()):
            r = pipe.infer(pipe.detect(frame))
            if r.teacher is not None:
                raw = classes[int(np.argmax(r.teacher))]
                out.append((frame.t, raw, state.snapshot().emotion, frame.index, r.teacher))
        pipe.finish()
        pipe.close()
    return out  # type: ignore[return-value]


def rates(rows: list[Any], keep: range | None = None) -> dict[str, Any]:
    if keep is not None:
        rows = [r for r in rows if r[3] in keep]
    if len(rows) < 2:
        return {"face_frames": len(rows)}
    minutes = (rows[-1][0] - rows[0][0]) / 60
    raw, steady = label_changes([r[1] for r in rows]), label_changes([r[2] for r in rows])
    return {
        "face_frames": len(rows),
        "seconds": round(minutes * 60, 2),
        "changes_raw": raw,
        "changes_steady": steady,
        "per_minute_raw": round(raw / minutes, 1),
        "per_minute_steady": round(steady / minutes, 1),
        "happiness_steady": sum(r[2] == "happiness" for r in rows),
    }


def total(parts: list[dict[str, Any]]) -> dict[str, Any]:
    minutes = sum(p["seconds"] for p in parts) / 60
    raw, steady = sum(p["changes_raw"] for p in parts), sum(p["changes_steady"] for p in parts)
    return {
        "clips": len(parts),
        "seconds": round(minutes * 60, 2),
        "changes_raw": raw,
        "changes_steady": steady,
        "per_minute_raw": round(raw / minutes, 1),
        "per_minute_steady": round(steady / minutes, 1),
    }


def measure(root: Path, kind: str, every: int) -> dict[str, Any]:
    b4 = bundle(root, EMOTIONS_4, TEACHERS[kind])
    b6 = bundle(root, EMOTIONS_6, TEACHERS[kind])
    rows = shown(WOLFGANG, b4, root / f"w-{kind}-{every}.db", every)
    clips = [r.path for r in load_crema_d(paths.CREMA_D, EMOTIONS_6).records]
    per_clip = {c.name: shown(c, b6, root / f"c-{kind}-{every}-{c.stem}.db", every) for c in clips}
    crema = {name: rates(r) for name, r in per_clip.items()}
    return {
        "wolfgang_whole": rates(rows),
        "wolfgang_smiling_290_460": rates(rows, SMILING),
        "crema_d": {"clips": crema, "all": total(list(crema.values()))},
        "sweep": sweep(rows, list(per_clip.values())),
    }


#: the smoothing parameters tried (time constant s, margin); the shipped pair is in the middle
GRID = [(tau, m) for tau in (0.25, 0.5, 1.0) for m in (0.0, 0.1, 0.2)]


def relabel(rows: list[Any], classes: tuple[str, ...], tau: float, margin: float) -> list[Any]:
    """``rows`` with the published label recomputed by :func:`steady_step` at (tau, margin)."""
    s, out = Steady(), []
    for t, raw, _, index, probs in rows:
        s = steady_step(s, probs, t, tau_s=tau, margin=margin)
        out.append((t, raw, classes[cast(int, s.label)], index, probs))
    return out


def sweep(wolfgang: list[Any], crema: list[list[Any]]) -> dict[str, Any]:
    """Changes per minute (CREMA-D, the whole video) and the smiling share for each GRID pair."""
    out = {}
    for tau, margin in GRID:
        w = relabel(wolfgang, EMOTIONS_4, tau, margin)
        c = total([rates(relabel(rows, EMOTIONS_6, tau, margin)) for rows in crema])
        smiling = rates(w, SMILING)
        out[f"tau {tau} s, margin {margin}"] = {
            "crema_d_per_minute": c["per_minute_steady"],
            "wolfgang_per_minute": rates(w)["per_minute_steady"],
            "smiling_happiness": f"{smiling['happiness_steady']}/{smiling['face_frames']}",
        }
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the MobileFaceNet teacher")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/display_flicker.json")
    args = ap.parse_args(argv)
    kinds = ["mobilefacenet"] if args.quick else list(TEACHERS)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"detect_every": 4, "default_teacher_every": DEFAULT_TEACHER_EVERY}
    with tempfile.TemporaryDirectory(prefix="flicker-") as tmp:
        for kind in kinds:
            for every in sorted({1, DEFAULT_TEACHER_EVERY}):
                report[f"{kind}, teacher.every {every}"] = measure(Path(tmp), kind, every)
    head = report[f"{kinds[0]}, teacher.every {DEFAULT_TEACHER_EVERY}"]["crema_d"]["all"]
    report["summary"] = (
        f"{kinds[0]} at the default cadence, CREMA-D label changes per minute "
        f"{head['per_minute_raw']} raw -> {head['per_minute_steady']} steady"
    )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for key, r in report.items():
        if isinstance(r, dict):
            w, s, c = r["wolfgang_whole"], r["wolfgang_smiling_290_460"], r["crema_d"]["all"]
            print(
                f"{key}: per minute raw -> steady: Wolfgang {w['per_minute_raw']} -> "
                f"{w['per_minute_steady']}, smiling {s['per_minute_raw']} -> "
                f"{s['per_minute_steady']} ({s['happiness_steady']}/{s['face_frames']} happiness), "
                f"CREMA-D {c['per_minute_raw']} -> {c['per_minute_steady']}"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
