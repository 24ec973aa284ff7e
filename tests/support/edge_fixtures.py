"""Edge-node test fixtures: real bundles (built once per test session), a Picamera2 stand-in.

A test module declares its own session fixture over :func:`build_bundles` (importing a fixture
into several modules makes pytest run it once per module). The bundles are memoized here by the
session's base temp folder, so TensorFlow exports the heads once per session, not per module.
The benchmark calls :func:`build_bundles` on its own temp folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import require
from tests.support import paths
from tests.support.bundles import random_head

_BUILT: dict[Path, EdgeBundles] = {}


@dataclass(frozen=True)
class EdgeBundles:
    """Two K=6 bundles with different (random) heads over the same cut int8 backbone."""

    a: Path
    b: Path
    face_model: Path

    def env(self) -> dict[str, str]:
        """Environment for a subprocess of the CLI: the face model by variable, quiet TF."""
        return {
            **os.environ,
            "FEDVFER_FACE_MODEL": str(self.face_model),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "GLOG_minloglevel": "3",
        }


def build_bundles(root: Path) -> EdgeBundles:
    if root in _BUILT:
        return _BUILT[root]
    from training.backbone_cut import cut_at_pool
    from vfer.bundle import write_bundle
    from vfer.classes import EMOTIONS_6
    from vfer.heads_spec import ifer_spec, vfer_spec

    face_model = require(paths.FACE_MODEL)
    edge = root / "edge-bundles"
    edge.mkdir(exist_ok=True)
    backbone = edge / "backbone.tflite"
    backbone.write_bytes(cut_at_pool(require(paths.BACKBONE_INT8).read_bytes()))
    made = []
    for name, seed in (("a", 1), ("b", 2)):
        write_bundle(
            edge / f"bundle-{name}",
            classes=EMOTIONS_6,
            backbone=backbone,
            ifer_weights=random_head(ifer_spec(6), seed),
            vfer_weights=random_head(vfer_spec(6), seed + 10),
            head_version=f"test-{name}",
            overwrite=True,
        )
        made.append(edge / f"bundle-{name}")
    _BUILT[root] = EdgeBundles(made[0], made[1], face_model)
    return _BUILT[root]


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())


class FakePicamera2:
    """Mimics the Picamera2 calls :class:`edge_node.sources.Picamera2Source` makes.

    Frames come from ``frames`` (BGR arrays, as "RGB888" is in memory); ``None`` entries raise
    like a camera losing its connection, a wrong-shaped array is a corrupt frame.
    """

    def __init__(self, frames: list[Any]) -> None:
        self._frames = list(frames)
        self.calls: list[str] = []
        self.config: dict[str, Any] | None = None
        self.started = self.closed = False

    def create_video_configuration(
        self, main: dict[str, Any] | None = None, controls: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.calls.append("create_video_configuration")
        return {"main": dict(main or {}), "controls": dict(controls or {})}

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append("configure")
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera must be configured before starting")
        self.calls.append("start")
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera not started")
        if name != "main":
            raise ValueError(f"no stream {name}")
        if not self._frames:
            raise RuntimeError("camera disconnected")
        frame = self._frames.pop(0)
        if frame is None:
            raise RuntimeError("camera disconnected")
        return np.asarray(frame)

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True
