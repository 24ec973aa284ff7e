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
