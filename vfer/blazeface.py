"""MediaPipe's face detector (BlazeFace short range) run on the LiteRT interpreter, without MediaPipe.

The MediaPipe Tasks ``FaceDetector`` is this model plus a fixed graph around it. Loading it maps
``libmediapipe.so`` (128 MB on disk; 38 to 73 MB of it resident in the capture process, depending
on how much of the file the page cache already holds) for what is, per frame, one small TFLite call
and a little arithmetic. The node already holds LiteRT for f, so it runs the same model file
through LiteRT and does the graph's arithmetic here, as MediaPipe's ``FaceDetectorGraph``
configures it (mediapipe/tasks/cc/vision/face_detector/face_detector_graph.cc):

1. **Image to tensor.** The frame's full rectangle is padded to the tensor's aspect ratio
   (square), centred, black outside the frame, and mapped onto 128x128 by one warp with bilinear
   sampling, corner-aligned as MediaPipe's OpenCV converter does. Values go to [-1, 1].
2. **Anchors.** SSD anchors for 4 layers with strides 8, 16, 16, 16, one aspect ratio and one
   interpolated scale each, fixed size: 2 per cell on the 16x16 map and 6 per cell on the 8x8
   map, 896 in all.
3. **Decoding.** Each of the 896 rows is (x, y, w, h, 6 keypoints) relative to its anchor in
   units of 1/128; the score is the sigmoid of the logit clipped to +-100, and rows under
   ``min_confidence`` are dropped.
4. **Weighted non-maximum suppression** (IoU over 0.3): highest score first, each kept box (and
   its keypoints) is the score-weighted mean of the boxes that overlap it, its score the highest
   one's.
5. **Projection** from the padded square back to frame pixels. Every face is returned, best
   first, as MediaPipe's Python API does, with its 6 keypoints (:data:`KEYPOINTS`).

``tests/test_blazeface.py`` holds this to MediaPipe's own output on all 1,187 frames of the real
videos and CREMA-D clips: the same faces on the same frames, 92% of boxes identical and the rest a
pixel off, scores within 0.011 (1e-4 on average), keypoints within 2.3 px (median 1e-4 px). On
128x128 frames, where no resampling happens, the scores agree to 1e-7 and the keypoints to 1e-4 px:
the model runs the same, only the two OpenCV builds' bilinear rounding differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np

from vfer.litert import load_interpreter

INPUT_PX = 128
NUM_ANCHORS = 896
NUM_COORDS = 16  # box (4) + 6 keypoints (x, y)
#: the keypoints in the model's order, as MediaPipe's ``FaceKeypoint`` names them; "right" is the
#: person's right, on the image's left for a face looking at the camera
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
#: (x, y) in frame pixels, one per :data:`KEYPOINTS` entry
Keypoints = tuple[tuple[float, float], ...]
SCORE_CLIP = 100.0
SUPPRESSION_IOU = 0.3  # the Tasks API's default min_suppression_threshold


@cache
def anchors() -> np.ndarray:
    """The 896 anchor centres (x, y) in [0, 1] of the 128x128 input, in the model's row order."""
    centres = []
    for cells, per_cell in ((INPUT_PX // 8, 2), (INPUT_PX // 16, 6)):
        y, x = np.mgrid[0:cells, 0:cells].astype(np.float32)
        grid = np.stack([(x + 0.5) / cells, (y + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    out = np.concatenate(centres)
    assert out.shape == (NUM_ANCHORS, 2)
    return out


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, width, height) in frame pixels, as MediaPipe rounds them, and score.

    ``keypoints``: the 6 points of :data:`KEYPOINTS` in frame pixels (not rounded).
    """

    x: int
    y: int
    width: int
    height: int
    score: float
    keypoints: Keypoints = ()


def letterbox_matrix(width: int, height: int) -> np.ndarray:
    """The 2x3 affine map from frame pixels to tensor pixels (square padding, centred)."""
    side = float(max(width, height))
    s = INPUT_PX / side
    return np.array(
        [[s, 0.0, (side - width) / 2 * s], [0.0, s, (side - height) / 2 * s]], np.float64
    )


def to_tensor(rgb: np.ndarray) -> np.ndarray:
    """The model's (1, 128, 128, 3) float32 input in [-1, 1] for an RGB uint8 frame.

    As MediaPipe's OpenCV converter: the uint8 frame is warped (bilinear, black outside), then
    scaled. Its OpenCV build and ours round the bilinear samples a little differently, which
    moves scores by about 1e-4 on average and a box corner by a pixel now and then.
    """
    h, w = rgb.shape[:2]
    small = cv2.warpAffine(
        rgb,
        letterbox_matrix(w, h),
        (INPUT_PX, INPUT_PX),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return (small.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))[np.newaxis]


def decode(
    regressors: np.ndarray, logits: np.ndarray, min_confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n, 4: xmin, ymin, xmax, ymax in [0, 1] of the input) and scores over the threshold."""
    rows, scores = decode_rows(regressors, logits, min_confidence)
    return rows[:, :4], scores


def decode_rows(
    regressors: np.ndarray, logits: np.ndarray, min_confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows over the threshold and their scores.

    Each row (n, 16) is the box (xmin, ymin, xmax, ymax) then the 6 keypoints (x, y), all in
    [0, 1] of the input.
    """
    raw = np.asarray(regressors, np.float32).reshape(NUM_ANCHORS, NUM_COORDS)
    logit = np.clip(np.asarray(logits, np.float64).reshape(NUM_ANCHORS), -SCORE_CLIP, SCORE_CLIP)
    score = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    keep = score >= min_confidence
    if not keep.any():
        return np.zeros((0, NUM_COORDS), np.float32), np.zeros(0, np.float32)
    raw, score, centre = raw[keep], score[keep], anchors()[keep]
    xc = raw[:, 0] / INPUT_PX + centre[:, 0]
    yc = raw[:, 1] / INPUT_PX + centre[:, 1]
    w, h = raw[:, 2] / INPUT_PX, raw[:, 3] / INPUT_PX
    points = raw[:, 4:].reshape(-1, 6, 2) / INPUT_PX + centre[:, np.newaxis, :]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    return np.concatenate([boxes, points.reshape(-1, 12)], axis=1), score


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    ix = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    iy = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.where((ix > 0) & (iy > 0), ix * iy, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, iou: float = SUPPRESSION_IOU
) -> list[tuple[np.ndarray, float]]:
    """Highest score first; each output row is the score-weighted mean of those overlapping it.

    Overlap is the IoU of the rows' first 4 columns (the box); the mean is over every column, so
    keypoints after the box are merged as MediaPipe merges them.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    out: list[tuple[np.ndarray, float]] = []
    while len(boxes):
        near = _iou(boxes[0], boxes) > iou
        if not near[0]:  # a box of no area overlaps nothing, itself included: MediaPipe stops
            out.append((boxes[0], float(scores[0])))
            break
        weights = scores[near]
        merged = (boxes[near] * weights[:, np.newaxis]).sum(axis=0) / weights.sum()
        out.append((merged, float(scores[0])))
        boxes, scores = boxes[~near], scores[~near]
    return out


class BlazeFace:
    """``detect(rgb)`` -> faces, as MediaPipe's FaceDetector returns them, on one LiteRT thread."""

    def __init__(
        self, model_path: str | os.PathLike[str], min_confidence: float = 0.5, num_threads: int = 1
    ) -> None:
        self._interp: Any = load_interpreter(model_path, num_threads)
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        shapes = sorted(tuple(int(d) for d in o["shape"]) for o in outputs)
        got = [tuple(int(d) for d in i["shape"]) for i in inputs]
        if (
            len(inputs) != 1
            or tuple(inputs[0]["shape"]) != (1, INPUT_PX, INPUT_PX, 3)
            or inputs[0]["dtype"] != np.float32
            or shapes != [(1, NUM_ANCHORS, 1), (1, NUM_ANCHORS, NUM_COORDS)]
        ):
            raise ValueError(
                f"{model_path}: not the BlazeFace short-range face detector (want one float "
                f"input 1x{INPUT_PX}x{INPUT_PX}x3 and outputs 1x{NUM_ANCHORS}x{NUM_COORDS} and "
                f"1x{NUM_ANCHORS}x1; got {got} and {shapes}); "
                "face.detector: mediapipe hands the file to MediaPipe's FaceDetector instead"
            )
        self._input = inputs[0]["index"]
        by_width = {int(o["shape"][-1]): o["index"] for o in outputs}
        self._regressors, self._logits = by_width[NUM_COORDS], by_width[1]
        self.min_confidence = min_confidence

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        self._interp.set_tensor(self._input, to_tensor(rgb))
        self._interp.invoke()
        rows, scores = decode_rows(
            self._interp.get_tensor(self._regressors),
            self._interp.get_tensor(self._logits),
            self.min_confidence,
        )
        faces = []
        inverse = cv2.invertAffineTransform(letterbox_matrix(w, h))
        for row, score in weighted_nms(rows, scores):
            points = np.asarray(row, np.float64).reshape(-1, 2) * INPUT_PX  # 2 corners, 6 keypoints
            (x0, y0), (x1, y1), *kps = points @ inverse[:, :2].T + inverse[:, 2]
            keypoints = tuple((float(x), float(y)) for x, y in kps)
            faces.append(Detection(*_pixels(x0, y0, x1, y1), score, keypoints))
        return faces


def _pixels(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """Whole frame pixels of a box as MediaPipe gives them: truncated, the corner kept >= 0.

    MediaPipe moves a box that reaches past the top or left edge into the frame (its size kept);
    measured on the real videos, where only false positives under the node's threshold do that.
    """
    return max(0, int(x0)), max(0, int(y0)), int(x1 - x0), int(y1 - y0)
