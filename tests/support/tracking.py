"""Helpers the tracking test and the tracking benchmark share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vfer.faces import Box
from vfer.video import FrameReader


def frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video as RGB, through the project's one reader."""
    with FrameReader.open(path) as reader:
        yield from reader


def iou(a: Box, b: Box) -> float:
    iw = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    ih = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.area + b.area - inter)
