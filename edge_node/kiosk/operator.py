"""The kiosk's operator page: ``/operator`` and its data, ``/operator/api/summary``.

Both need the operator password (HTTP basic auth, :mod:`vfer.basic_auth`: any user name, wrong
passwords throttled). Without ``kiosk.operator_password_file`` the page is off and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edge_node.kiosk.handler import KioskRequest
from edge_node.kiosk.operator_data import ClipReader, operator_summary

log = logging.getLogger(__name__)

#: The realm the browser shows in its login prompt.
REALM = "fedvfer operator"
DISABLED = (
    "The operator page is disabled: no password is configured. Put a password in a "
    "file readable only by the node and set kiosk.operator_password_file in node.yaml."
)


def default_store_opener(store_path: Path | None) -> Callable[[], ClipReader] | None:
    """Open the node's clip store read API per request (sqlite connections are per thread)."""
    if store_path is None:
        return None

    def open_store() -> ClipReader:
        from edge_node.store import ClipStore  # the node's store; imported only when needed

        return ClipStore(store_path)

    return open_store


class OperatorRoutes(KioskRequest):
    """``/operator`` and ``/operator/api/summary``, behind the operator password."""

    def _authorized(self) -> bool:
        """True when the operator password matches; otherwise answers 401/403/429 itself."""
        auth = self.ctx.auth
        if auth is None:
            self._send(HTTPStatus.FORBIDDEN, DISABLED.encode(), "text/plain; charset=utf-8")
            return False
        refusal = auth.check(self.headers.get("Authorization"), self.client_address[0])
        if refusal is None:
            return True
        if refusal.status == HTTPStatus.UNAUTHORIZED:
            body = b"operator password required"
            self._send(refusal.status, body, "text/plain; charset=utf-8", refusal.headers)
        else:
            self._error(refusal.status, refusal.message, refusal.headers)
        return False

    def _operator_page(self) -> None:
        if self._authorized():
            self._static("operator.html")

    def _summary_query(self) -> tuple[float, int] | None:
        """(bucket_s, limit) from the query string, or None after answering 400."""
        query = parse_qs(urlsplit(self.path).query)
        try:
            bucket_s = float(query.get("bucket_s", ["3600"])[0])
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "bucket_s and limit must be numbers")
            return None
        if not (60 <= bucket_s <= 7 * 86400 and 1 <= limit <= 500):
            self._error(HTTPStatus.BAD_REQUEST, "need 60 <= bucket_s <= 604800, 1 <= limit <= 500")
            return None
        return bucket_s, limit

    def _operator_summary(self) -> None:
        if not self._authorized():
            return
        if self.ctx.open_store is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "this node has no clip database")
            return
        asked = self._summary_query()
        if asked is None:
            return
        bucket_s, limit = asked
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
