"""HTTP basic auth for every password-protected endpoint, with wrong passwords throttled.

One helper for the kiosk's operator page (:mod:`edge_node.kiosk.server`), the node's ``/metrics``
and the aggregator's ``/metrics`` and fleet page (both served by :mod:`vfer.ops_http`). Any user
name is accepted; the password is compared in constant time. After ``limit`` wrong passwords in
``window_s`` seconds (for all clients together) every request that needs the password, the right
one included, gets 429 with ``Retry-After`` until the oldest failure leaves the window: a guesser
gets ``limit`` answers a minute, and a right guess cannot be told apart while blocked. A request
with no password at all (a browser before its login prompt) is not a failure.

Each endpoint is one device with one operator, so a global limit is enough and needs no
per-address bookkeeping; its cost is that a guesser also locks the operator (and a Prometheus
scraper) out until the window passes. Times come from ``clock``, so the throttle is testable
without waiting.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

log = logging.getLogger(__name__)

#: Wrong passwords allowed per window, for all clients together, and the window.
FAILURE_LIMIT = 10
FAILURE_WINDOW_S = 60.0

Clock = Callable[[], float]


def load_password(path: Path | None, what: str = "password file") -> bytes | None:
    """The password in the file ``path`` (one line, surrounding whitespace ignored), or None when
    no file is configured.

    Raises :class:`ValueError` naming ``what`` and the file when it cannot be read or is empty, so
    a server with a broken password file refuses to start instead of exposing or hiding its page.
    """
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path}: not UTF-8 text") from exc
    password = text.strip()
    if not password:
        raise ValueError(f"{what} {path}: the file is empty")
    return password.encode("utf-8")


def basic_password(header: str | None) -> bytes | None:
    """The password inside an ``Authorization: Basic ...`` header (any user name), else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, sep, password = decoded.partition(b":")
    return password if sep else None


def password_matches(given: bytes | None, expected: bytes) -> bool:
    """Constant-time comparison; a missing password never matches."""
    if given is None:
        return False
    return hmac.compare_digest(given, expected)


class FailureThrottle:
    """At most ``limit`` wrong passwords per ``window_s`` seconds (pure: times are passed in)."""

    def __init__(self, limit: int = FAILURE_LIMIT, window_s: float = FAILURE_WINDOW_S) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"need limit >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._failures: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._failures and now - self._failures[0] >= self.window_s:
            self._failures.popleft()

    def blocked(self, now: float) -> bool:
        self._expire(now)
        return len(self._failures) >= self.limit

    def retry_after(self, now: float) -> int:
        """Whole seconds until a password is checked again (0: now)."""
        if not self.blocked(now):
            return 0
        return max(1, math.ceil(self._failures[0] + self.window_s - now))

    def record_failure(self, now: float) -> None:
        self._expire(now)
        self._failures.append(now)


@dataclass(frozen=True)
class Refusal:
    """Why a request was not let in: 401 (ask for the password) or 429 (too many wrong ones)."""

    status: HTTPStatus
    message: str
    headers: dict[str, str]


@dataclass
class BasicAuth:
    """One endpoint's password check; :meth:`check` is safe to call from any request thread."""

    password: bytes
    realm: str
    name: str = "http"  # for the log: which endpoint was guessed at
    clock: Clock = time.monotonic
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self, header: str | None, client: str) -> Refusal | None:
        """None when ``header`` carries the password; else the answer to send instead."""
        with self._lock:
            now = self.clock()
            wait = self.throttle.retry_after(now)
            if wait:
                return Refusal(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"too many wrong passwords; try again in {wait} s",
                    {"Retry-After": str(wait)},
                )
            given = basic_password(header)
            if password_matches(given, self.password):
                return None
            if given is not None:
                self.throttle.record_failure(now)
                log.warning("%s: wrong password from %s", self.name, client)
                if self.throttle.blocked(now):
                    log.warning(
                        "%s: %s wrong passwords in %.0f s; refusing every password for a while",
                        self.name,
                        self.throttle.limit,
                        self.throttle.window_s,
                    )
        return Refusal(
            HTTPStatus.UNAUTHORIZED,
            "password required",
            {"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'},
        )
