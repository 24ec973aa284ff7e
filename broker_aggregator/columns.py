"""Column blocks of the stored updates, read straight from a round file (for robust rules).

:func:`broker_aggregator.robust.aggregate_blocks` asks for ``(N, hi - lo)`` blocks: the values ``lo:hi``
of one array in each of N updates. Each body in the round file is a safetensors blob that was
checked on receipt, so its header gives every array's byte range; a block is N ``pread``
calls of ``(hi - lo)`` values each. Memory: one block, never a whole update per node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from broker_aggregator.robust import Reader

_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
}


@contextmanager
def column_reader(path: Path, spans: list[tuple[str, int, int]]) -> Iterator[Reader]:
    """``read(name, lo, hi)`` over the bodies at ``spans`` (node, offset, length) of ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        layouts = [_layout(fd, offset) for _node, offset, _length in spans]

        def read(name: str, lo: int, hi: int) -> np.ndarray:
            out = np.empty((len(layouts), hi - lo), dtype=np.float64)
            for i, layout in enumerate(layouts):
                dtype, start = layout[name]
                raw = os.pread(fd, (hi - lo) * dtype.itemsize, start + lo * dtype.itemsize)
                out[i] = np.frombuffer(raw, dtype=dtype)
            return out

        yield read
    finally:
        os.close(fd)


def _layout(fd: int, offset: int) -> dict[str, tuple[np.dtype, int]]:
    """name -> (dtype, absolute byte offset of its data) for the body at ``offset``."""
    n = int.from_bytes(os.pread(fd, 8, offset), "little")
    header = json.loads(os.pread(fd, n, offset + 8))
    header.pop("__metadata__", None)
    base = offset + 8 + n
    return {
        name: (_DTYPES[info["dtype"]], base + int(info["data_offsets"][0]))
        for name, info in header.items()
    }
