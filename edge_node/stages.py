"""Three-stage capture: decode and detect frame t+2, embed frame t+1, while g and v run on frame t.

Stage A (a thread): the source decodes a frame, :meth:`Pipeline.detect` finds the face.
Stage E (a thread): f embeds the face crop (:class:`~edge_node.pipeline.EmbedAhead`, in a
single-threaded LiteRT interpreter of its own); :meth:`Pipeline.ahead_stages` lists the stages
between A and B, each in a thread of its own. Stage B (the caller's thread):
:meth:`Pipeline.infer`, which takes stage E's embedding. Bounded queues between them keep at
most ``depth`` frames in flight each, so memory is bounded and a slow stage slows the ones before
it down. OpenCV, MediaPipe and LiteRT release the GIL while they compute, so the stages overlap
on two cores.

Why three: f is the largest single cost. In stage B with two LiteRT threads it competed with
stage A for the two cores (XNNPACK's threads wait for each other at every layer); one thread in
a stage of its own balances the load better. Two stage E workers (two frames at once) were slower
again on 2 cores (docs/performance.md has the figures).

Frame order and clip semantics are exactly those of :meth:`Pipeline.process`: stage A keeps its
own copy of the segmenter, fed the same frames in the same order (see :meth:`Pipeline.detect`),
and stage E only adds the embedding the same backbone file gives (stage B recomputes it if the
bundle's backbone differs). When stage B stops early (a frame limit, ``--duration``, the stop
event) the frames the other stages handled ahead are dropped unseen, as if never captured.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_node.pipeline import AheadStage, Detected, Pipeline
from edge_node.sources import FrameSource

DEPTH = 4
_POLL_S = 0.1

T = TypeVar("T")


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


def _put(q: queue.Queue[Any], item: object, halt: threading.Event) -> bool:
    while not halt.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue[Any], stop: threading.Event) -> Iterator[Any]:
    """A stage's results in order until its end; its error is raised here."""
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


def _stage(
    name: str, items: Callable[[], Iterator[T]], depth: int, halt: threading.Event
) -> tuple[queue.Queue[T | _End], threading.Thread]:
    """Run ``items()`` in a thread into a bounded queue; its end or its error follows the items."""
    q: queue.Queue[T | _End] = queue.Queue(maxsize=depth)

    def body() -> None:
        it = None
        try:
            it = items()
            for item in it:
                if not _put(q, item, halt):
                    return
            _put(q, _End(), halt)
        except BaseException as exc:  # handed to the next stage, raised there
            _put(q, _End(exc), halt)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return q, thread


def _ahead(
    open_stage: Callable[[], AheadStage], upstream: queue.Queue[Any], halt: threading.Event
) -> Callable[[], Iterator[Detected]]:
    """One ahead stage over the frames of the stage before it, opened and closed in its thread."""

    def run() -> Iterator[Detected]:
        stage = open_stage()
        try:
            for d in _drain(upstream, halt):
                yield stage(d)
        finally:
            stage.close()

    return run


def detected_frames(
    source: FrameSource,
    pipeline: Pipeline,
    stop: threading.Event,
    depth: int = DEPTH,
    embed: bool = True,
) -> Iterator[Detected]:
    """Stage A and, with ``embed``, the pipeline's ahead stages (E) in threads ahead of the
    caller, results in frame order."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    halt = threading.Event()  # set when stage B is done: the other stages stop too

    def detect_all() -> Iterator[Detected]:
        frames = source.frames(halt)
        try:
            for frame in frames:
                yield pipeline.detect(frame)
        finally:
            close = getattr(frames, "close", None)  # a generator: release the camera/file here
            if close is not None:
                close()

    out, first = _stage("detect", detect_all, depth, halt)
    threads = [first]
    for name, open_stage in pipeline.ahead_stages().items() if embed else ():
        out, thread = _stage(name, _ahead(open_stage, out, halt), depth, halt)
        threads.append(thread)
    try:
        yield from _drain(out, stop)
    finally:
        halt.set()
        for t in threads:
            t.join(timeout=10)
