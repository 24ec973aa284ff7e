"""The operator page's password: read from a file, checked in constant time, failures throttled.

The password never sits in ``node.yaml``: ``kiosk.operator_password_file`` names a file holding it
(one line; surrounding whitespace is ignored). No file configured means no operator page.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections import deque
from pathlib import Path

#: The realm the browser shows in its login prompt.
REALM = "fedvfer operator"


def load_password(path: Path | None) -> bytes | None:
    """The operator password from ``path``, or None when no file is configured.

    Raises :class:`ValueError` naming the file when it cannot be read or is empty, so a node with a
    broken password file refuses to start instead of silently exposing or hiding the page.
    """
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"kiosk.operator_password_file {path}: cannot read it ({exc.strerror or exc})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"kiosk.operator_password_file {path}: not UTF-8 text") from exc
    password = text.strip()
    if not password:
        raise ValueError(f"kiosk.operator_password_file {path}: the file is empty")
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
    """At most ``limit`` wrong passwords per ``window_s`` seconds, for all clients together.

    The kiosk is one device with one operator: a global limit is enough to make guessing slow and
    needs no per-address bookkeeping. Times are passed in, so the logic is testable without a clock.
    """

    def __init__(self, limit: int = 10, window_s: float = 60.0) -> None:
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

    def record_failure(self, now: float) -> None:
        self._expire(now)
        self._failures.append(now)
