"""What every kiosk route shares: the :class:`KioskContext` and the request plumbing.

:class:`KioskRequest` answers the Host check, sends bodies with the page's security headers,
serves the whitelisted static files and reads a POST's JSON object; the routes themselves live in
:mod:`~edge_node.kiosk.streams`, :mod:`~edge_node.kiosk.operator` and
:mod:`~edge_node.kiosk.server`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from typing import Any

from edge_node.config import KioskConfig
from edge_node.kiosk.operator_data import ClipReader
from edge_node.state import NodeState
from vfer.basic_auth import BasicAuth
from vfer.hosts import HostEntry, host_allowed

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


@dataclass
class KioskContext:
    """What every request handler shares (one per running kiosk)."""

    state: NodeState
    config: KioskConfig
    static: dict[str, tuple[bytes, str]]
    auth: BasicAuth | None  # None: no password configured, the operator page is off
    open_store: Callable[[], ClipReader] | None
    node_stop: threading.Event
    hosts: frozenset[HostEntry] = frozenset()
    stop: threading.Event = field(default_factory=threading.Event)
    forget_lock: threading.Lock = field(default_factory=threading.Lock)
    streams: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_STREAMS)
    )

    def stopping(self) -> bool:
        return self.stop.is_set() or self.node_stop.is_set()


class KioskRequest(BaseHTTPRequestHandler):
    """The plumbing under every route."""

    protocol_version = "HTTP/1.1"
    server_version = "fedvfer-kiosk"
    sys_version = ""
    ctx: KioskContext  # set on the subclass made by start_kiosk

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

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"ok": False, "error": message}, headers)

    def _static(self, name: str) -> None:
        item = self.ctx.static.get(name)
        if item is None:
            self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
            return
        self._send(HTTPStatus.OK, item[0], item[1])

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
