"""The heads at run time, on LiteRT: per-frame IFER and the streaming VFER step.

Wrapped like MediaPipe Tasks: options, ``from_path``, explicit methods per mode
(``predict_frame`` for g, ``step`` / ``reset`` for v), ``close()`` and a context manager.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vfer.heads_spec import EMBEDDING_DIM, V_LSTM
from vfer.litert import load_interpreter

SIGNATURE = "serving_default"


def _runner(path: Path, num_threads: int, inputs: set[str], outputs: set[str]) -> tuple[Any, Any]:
    interp = load_interpreter(path, num_threads)
    sigs = interp.get_signature_list()
    if SIGNATURE not in sigs:
        raise ValueError(
            f"{path}: no '{SIGNATURE}' signature (found {sorted(sigs)}); re-export the bundle"
        )
    sig = sigs[SIGNATURE]
    if set(sig["inputs"]) != inputs or set(sig["outputs"]) != outputs:
        raise ValueError(
            f"{path}: signature has inputs {sorted(sig['inputs'])} and outputs {sorted(sig['outputs'])}, "
            f"expected {sorted(inputs)} and {sorted(outputs)}"
        )
    return interp, interp.get_signature_runner(SIGNATURE)


def _embedding(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape not in ((EMBEDDING_DIM,), (1, EMBEDDING_DIM)):
        raise ValueError(f"expected one 1280-d embedding, got shape {arr.shape}")
    return arr.reshape(1, EMBEDDING_DIM)


class IferHead:
    """g on LiteRT: ``predict_frame(embedding) -> (K,)`` probabilities."""

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        self.path = Path(path)
        self._interp, self._run = _runner(self.path, num_threads, {"embedding"}, {"probs"})
        self.num_classes = int(
            self._interp.get_signature_runner(SIGNATURE).get_output_details()["probs"]["shape"][-1]
        )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], num_threads: int = 1) -> IferHead:
        return cls(Path(path), num_threads)

    def predict_frame(self, embedding: np.ndarray) -> np.ndarray:
        if self._run is None:
            raise ValueError("this IferHead is closed")
        return np.asarray(self._run(embedding=_embedding(embedding))["probs"][0], dtype=np.float32)

    def predict_frames(self, embeddings: np.ndarray) -> np.ndarray:
        """(T, 1280) -> (T, K), one frame at a time."""
        out = np.empty((len(embeddings), self.num_classes), dtype=np.float32)
        for i, e in enumerate(embeddings):
            out[i] = self.predict_frame(e)
        return out

    def close(self) -> None:
        self._run = None
        self._interp = None

    def __enter__(self) -> IferHead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VferStep:
    """v's streaming step on LiteRT. The LSTM state lives here: ``reset()`` at a new clip.

    ``step(embedding)`` feeds one frame and returns the clip's probabilities so far.
    """

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        self.path = Path(path)
        self._interp, self._run = _runner(
            self.path, num_threads, {"embedding", "h", "c"}, {"probs", "h_out", "c_out"}
        )
        details = self._interp.get_signature_runner(SIGNATURE).get_output_details()
        self.num_classes = int(details["probs"]["shape"][-1])
        self.frames = 0
        self.reset()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], num_threads: int = 1) -> VferStep:
        return cls(Path(path), num_threads)

    def reset(self) -> None:
        self._h = np.zeros((1, V_LSTM), dtype=np.float32)
        self._c = np.zeros((1, V_LSTM), dtype=np.float32)
        self.frames = 0
        self.probs: np.ndarray | None = None

    def step(self, embedding: np.ndarray) -> np.ndarray:
        if self._run is None:
            raise ValueError("this VferStep is closed")
        out = self._run(embedding=_embedding(embedding), h=self._h, c=self._c)
        self._h, self._c = out["h_out"], out["c_out"]
        self.frames += 1
        self.probs = np.asarray(out["probs"][0], dtype=np.float32)
        return self.probs

    def predict_clip(self, embeddings: np.ndarray) -> np.ndarray:
        """A whole clip from zero state; leaves the state reset."""
        self.reset()
        probs = np.full(self.num_classes, 1.0 / self.num_classes, dtype=np.float32)
        for e in embeddings:
            probs = self.step(e)
        self.reset()
        return probs

    def close(self) -> None:
        self._run = None
        self._interp = None

    def __enter__(self) -> VferStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
