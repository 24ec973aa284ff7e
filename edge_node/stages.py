"""Two-stage capture: decode and detect frame t+1 while f, g and v run on frame t.

Stage A (a thread): the source decodes a frame, :meth:`Pipeline.detect` finds the face. Stage B
(the caller's thread): :meth:`Pipeline.infer`. A bounded queue between them keeps at most
``depth`` frames in flight, so memory is bounded and a slow stage B slows stage A down. OpenCV,
MediaPipe and LiteRT release the GIL while they compute, so the stages overlap on two cores.

Frame order and clip semantics are exactly those of :meth:`Pipeline.process`: stage A keeps its
own copy of the segmenter, fed the same frames in the same order (see :meth:`Pipeline.detect`).
When stage B stops early (a frame limit, ``--duration``, the stop event) the frames stage A
decoded ahead are dropped unseen, as if never captured.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from edge_node.pipeline import Detected, Pipeline
from edge_node.sources import FrameSource

DEPTH = 4
_POLL_S = 0.1


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


def detected_frames(
    source: FrameSource, pipeline: Pipeline, stop: threading.Event, depth: int = DEPTH
) -> Iterator[Detected]:
    """Stage A's results in frame order, computed in a thread ahead of the caller."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    q: queue.Queue[Detected | _End] = queue.Queue(maxsize=depth)
    halt = threading.Event()  # set when stage B is done: stage A's source stops too

    def put(item: Detected | _End) -> bool:
        while not halt.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def stage_a() -> None:
        frames = source.frames(halt)
        try:
            for frame in frames:
                if not put(pipeline.detect(frame)):
                    return
            put(_End())
        except BaseException as exc:  # handed to stage B, raised there
            put(_End(exc))
        finally:
            close = getattr(frames, "close", None)  # a generator: release the camera/file here
            if close is not None:
                close()

    thread = threading.Thread(target=stage_a, name="detect", daemon=True)
    thread.start()
    try:
        while not stop.is_set():
            try:
                item = q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        halt.set()
        thread.join(timeout=10)
