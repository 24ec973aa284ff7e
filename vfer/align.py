"""Aligning a face by its landmarks: a similarity transform onto a template, then one warp. Pure.

OpenCV Zoo's expression model (MobileFaceNet) is trained on faces aligned to 112x112 by five
landmarks (right eye, left eye, nose tip, right and left mouth corner; "right" is the person's,
on the image's left) mapped onto :data:`TEMPLATE_112` by a similarity transform (rotation,
uniform scale, shift), least squares, as its own demo and InsightFace's ``norm_crop`` do
(Umeyama's method).

BlazeFace gives six keypoints (:data:`vfer.blazeface.KEYPOINTS`): both eyes, the nose tip, the
*centre* of the mouth and both ear tragions, not the mouth corners. The centre is matched to the
midpoint of the template's two mouth corners (:data:`BLAZEFACE_TEMPLATE`: 4 points), which is
what a least-squares fit of the two corners would do for a mouth symmetric about its centre.
``python -m benchmarks.teachers`` measures this mapping against eyes-only and eyes-and-nose
fits on the London set (docs/personalization.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

ALIGNED_PX = 112
#: OpenCV Zoo's / InsightFace's 5-point template in a 112x112 image: right eye, left eye, nose
#: tip, right mouth corner, left mouth corner (x, y).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)
#: BlazeFace's right eye, left eye, nose tip and mouth centre on the template (the mouth centre
#: on the midpoint of the two corners)
BLAZEFACE_TEMPLATE = np.vstack([TEMPLATE_112[:3], TEMPLATE_112[3:].mean(axis=0)])
#: which of BlazeFace's 6 keypoints each row of BLAZEFACE_TEMPLATE is
BLAZEFACE_POINTS = (0, 1, 2, 3)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform taking ``src`` (n, 2) closest to ``dst`` (n, 2), least squares.

    Umeyama (1991) with the reflection fix; n >= 2 distinct points. ValueError for fewer points,
    unequal shapes, non-finite values or points that all coincide.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (n >= 2, 2) point arrays, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks must be finite")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("the landmarks coincide: no transform")
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ flip @ vt
    scale = float((sigma * np.diag(flip)).sum() / var_s)
    out = np.empty((2, 3), np.float64)
    out[:, :2] = scale * rotation
    out[:, 2] = mu_d - out[:, :2] @ mu_s
    return out


def align(
    rgb: np.ndarray,
    landmarks: Sequence[Sequence[float]] | np.ndarray,
    template: np.ndarray,
    size: int = ALIGNED_PX,
) -> np.ndarray:
    """The ``size`` x ``size`` face of ``rgb`` with ``landmarks`` moved onto ``template``.

    Bilinear, black outside the frame (as OpenCV Zoo's demo warps).
    """
    matrix = similarity(np.asarray(landmarks, np.float64), template)
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def blazeface_landmarks(keypoints: Sequence[tuple[float, float]]) -> np.ndarray:
    """The (4, 2) points of BlazeFace's 6 keypoints that :data:`BLAZEFACE_TEMPLATE` matches."""
    points = np.asarray(keypoints, np.float64)
    if points.shape != (6, 2):
        raise ValueError(
            f"need BlazeFace's 6 keypoints (x, y) in frame pixels, got shape {points.shape}"
        )
    return points[list(BLAZEFACE_POINTS)]
