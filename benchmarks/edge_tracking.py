"""Detection cadence: following the face box between detections, against detection on every frame.

    python benchmarks/edge_tracking.py [--every 2 3 4 5 6 8]

For every real video in ``../shared/data/video`` and every CREMA-D clip, each frame goes through
the node's :class:`~vfer.faces.FaceCropper` twice: detecting on every frame (the reference) and
detecting every N frames while following the box in between. Reported per N: the IoU of the
boxes (mean and 5th percentile), frames where one finds a face and the other not, g's per-frame
argmax agreement (the same f and g on both crops), and detector runs per frame. ``edge_latency.py``
calls :func:`measure` for its JSON; run alone it writes ``benchmarks/results/edge_tracking.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tests.support import paths
from tests.support.tracking import frames, iou
from vfer.backbone import Backbone
from vfer.faces import Box, FaceCropper
from vfer.runtime import IferHead

ROOT = Path(__file__).resolve().parents[1]


def videos() -> list[Path]:
    return sorted(p for p in paths.VIDEO.iterdir() if p.is_file()) + sorted(
        (paths.CREMA_D / "VideoFlash").glob("*.flv")
    )


def measure(bundle: Path, face_model: Path, every: list[int]) -> dict[str, object]:
    f = Backbone.from_path(bundle / "backbone.tflite", 2)
    g = IferHead.from_path(bundle / "ifer_head.tflite")
    clips = videos()
    ref: dict[str, list[tuple[Box, int] | None]] = {}
    with FaceCropper.from_path(face_model) as c:
        for v in clips:
            c.reset()
            ref[v.name] = [
                None if (crop := c.crop(rgb)) is None
                else (crop.box, int(np.argmax(g.predict_frame(f.embed(crop.image)))))
                for rgb in frames(v)
            ]  # fmt: skip
    out: dict[str, object] = {
        "videos": [v.name for v in clips],
        "frames": sum(len(r) for r in ref.values()),
    }
    for n in every:
        ious: list[float] = []
        agree = mismatch = 0
        with FaceCropper.from_path(face_model, detect_every=n) as c:
            for v in clips:
                c.reset()
                for rgb, r in zip(frames(v), ref[v.name], strict=True):
                    crop = c.crop(rgb)
                    if (crop is None) != (r is None):
                        mismatch += 1
                    elif crop is not None and r is not None:
                        ious.append(iou(crop.box, r[0]))
                        agree += int(np.argmax(g.predict_frame(f.embed(crop.image)))) == r[1]
            runs = c.detections
        out[f"every_{n}"] = {
            "iou_mean": round(float(np.mean(ious)), 4),
            "iou_p5": round(float(np.percentile(ious, 5)), 4),
            "g_agreement": round(agree / len(ious), 4),
            "face_presence_mismatch_frames": mismatch,
            "detector_runs_per_frame": round(runs / int(out["frames"]), 3),  # type: ignore[call-overload]
        }
    return out


def main() -> int:
    from tests.support.edge_fixtures import build_bundles

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edge-track-") as tmp:
        b = build_bundles(Path(tmp))
        result = measure(b.a, b.face_model, args.every)
    out = ROOT / "benchmarks" / "results" / "edge_tracking.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
