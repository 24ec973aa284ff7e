"""`make demo`: the largest end-to-end path that exists, run from a fresh clone.

Until the fleet simulation lands (the Simulation issue), this gets the backbone, builds a bundle
with untrained heads, and runs the real node pipeline pieces (MediaPipe face crop, LiteRT backbone,
IFER per frame, the VFER step over each clip) on the real test clips, and says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import cv2
import numpy as np

from vfer.cli import UserError

CACHE = Path(".cache/demo")


def shared_models() -> Path | None:
    """The read-only model folder: $FEDVFER_MODELS, else ../shared/models beside the repo."""
    env = os.environ.get("FEDVFER_MODELS")
    candidates = [Path(env)] if env else []
    candidates.append(Path.cwd().parent / "shared" / "models")
    return next(
        (c for c in candidates if (c / "face_detection_short_range.tflite").is_file()), None
    )


def ensure_bundle(models: Path | None) -> Path:
    from training.backbone import from_keras_imagenet, from_tflite
    from vfer.bundle import Bundle, write_bundle
    from vfer.classes import EMOTIONS_6
    from vfer.heads import build_ifer, build_vfer, get_weights

    bundle = CACHE / "bundle"
    if (bundle / "manifest.json").is_file():
        return Bundle.load(bundle).path
    CACHE.mkdir(parents=True, exist_ok=True)
    if models and (models / "tf2_mobilenet_v2_1.0_224_ptq.tflite").is_file():
        click.echo(
            f"backbone: cutting {models / 'tf2_mobilenet_v2_1.0_224_ptq.tflite'} at its pool"
        )
        backbone = from_tflite(models / "tf2_mobilenet_v2_1.0_224_ptq.tflite", CACHE)
    else:
        click.echo(
            "backbone: converting Keras MobileNetV2 (ImageNet weights, float32; downloads once)"
        )
        backbone = from_keras_imagenet(CACHE, "float32")
    import keras

    keras.utils.set_random_seed(0)
    write_bundle(
        bundle,
        classes=EMOTIONS_6,
        backbone=backbone,
        ifer_weights=get_weights(build_ifer(6)),
        vfer_weights=get_weights(build_vfer(6)),
        head_version="untrained",
        overwrite=True,
    )
    return bundle


def run_demo() -> None:
    from vfer.backbone import Backbone
    from vfer.bundle import BACKBONE, IFER_TFLITE, VFER_STEP, Bundle
    from vfer.faces import FaceCropper
    from vfer.runtime import IferHead, VferStep

    click.echo("fedvfer demo (foundation stage): the federation simulation is not built yet;")
    click.echo(
        "running the largest end-to-end path that exists: face crop -> f -> IFER per frame -> VFER step.\n"
    )
    models = shared_models()
    if models is None:
        raise UserError(
            "face_detection_short_range.tflite not found: set FEDVFER_MODELS to a folder holding it "
            "(README: 'Models') or place ../shared/models beside the repository"
        )
    bundle = Bundle.load(ensure_bundle(models))
    clips = sorted((models.parent / "data" / "crema_d" / "VideoFlash").glob("*.flv"))
    clips += sorted((models.parent / "data" / "video").glob("*.mp4"))
    if not clips:
        raise UserError(f"no demo videos under {models.parent / 'data'}")
    with (
        FaceCropper.from_path(models / "face_detection_short_range.tflite") as faces,
        Backbone.from_path(bundle.file(BACKBONE)) as f,
        IferHead.from_path(bundle.file(IFER_TFLITE)) as g,
        VferStep.from_path(bundle.file(VFER_STEP)) as v,
    ):
        click.echo(
            f"{'clip':<30} {'frames':>6} {'faces':>6} {'ms/frame':>8}  VFER (untrained heads)"
        )
        for clip in clips:
            cap = cv2.VideoCapture(str(clip))
            n = found = 0
            v.reset()
            t0 = time.perf_counter()
            probs = np.full(bundle.num_classes, 1 / bundle.num_classes)
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                n += 1
                crop = faces.crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if crop is None:
                    continue
                found += 1
                e = f.embed(crop.image)
                g.predict_frame(e)
                probs = v.step(e)
            cap.release()
            ms = (time.perf_counter() - t0) * 1000 / max(n, 1)
            label = bundle.classes[int(np.argmax(probs))] if found else "(no face)"
            click.echo(f"{clip.name:<30} {n:>6} {found:>6} {ms:>8.1f}  {label}")
    click.echo(
        f"\nbundle: {bundle.path} (K={bundle.num_classes}). Next: README.md, docs/architecture.md."
    )


@click.command("demo")
def demo_cmd() -> None:
    """The newcomer's first run (what `make demo` calls)."""
    run_demo()
