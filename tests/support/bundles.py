"""Build small real bundles for tests (TensorFlow exports the heads once per call)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tests.support import paths
from training.backbone_cut import cut_at_pool
from vfer.bundle import Bundle, write_bundle
from vfer.heads_spec import ifer_spec, vfer_spec


def random_head(
    spec: Mapping[str, object], seed: int, scale: float = 0.05
) -> dict[str, np.ndarray]:
    """Small random weights with neutral BatchNorm statistics."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, ws in spec.items():
        shape = ws.shape  # type: ignore[attr-defined]
        if name.endswith(("moving_variance", "gamma")):
            out[name] = np.ones(shape, np.float32)
        elif name.endswith(("moving_mean", "beta")):
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = rng.normal(0, scale, shape).astype(np.float32)
    return out


def cut_backbone(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_bytes(cut_at_pool(paths.BACKBONE_INT8.read_bytes()))
    return out


def build_bundle(
    out: Path,
    classes: tuple[str, ...],
    seed: int = 0,
    ifer_weights: Mapping[str, np.ndarray] | None = None,
    vfer_weights: Mapping[str, np.ndarray] | None = None,
    head_version: str = "central-r0",
) -> Bundle:
    backbone = cut_backbone(out.parent / "backbone.tflite")
    k = len(classes)
    return write_bundle(
        out,
        classes=classes,
        backbone=backbone,
        ifer_weights=ifer_weights or random_head(ifer_spec(k), seed),
        vfer_weights=vfer_weights or random_head(vfer_spec(k), seed + 1),
        head_version=head_version,
    )
