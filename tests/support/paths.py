"""Where the read-only test data lives (../shared beside the repository, or $FEDVFER_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FEDVFER_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
DATA = SHARED / "data"
BACKBONE_INT8 = MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
BACKBONE_TF1 = MODELS / "mobilenet_v2_1.0_224_quant.tflite"
FACE_MODEL = MODELS / "face_detection_short_range.tflite"
CREMA_D = DATA / "crema_d"
VIDEO = DATA / "video"
LONDON = DATA / "london_face_set"
TEACHER = MODELS / "fer2013_mini_xception_64.tflite"
TEACHER_MOBILEFACENET = MODELS / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx"
YUNET = MODELS / "face_detection_yunet_2023mar.onnx"
