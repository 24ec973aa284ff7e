"""The kiosk's HTTP server: the live page, its state stream, the preview, controls, operator page.

Python's ``http.server`` is enough here: one local viewer (Chromium in kiosk mode), an occasional
operator, a handful of routes. Routes::

    GET  /                       the live page (static/kiosk.html)
    GET  /static/<file>          its CSS and JavaScript (whitelisted, shipped in the package)
    GET  /api/state              JSON of what the page shows (NodeState.as_json())
    GET  /api/events             the same as server-sent events, pushed when it changes
    GET  /preview.mjpg           the camera preview as MJPEG at kiosk.preview_fps
    GET  /preview.jpg            the latest preview frame (for polling clients)
    POST /api/pause, /api/resume stop / restart recording (inference goes on)
    POST /api/forget             {"confirm": true}: the node deletes every clip and VACUUMs
    GET  /operator               operator page (HTTP Basic, password from a file)
    GET  /operator/api/summary   its data: counts per class, recent clips, prediction mix

Every request, GETs included, must name the kiosk in its ``Host`` header
(``kiosk.allowed_hosts``; see :mod:`vfer.hosts`) or gets 421 before any route runs,
which defeats DNS rebinding. POSTs must also be JSON and same-origin, so another web page cannot
trigger them from the kiosk's browser. The server reads :class:`~edge_node.state.NodeState` and
never touches the pipeline. The streams live in :mod:`~edge_node.kiosk.streams`, the operator
page in :mod:`~edge_node.kiosk.operator`, the plumbing in :mod:`~edge_node.kiosk.handler`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_node.config import KioskConfig
from edge_node.kiosk.handler import KioskContext, load_static
from edge_node.kiosk.operator import REALM, OperatorRoutes, default_store_opener
from edge_node.kiosk.operator_data import ClipReader
from edge_node.kiosk.streams import StreamRoutes
from edge_node.state import NodeState
from vfer.basic_auth import BasicAuth, Clock, load_password
from vfer.hosts import allowed_hosts

log = logging.getLogger(__name__)


class KioskHandler(StreamRoutes, OperatorRoutes):
    """Routing and the privacy controls; the routes' bodies are in the classes it joins."""

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        routes: dict[str, Callable[[], None]] = {
            "/": lambda: self._static("kiosk.html"),
            "/api/state": lambda: self._json(HTTPStatus.OK, self.ctx.state.as_json()),
            "/api/events": self._events,
            "/preview.mjpg": self._mjpeg,
            "/preview.jpg": self._jpeg,
            "/operator": self._operator_page,
            "/operator/": self._operator_page,
            "/operator/api/summary": self._operator_summary,
        }
        if path in routes:
            routes[path]()
        elif path.startswith("/static/") and "/" not in path[len("/static/") :]:
            self._static(path[len("/static/") :])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        routes: dict[str, Callable[[dict[str, Any]], None]] = {
            "/api/pause": lambda _b: self._set_paused(True),
            "/api/resume": lambda _b: self._set_paused(False),
            "/api/forget": self._forget,
        }
        if path not in routes:
            self._error(HTTPStatus.NOT_FOUND, f"no such action: {path}")
            return
        body = self._json_body()
        if body is not None:
            routes[path](body)

    def _set_paused(self, paused: bool) -> None:
        event = self.ctx.state.pause_requested
        if paused:
            event.set()
        else:
            event.clear()
        log.info("kiosk: recording %s", "paused" if paused else "resumed")
        self._json(HTTPStatus.OK, {"ok": True, "paused": event.is_set()})

    def _forget(self, body: dict[str, Any]) -> None:
        """Ask the capture loop to forget everything and wait for it (one request at a time)."""
        if body.get("confirm") is not True:
            self._error(HTTPStatus.BAD_REQUEST, 'send {"confirm": true}; the page asks first')
            return
        if not self.ctx.forget_lock.acquire(blocking=False):
            self._error(HTTPStatus.CONFLICT, "already deleting; wait for it to finish")
            return
        try:
            timeout = self.ctx.config.forget_timeout_s
            log.info("kiosk: forget me requested")
            done = self.ctx.state.request_forget(timeout=timeout)
        finally:
            self.ctx.forget_lock.release()
        if done:
            self._json(HTTPStatus.OK, {"ok": True})
        else:
            log.warning("kiosk: the node did not confirm forget me within %.0f s", timeout)
            self._error(
                HTTPStatus.GATEWAY_TIMEOUT, f"the node did not confirm within {timeout:.0f} s"
            )


class KioskHandle:
    """A running kiosk server: ``url`` to open, ``stop()`` to end it (idempotent)."""

    def __init__(self, server: ThreadingHTTPServer, ctx: KioskContext, thread: threading.Thread):
        self._server = server
        self._ctx = ctx
        self._thread = thread
        host, port = server.server_address[:2]
        self.port = int(port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{self.port}/"

    def stop(self, timeout: float = 5.0) -> None:
        if self._ctx.stop.is_set():
            return
        self._ctx.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
        log.info("kiosk: stopped")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(config: KioskConfig, ctx: KioskContext) -> ThreadingHTTPServer:
    """The bound server (IPv4 or IPv6 as the host says); OSError names the address."""
    handler = type("BoundKioskHandler", (KioskHandler,), {"ctx": ctx})
    server_cls = type(
        "KioskServer",
        (ThreadingHTTPServer,),
        {
            "daemon_threads": True,
            "address_family": socket.AF_INET6 if ":" in config.host else socket.AF_INET,
        },
    )
    try:
        return server_cls((config.host, config.port), handler)
    except OSError as exc:
        raise OSError(
            exc.errno, f"kiosk cannot listen on {config.host}:{config.port}: {exc.strerror}"
        ) from exc


def start_kiosk(
    state: NodeState,
    config: KioskConfig,
    store_path: Path | None,
    stop_event: threading.Event,
    *,
    open_store: Callable[[], ClipReader] | None = None,
    clock: Clock = time.monotonic,
) -> KioskHandle:
    """Serve the kiosk page in a background thread; returns once it is listening.

    ``open_store`` overrides how the operator page opens the clip store (default: ClipStore on
    ``store_path``); ``clock`` times the wrong-password throttle. Raises ValueError for an
    unreadable password file and OSError (naming the address) when the port cannot be bound.
    """
    password = load_password(config.operator_password_file, "kiosk.operator_password_file")
    ctx = KioskContext(
        state=state,
        config=config,
        static=load_static(),
        auth=None if password is None else BasicAuth(password, REALM, "kiosk", clock),
        open_store=open_store or default_store_opener(store_path),
        node_stop=stop_event,
        hosts=allowed_hosts(config.allowed_hosts, config.host),
    )
    server = _listen(config, ctx)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name="kiosk-http", daemon=True
    )
    thread.start()
    handle = KioskHandle(server, ctx, thread)
    if not _is_loopback(config.host):
        log.warning("kiosk: listening on %s, reachable from the network", config.host)
    log.info(
        "kiosk: serving %s (operator page %s)",
        handle.url,
        "enabled" if ctx.auth is not None else "disabled",
    )
    return handle
