"""The TFLite runtime: LiteRT (``ai_edge_litert``), falling back to ``tflite_runtime`` only where absent.

tflite-runtime 2.14 is unmaintained and fails with numpy 2 and newer op versions; LiteRT is its
successor and runs everywhere we deploy (x86_64, aarch64 Raspberry Pi OS).
"""

from __future__ import annotations

import os
from typing import Any


def interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - only where LiteRT has no wheel
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found,no-redef]
    return Interpreter


def load_interpreter(
    path: str | os.PathLike[str], num_threads: int | None = None, *, preserve_all: bool = False
) -> Any:
    """A ready interpreter for ``path`` (tensors allocated)."""
    cls = interpreter_class()
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if num_threads:
        kwargs["num_threads"] = num_threads
    if preserve_all:
        kwargs["experimental_preserve_all_tensors"] = True
    try:
        interp = cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{path}: not a TFLite model LiteRT can load: {exc}") from exc
    interp.allocate_tensors()
    return interp


def dequantize(values: Any, detail: dict[str, Any]) -> Any:
    """Real values of a (possibly quantized) tensor, as float32."""
    import numpy as np

    scale, zero = detail.get("quantization", (0.0, 0))
    if scale:
        return (values.astype(np.float32) - np.float32(zero)) * np.float32(scale)
    return values.astype(np.float32)
