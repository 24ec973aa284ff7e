"""The teacher's cost on the node, for ``python -m benchmarks.edge_latency`` (issue 22, item 4).

The bundle of the other figures plus OpenCV Zoo's MobileFaceNet as its teacher (the kind the docs
recommend), run three ways in the node's loop (``VARIANTS``: the default cadence in stage T of its
own, every frame in stage T, the default cadence inside stage B) beside the same loop without a
teacher, then the capture process at 15 fps with it. :func:`goals` holds the figures to issue
22's goals: the pipeline at least 200 fps with the teacher, the capture process under 25 % of one
core at 15 fps and at most 250 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_node.display import DEFAULT_TEACHER_EVERY
from tests.support import paths
from vfer.bundle import BACKBONE, Bundle, write_bundle

#: name -> (teacher.every, stage T); all detect every 4th frame with the three stages overlapped
VARIANTS: dict[str, tuple[int, bool]] = {
    "every_4_overlap_teacher": (DEFAULT_TEACHER_EVERY, True),  # the node's defaults
    "every_4_overlap_teacher_every_frame": (1, True),
    "every_4_overlap_teacher_in_stage_b": (DEFAULT_TEACHER_EVERY, False),
}


def teacher_bundle(plain: Path, out: Path) -> Path:
    """``plain`` with the MobileFaceNet added as its teacher (the same f, g and v)."""
    b = Bundle.load(plain)
    write_bundle(
        out,
        classes=b.classes,
        backbone=b.file(BACKBONE),
        ifer_weights=b.ifer_weights(),
        vfer_weights=b.vfer_weights(),
        head_version=b.manifest.head_version,
        teacher=paths.TEACHER_MOBILEFACENET,
        overwrite=True,
    )
    return out


def teacher_ms(video: Path, face_model: Path, n: int) -> dict[str, Any]:
    """Stage T's own cost per face on the benchmark's source: the alignment (``prepare``) and the
    model (``predict_input``) timed apart, one OpenCV thread, wall and this thread's CPU time."""
    import time

    import cv2
    import numpy as np

    from vfer.classes import EMOTIONS_6
    from vfer.faces import FaceCropper
    from vfer.teachers import open_teacher

    times: dict[str, list[float]] = {
        k: [] for k in ("prepare", "model", "prepare_cpu", "model_cpu")
    }
    cap = cv2.VideoCapture(str(video))
    with (
        FaceCropper.from_path(face_model) as cropper,
        open_teacher(paths.TEACHER_MOBILEFACENET, EMOTIONS_6, num_threads=1) as teacher,
    ):
        while len(times["model"]) < n + 5:
            ok, bgr = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            face = cropper.crop(rgb)
            if face is None:
                continue
            w0, c0 = time.perf_counter(), time.thread_time()
            x = teacher.prepare(rgb, face)
            w1, c1 = time.perf_counter(), time.thread_time()
            teacher.predict_input(x)
            w2, c2 = time.perf_counter(), time.thread_time()
            for key, sec in (("prepare", w1 - w0), ("model", w2 - w1),
                             ("prepare_cpu", c1 - c0), ("model_cpu", c2 - c1)):  # fmt: skip
                times[key].append(sec * 1e3)
    cap.release()

    def stats(ms: list[float]) -> dict[str, float]:
        a = np.asarray(ms[5:])  # the first calls allocate
        return {"mean": round(float(a.mean()), 3), "p50": round(float(np.median(a)), 3)}

    return {"faces": n, **{k: stats(v) for k, v in times.items()}}


def goals(
    pipe: dict[str, dict[str, float]], capture: dict[str, Any], without: dict[str, Any]
) -> dict[str, Any]:
    """The figures against issue 22's goals, with the loop and the capture without the teacher."""
    fps = pipe["every_4_overlap_teacher"]["fps"]
    cpu = capture["cpu_percent_of_one_core"]
    return {
        "pipeline_fps_with_teacher": fps,
        "pipeline_fps_without_teacher": pipe["every_4_overlap"]["fps"],
        "pipeline_fps_teacher_every_frame": pipe["every_4_overlap_teacher_every_frame"]["fps"],
        "pipeline_fps_teacher_in_stage_b": pipe["every_4_overlap_teacher_in_stage_b"]["fps"],
        "capture_cpu_percent_of_one_core_at_15fps": cpu,
        "capture_cpu_percent_without_teacher": without["cpu_percent_of_one_core"],
        "capture_rss_mb_max": capture["rss_mb_max"],
        "capture_rss_mb_max_without_teacher": without["rss_mb_max"],
        "teacher_every": DEFAULT_TEACHER_EVERY,
        "goals": {
            "pipeline_fps_with_teacher>=200": fps >= 200,
            "capture_cpu_at_15fps<25%_of_one_core": cpu is not None and cpu < 25,
            "capture_rss_mb<=250": capture["rss_mb_max"] <= 250,
        },
    }
