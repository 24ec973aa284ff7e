"""The kiosk's live routes: the state as server-sent events, the preview as MJPEG and as one JPEG.

A stream holds its request thread until the viewer leaves or the kiosk stops; at most
``MAX_STREAMS`` are open at once (more get 503), so a misbehaving page cannot exhaust threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from edge_node.kiosk.handler import KioskRequest

BOUNDARY = "fedvfer-frame"
HEARTBEAT_S = 10.0  # an event stream with nothing new sends a comment this often


class StreamRoutes(KioskRequest):
    """``/api/events``, ``/preview.mjpg`` and ``/preview.jpg``."""

    def _stream(self, ctype: str, interval: float, emit: Callable[[], bytes | None]) -> None:
        """Answer with an endless body; ``emit`` returns the next chunk or None (nothing new)."""
        if not self.ctx.streams.acquire(blocking=False):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "too many open streams")
            return
        try:
            self.close_connection = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            while not self.ctx.stopping():
                chunk = emit()
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.ctx.stop.wait(interval)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away
        finally:
            self.ctx.streams.release()

    def _events(self) -> None:
        state = self.ctx.state
        last: list[Any] = [None, 0.0]

        def emit() -> bytes | None:
            key = (state.snapshot().updated_at, state.pause_requested.is_set())
            now = time.monotonic()
            if key != last[0]:
                last[0], last[1] = key, now
                return b"data: " + json.dumps(state.as_json()).encode() + b"\n\n"
            if now - last[1] >= HEARTBEAT_S:
                last[1] = now
                return b": alive\n\n"
            return None

        self._stream("text/event-stream", 1.0 / self.ctx.config.state_rate_hz, emit)

    def _mjpeg(self) -> None:
        state = self.ctx.state
        last_seq = [-1]

        def emit() -> bytes | None:
            seq, jpeg = state.preview()
            if jpeg is None or seq == last_seq[0]:
                return None
            last_seq[0] = seq
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            )
            return head.encode() + jpeg + b"\r\n"

        ctype = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        self._stream(ctype, 1.0 / self.ctx.config.preview_fps, emit)

    def _jpeg(self) -> None:
        _seq, jpeg = self.ctx.state.preview()
        if jpeg is None:
            self._error(HTTPStatus.NOT_FOUND, "no preview frame yet")
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg")
