"""The frozen backbone f: MobileNetV2 1.0/224 (ImageNet) up to its 1280-d global-average pool.

f is always a TFLite artifact (``backbone.tflite``), never trained. Its contract, whichever way it
was made: one input, a uint8 RGB face crop ``[1, 224, 224, 3]`` with raw 0..255 pixels; one output,
the float32 pooled embedding ``[1, 1280]``.

Two ways to make it (``python -m training backbone``), both lab code in :mod:`training`:

* :func:`training.backbone_cut.cut_at_pool` takes an existing ImageNet MobileNetV2 ``.tflite`` (for example the int8 one
  in ``../shared/models``), makes its global-pool tensor the only output (reshaped to ``[1, 1280]``
  and dequantized to float32) and drops every operator, tensor and buffer after it. No TensorFlow
  needed: the flatbuffer schema ships with LiteRT.
* :func:`training.backbone.from_keras_imagenet` converts Keras ``MobileNetV2(weights="imagenet",
  include_top=False, pooling="avg")`` to float32 or int8 TFLite (downloads the weights once).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfer.heads_spec import EMBEDDING_DIM
from vfer.litert import dequantize, load_interpreter

INPUT_SIZE = 224


class BackboneError(ValueError):
    """A model that cannot serve as the backbone f."""


def preprocess_for(detail: dict[str, Any], crop: np.ndarray) -> np.ndarray:
    """Feed a uint8 RGB crop to an input tensor, whatever its type.

    uint8 inputs take raw pixels (ImageNet MobileNets quantize [-1, 1] onto 0..255), int8 inputs
    the pixels shifted by 128, float32 inputs ``pixel / 127.5 - 1``.
    """
    batch = crop[np.newaxis] if crop.ndim == 3 else crop
    dtype = detail["dtype"]
    if dtype == np.uint8:
        return batch.astype(np.uint8, copy=False)
    if dtype == np.int8:
        return (batch.astype(np.int16) - 128).astype(np.int8)
    return (batch.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


@dataclass(frozen=True)
class BackboneOptions:
    model_path: Path
    num_threads: int = 2


class Backbone:
    """f as a LiteRT model: ``embed(crop)`` turns a 224x224 RGB face crop into 1280 floats."""

    def __init__(self, options: BackboneOptions) -> None:
        self.options = options
        self._interp = load_interpreter(options.model_path, options.num_threads)
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackboneError(
                f"{options.model_path}: a backbone has one input and one output, found "
                f"{len(inputs)} and {len(outputs)} (cut it with `python -m training backbone --from-tflite`)"
            )
        self._in, self._out = inputs[0], outputs[0]
        if list(self._in["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3]:
            raise BackboneError(
                f"backbone input shape {list(self._in['shape'])}, expected [1, 224, 224, 3]"
            )
        if int(np.prod(self._out["shape"])) != EMBEDDING_DIM:
            raise BackboneError(
                f"backbone output shape {list(self._out['shape'])}, expected 1280 values"
            )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], num_threads: int = 2) -> Backbone:
        return cls(BackboneOptions(Path(path), num_threads))

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """One ``(224, 224, 3)`` uint8 RGB crop to a ``(1280,)`` float32 embedding."""
        if crop.shape != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"embed() takes one (224, 224, 3) RGB crop, got shape {crop.shape}")
        self._interp.set_tensor(self._in["index"], preprocess_for(self._in, crop))
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out["index"])
        return np.asarray(dequantize(raw, self._out), dtype=np.float32).reshape(EMBEDDING_DIM)

    def close(self) -> None:
        self._interp = None

    def __enter__(self) -> Backbone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
