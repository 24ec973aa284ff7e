"""A small read-only HTTP endpoint for operators: Prometheus ``/metrics`` and a status page.

The node and the aggregator both serve one (``metrics:`` in node.yaml and aggregator.yaml). It
binds to loopback by default; a password (HTTP basic auth, any user name) protects every route
that asks for it, checked and throttled by :mod:`vfer.basic_auth`, the kiosk's helper (after ten
wrong passwords in a minute every password gets 429 with ``Retry-After``). Routes are plain
callables that return bytes, so the data behind them is computed at request time from the owner's state, never pushed from a hot path.
Only GET and HEAD are answered, and a request whose Host is not the bound address (or
``localhost``) is refused, as the kiosk does against DNS rebinding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from vfer import hosts
from vfer.basic_auth import BasicAuth, Clock
from vfer.hosts import WILDCARDS

log = logging.getLogger(__name__)


class MetricsConfig(BaseModel):
    """The ``metrics:`` section of node.yaml and aggregator.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="serve Prometheus /metrics (and the fleet page)")
    host: str = Field("127.0.0.1", description="address to listen on (loopback by default)")
    port: int = Field(9108, ge=0, le=65535, description="port (0: pick a free one)")
    password_file: Path | None = Field(
        None,
        description="file holding the password (HTTP basic auth, any user name); null: /metrics "
        "is open and the aggregator's fleet page is off",
    )


@dataclass(frozen=True)
class Route:
    """One GET route: what it returns and whether it needs the password."""

    body: Callable[[], bytes]
    content_type: str = "text/plain; charset=utf-8"
    private: bool = True  # needs the password (when one is configured)


def metrics_route(registry: CollectorRegistry, *, private: bool = True) -> Route:
    """``/metrics`` in the Prometheus text format, collected at scrape time."""
    return Route(lambda: generate_latest(registry), CONTENT_TYPE_LATEST, private)


class OpsServer:
    """A running endpoint; :meth:`stop` shuts it down and closes the socket."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


@dataclass(frozen=True)
class _Serving:
    """What every request of one endpoint shares."""

    name: str
    routes: Mapping[str, Route]
    auth: BasicAuth | None
    any_host: bool  # a wildcard bind without allowed_hosts: every Host is accepted
    hosts: frozenset[hosts.HostEntry]


class _OpsHandler(BaseHTTPRequestHandler):
    server_version = "fedvfer"
    sys_version = ""
    serving: _Serving  # set on the subclass start_ops_server makes

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        s = self.serving
        if not s.any_host and not hosts.host_allowed(self.headers.get("Host"), s.hosts):
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n", head=head)
            return
        route = s.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", head=head)
            return
        if route.private and s.auth is not None:
            refusal = s.auth.check(self.headers.get("Authorization"), self.client_address[0])
            if refusal is not None:
                body = (refusal.message + "\n").encode()
                self._send(refusal.status, body, head=head, headers=refusal.headers)
                return
        try:
            body = route.body()
        except Exception:
            log.exception("%s: %s failed", s.name, self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"error\n", head=head)
            return
        self._send(HTTPStatus.OK, body, route.content_type, head=head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        *,
        head: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def start_ops_server(
    routes: Mapping[str, Route],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    password: str | None = None,
    realm: str = "fedvfer",
    name: str = "ops-http",
    allowed_hosts: tuple[str, ...] = (),
    clock: Clock | None = None,
) -> OpsServer:
    """Serve ``routes`` on ``host:port`` (0: a free port) in a daemon thread.

    The Host header must name the bound address, ``localhost`` or ``127.0.0.1`` (any port), or
    else one of ``allowed_hosts`` (:mod:`vfer.hosts`, the kiosk's rule); a wildcard bind
    (``0.0.0.0``, ``::``) with no ``allowed_hosts`` accepts any Host (give it a password).
    ``clock`` times the wrong-password throttle (:class:`vfer.basic_auth.BasicAuth`; default:
    monotonic time).
    """
    serving = _Serving(
        name,
        dict(routes),
        None
        if password is None
        else BasicAuth(password.encode(), realm, name, clock or time.monotonic),
        host.strip() in WILDCARDS and not allowed_hosts,
        hosts.allowed_hosts(allowed_hosts or None, host),
    )
    handler = type("BoundOpsHandler", (_OpsHandler,), {"serving": serving})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    log.info(
        "%s on http://%s:%d%s",
        name,
        host,
        server.server_address[1],
        " (password required)" if password else "",
    )
    return OpsServer(server, thread)
