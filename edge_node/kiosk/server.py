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
never touches the pipeline.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edge_node.config import KioskConfig
from edge_node.kiosk.auth import (
    REALM,
    FailureThrottle,
    basic_password,
    load_password,
    password_matches,
)
from edge_node.kiosk.operator_data import ClipReader, operator_summary
from edge_node.state import NodeState
from vfer.hosts import HostEntry, allowed_hosts, host_allowed

log = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Only the page's own files; no CDN, no external fonts (the Pi may be offline).
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
BOUNDARY = "fedvfer-frame"
MAX_BODY = 4096
MAX_STREAMS = 6  # concurrent MJPEG + event streams; more are refused with 503


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file under ``static/`` as (bytes, content type), read once at start."""
    root = resources.files("edge_node.kiosk") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for entry in root.iterdir():
        suffix = Path(entry.name).suffix
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    for needed in ("kiosk.html", "operator.html"):
        if needed not in files:
            raise FileNotFoundError(f"kiosk page file static/{needed} is missing from the package")
    return files


def default_store_opener(store_path: Path | None) -> Callable[[], ClipReader] | None:
    """Open the node's clip store read API per request (sqlite connections are per thread)."""
    if store_path is None:
        return None

    def open_store() -> ClipReader:
        from edge_node.store import ClipStore  # the node's store; imported only when needed

        return ClipStore(store_path)

    return open_store


@dataclass
class KioskContext:
    """What every request handler shares (one per running kiosk)."""

    state: NodeState
    config: KioskConfig
    static: dict[str, tuple[bytes, str]]
    password: bytes | None
    open_store: Callable[[], ClipReader] | None
    node_stop: threading.Event
    hosts: frozenset[HostEntry] = frozenset()
    stop: threading.Event = field(default_factory=threading.Event)
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    throttle_lock: threading.Lock = field(default_factory=threading.Lock)
    forget_lock: threading.Lock = field(default_factory=threading.Lock)
    streams: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_STREAMS)
    )

    def stopping(self) -> bool:
        return self.stop.is_set() or self.node_stop.is_set()


class KioskHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fedvfer-kiosk"
    sys_version = ""
    ctx: KioskContext  # set on the subclass made by start_kiosk

    # ---- plumbing -------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        self._send(status, body, "application/json", headers)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"ok": False, "error": message})

    def _static(self, name: str) -> None:
        item = self.ctx.static.get(name)
        if item is None:
            self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
            return
        self._send(HTTPStatus.OK, item[0], item[1])

    # ---- routing --------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        """The Host allowlist, first thing on every request; answers 421 itself when not."""
        if host_allowed(self.headers.get("Host"), self.ctx.hosts):
            return True
        log.warning(
            "kiosk: refused a request for host %r from %s",
            (self.headers.get("Host") or "")[:100],
            self.client_address[0],
        )
        self.close_connection = True
        self._error(HTTPStatus.MISDIRECTED_REQUEST, "this host name is not the kiosk's")
        return False

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

    def _json_body(self) -> dict[str, Any] | None:
        """The request's JSON object, or None after answering why it was refused."""
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return None
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)"
            )
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, f"body must be 0..{MAX_BODY} bytes")
            return None
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            return None
        return body

    # ---- controls -------------------------------------------------------------------------
    def _set_paused(self, paused: bool) -> None:
        event = self.ctx.state.pause_requested
        if paused:
            event.set()
        else:
            event.clear()
        log.info("kiosk: recording %s", "paused" if paused else "resumed")
        self._json(HTTPStatus.OK, {"ok": True, "paused": event.is_set()})

    def _forget(self, body: dict[str, Any]) -> None:
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

    # ---- streams --------------------------------------------------------------------------
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
        heartbeat_s = 10.0

        def emit() -> bytes | None:
            key = (state.snapshot().updated_at, state.pause_requested.is_set())
            now = time.monotonic()
            if key != last[0]:
                last[0], last[1] = key, now
                return b"data: " + json.dumps(state.as_json()).encode() + b"\n\n"
            if now - last[1] >= heartbeat_s:
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

    # ---- operator -------------------------------------------------------------------------
    def _authorized(self) -> bool:
        """True when the operator password matches; otherwise answers 401/403/429 itself."""
        ctx = self.ctx
        if ctx.password is None:
            msg = (
                "The operator page is disabled: no password is configured. Put a password in a "
                "file readable only by the node and set kiosk.operator_password_file in node.yaml."
            )
            self._send(HTTPStatus.FORBIDDEN, msg.encode(), "text/plain; charset=utf-8")
            return False
        now = time.monotonic()
        with ctx.throttle_lock:
            if ctx.throttle.blocked(now):
                self._error(HTTPStatus.TOO_MANY_REQUESTS, "too many wrong passwords; wait a minute")
                return False
        given = basic_password(self.headers.get("Authorization"))
        if password_matches(given, ctx.password):
            return True
        if given is not None:
            with ctx.throttle_lock:
                ctx.throttle.record_failure(now)
            log.warning("kiosk: wrong operator password from %s", self.client_address[0])
        self._send(
            HTTPStatus.UNAUTHORIZED,
            b"operator password required",
            "text/plain; charset=utf-8",
            {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
        return False

    def _operator_page(self) -> None:
        if self._authorized():
            self._static("operator.html")

    def _operator_summary(self) -> None:
        if not self._authorized():
            return
        if self.ctx.open_store is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "this node has no clip database")
            return
        query = parse_qs(urlsplit(self.path).query)
        try:
            bucket_s = float(query.get("bucket_s", ["3600"])[0])
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "bucket_s and limit must be numbers")
            return
        if not (60 <= bucket_s <= 7 * 86400 and 1 <= limit <= 500):
            self._error(HTTPStatus.BAD_REQUEST, "need 60 <= bucket_s <= 604800, 1 <= limit <= 500")
            return
        classes = self.ctx.state.snapshot().model.classes
        try:
            store = self.ctx.open_store()
            try:
                data = operator_summary(store, classes, limit, bucket_s)
            finally:
                close = getattr(store, "close", None)
                if callable(close):
                    close()
        except Exception as exc:  # a broken or locked database must not kill the page
            log.warning("kiosk: operator summary failed: %s", exc)
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"clip database unavailable: {exc}")
            return
        self._json(HTTPStatus.OK, data)


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


def start_kiosk(
    state: NodeState,
    config: KioskConfig,
    store_path: Path | None,
    stop_event: threading.Event,
    *,
    open_store: Callable[[], ClipReader] | None = None,
) -> KioskHandle:
    """Serve the kiosk page in a background thread; returns once it is listening.

    ``open_store`` overrides how the operator page opens the clip store (default: ClipStore on
    ``store_path``). Raises ValueError for an unreadable password file and OSError (naming the
    address) when the port cannot be bound.
    """
    ctx = KioskContext(
        state=state,
        config=config,
        static=load_static(),
        password=load_password(config.operator_password_file),
        open_store=open_store or default_store_opener(store_path),
        node_stop=stop_event,
        hosts=allowed_hosts(config.allowed_hosts, config.host),
    )
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
        server = server_cls((config.host, config.port), handler)
    except OSError as exc:
        raise OSError(
            exc.errno, f"kiosk cannot listen on {config.host}:{config.port}: {exc.strerror}"
        ) from exc
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
        "enabled" if ctx.password is not None else "disabled",
    )
    return handle
