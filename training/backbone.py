"""Making the backbone f: from Keras' ImageNet MobileNetV2, or cut from an existing .tflite."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.backbone_cut import cut_at_pool
from vfer.atomic import atomic_write_bytes
from vfer.backbone import INPUT_SIZE, Backbone
from vfer.cli import UserError

log = logging.getLogger(__name__)
OFFLINE_HINT = (
    "use `python -m training backbone --from-tflite MODEL.tflite --out DIR` with an ImageNet "
    "MobileNetV2 .tflite instead (for example ../shared/models/tf2_mobilenet_v2_1.0_224_ptq.tflite)"
)
_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def from_tflite(
    src: str | os.PathLike[str], out_dir: str | os.PathLike[str], tensor: int | None = None
) -> Path:
    """Cut an ImageNet MobileNetV2 .tflite at its global pool; writes ``out_dir/backbone.tflite``."""
    src_path = Path(src)
    if not src_path.is_file():
        raise UserError(f"{src_path}: no such model file")
    out = Path(out_dir) / "backbone.tflite"
    atomic_write_bytes(out, cut_at_pool(src_path.read_bytes(), tensor))
    Backbone.from_path(out).close()  # it loads and has the contract's shapes
    return out


def representative_crops(folder: str | os.PathLike[str], limit: int = 200) -> list[np.ndarray]:
    """224x224 RGB center crops of the images in ``folder`` (for int8 calibration)."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _IMAGE_EXT)[:limit]
    crops = []
    for p in paths:
        bgr = cv2.imread(str(p))
        if bgr is None:
            log.warning("representative set: cannot read %s, skipped", p)
            continue
        h, w = bgr.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        crop = cv2.resize(bgr[y0 : y0 + side, x0 : x0 + side], (INPUT_SIZE, INPUT_SIZE))
        crops.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
    if not crops:
        raise UserError(f"{folder}: no readable images for the representative set")
    return crops


def from_keras_imagenet(
    out_dir: str | os.PathLike[str],
    precision: str = "int8",
    representative: list[np.ndarray] | None = None,
    weights: str | None = "imagenet",
) -> Path:
    """Convert Keras ``MobileNetV2(include_top=False, pooling="avg")`` to ``out_dir/backbone.tflite``.

    The TFLite input is uint8 raw pixels for int8 (its quantization maps 0..255 onto [-1, 1]) and
    float32 ``pixel / 127.5 - 1`` for float32; the output is float32 [1, 1280] either way.
    ``weights=None`` builds the same graph with random weights (tests, no download).
    """
    if precision not in ("int8", "float32"):
        raise UserError(f"precision must be int8 or float32, got {precision!r}")
    if precision == "int8" and not representative:
        raise UserError("int8 needs a representative set of face images: pass --representative DIR")
    import keras
    import tensorflow as tf

    try:
        base = keras.applications.MobileNetV2(
            weights=weights,
            include_top=False,
            pooling="avg",
            input_shape=(INPUT_SIZE, INPUT_SIZE, 3),
        )
    except Exception as exc:  # keras raises a bare Exception for a failed download
        raise UserError(
            f"cannot get the Keras ImageNet weights (offline?): {exc}; {OFFLINE_HINT}"
        ) from None

    class F(tf.Module):  # type: ignore[misc]
        @tf.function(
            input_signature=[
                tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name="image")
            ]
        )
        def serve(self, image: Any) -> dict[str, Any]:
            return {"embedding": base(image, training=False)}

    module = F()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    if precision == "int8":
        crops = representative or []

        def dataset() -> Iterator[list[np.ndarray]]:
            for crop in crops:
                yield [(crop[np.newaxis].astype(np.float32) / 127.5 - 1.0)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    out = Path(out_dir) / "backbone.tflite"
    atomic_write_bytes(out, bytes(converter.convert()))
    Backbone.from_path(out).close()
    return out
