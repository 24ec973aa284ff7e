"""One basic-auth helper (vfer.basic_auth), and wrong passwords throttled on every endpoint.

The throttle's pure parts take times as arguments. Then each password-protected endpoint runs for
real on loopback and is asked over real HTTP: the kiosk's operator page, the node's /metrics, the
aggregator's /metrics and its fleet page. A fast run of wrong guesses gets ten answers (401) per
window and 429 with Retry-After for the rest, the right password included; after the window
(the servers' throttle clock is one the test moves: nothing waits) the right password works and
ten more guesses are answered. No assertion is about how long anything took.
"""

from __future__ import annotations

import base64
import http.client
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from broker_aggregator.fleet_view import FleetView
from edge_node.config import KioskConfig, load_node_config
from edge_node.kiosk import start_kiosk
from edge_node.metrics import start_node_metrics
from edge_node.state import NodeState
from vfer.basic_auth import FAILURE_LIMIT, FAILURE_WINDOW_S, BasicAuth, FailureThrottle
from vfer.topics import Topics

PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[1]


class ManualClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the pure parts ----------------------------------------------------------------------------


def test_retry_after_counts_down_to_the_oldest_failure_leaving_the_window() -> None:
    throttle = FailureThrottle(limit=3, window_s=60)
    assert throttle.retry_after(0.0) == 0
    for t in (0.0, 10.0, 20.0):
        throttle.record_failure(t)
    assert throttle.retry_after(20.0) == 40  # the failure at 0 leaves at 60
    assert throttle.retry_after(59.2) == 1  # whole seconds, never 0 while blocked
    assert throttle.retry_after(60.0) == 0  # two failures left in the window: not blocked


def test_check_lets_the_password_in_and_refuses_the_rest_with_the_right_answer() -> None:
    clock = ManualClock()
    auth = BasicAuth(PASSWORD.encode(), "test", "unit", clock, FailureThrottle(2, 30))
    assert auth.check(header(PASSWORD), "127.0.0.1") is None
    missing = auth.check(None, "127.0.0.1")
    assert missing is not None and missing.status == HTTPStatus.UNAUTHORIZED
    assert missing.headers == {"WWW-Authenticate": 'Basic realm="test", charset="UTF-8"'}
    assert auth.check(None, "127.0.0.1") is not None and not auth.throttle.blocked(clock())
    for _ in range(2):  # two wrong ones: the limit
        wrong = auth.check(header("nope"), "127.0.0.1")
        assert wrong is not None and wrong.status == HTTPStatus.UNAUTHORIZED
    blocked = auth.check(header(PASSWORD), "127.0.0.1")
    assert blocked is not None and blocked.status == HTTPStatus.TOO_MANY_REQUESTS
    assert blocked.headers == {"Retry-After": "30"}
    clock.advance(30)
    assert auth.check(header(PASSWORD), "127.0.0.1") is None


# -- every endpoint, for real -----------------------------------------------------------------


def header(password: str) -> str:
    return "Basic " + base64.b64encode(f"operator:{password}".encode()).decode()


def get(url: str, password: str | None) -> tuple[int, dict[str, str]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(
            "GET", parts.path, headers={"Authorization": header(password)} if password else {}
        )
        res = conn.getresponse()
        res.read()
        return res.status, {k.lower(): v for k, v in res.getheaders()}
    finally:
        conn.close()


@dataclass
class Endpoint:
    url: str
    clock: ManualClock
    stop: Callable[[], None]


def kiosk_operator_page(tmp_path: Path, clock: ManualClock) -> Endpoint:
    pw = tmp_path / "operator.pw"
    pw.write_text(PASSWORD + "\n")
    stop = threading.Event()
    config = KioskConfig(port=0, operator_password_file=pw)
    handle = start_kiosk(NodeState(), config, None, stop, clock=clock)
    return Endpoint(handle.url + "operator", clock, handle.stop)


def node_metrics(tmp_path: Path, clock: ManualClock) -> Endpoint:
    pw = tmp_path / "metrics.pw"
    pw.write_text(PASSWORD + "\n")
    config = load_node_config(
        None,
        **{
            "bundle": str(tmp_path / "bundle"),
            "db": str(tmp_path / "node.db"),
            "metrics.enabled": True,
            "metrics.port": 0,
            "metrics.password_file": str(pw),
        },
    )
    server = start_node_metrics(config, NodeState(), clock)
    return Endpoint(server.url + "/metrics", clock, server.stop)


def fleet_view(path: str) -> Callable[[Path, ManualClock], Endpoint]:
    def start(tmp_path: Path, clock: ManualClock) -> Endpoint:
        view = FleetView(tmp_path / "aggregator.db", Topics(), "127.0.0.1", 0, PASSWORD, clock)
        view.start()
        assert view.server is not None
        return Endpoint(view.server.url + path, clock, view.stop)

    return start


ENDPOINTS = {
    "kiosk operator page": kiosk_operator_page,
    "node /metrics": node_metrics,
    "aggregator /metrics": fleet_view("/metrics"),
    "aggregator fleet page": fleet_view("/"),
}


@pytest.fixture(params=list(ENDPOINTS))
def endpoint(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Endpoint]:
    monkeypatch.delenv("FEDVFER_METRICS_PASSWORD", raising=False)  # the file is the password
    served = ENDPOINTS[request.param](tmp_path, ManualClock())
    try:
        yield served
    finally:
        served.stop()


def test_fast_guesses_are_slowed_down_and_the_password_works_after_the_window(
    endpoint: Endpoint,
) -> None:
    url = endpoint.url
    assert get(url, PASSWORD)[0] == 200
    # asking without a password (a browser before its prompt) is not a guess
    assert {get(url, None)[0] for _ in range(FAILURE_LIMIT + 2)} == {401}
    answers = [get(url, f"guess-{i}") for i in range(FAILURE_LIMIT + 15)]
    assert [status for status, _ in answers] == [401] * FAILURE_LIMIT + [429] * 15
    assert {h.get("retry-after") for s, h in answers if s == 429} == {str(int(FAILURE_WINDOW_S))}
    status, headers = get(url, PASSWORD)
    assert status == 429 and headers["retry-after"] == "60"  # the right one too, for now
    endpoint.clock.advance(FAILURE_WINDOW_S - 1)
    status, headers = get(url, PASSWORD)
    assert status == 429 and headers["retry-after"] == "1"
    endpoint.clock.advance(1)
    assert get(url, PASSWORD)[0] == 200
    again = [get(url, "guess-again")[0] for _ in range(FAILURE_LIMIT + 2)]
    assert again == [401] * FAILURE_LIMIT + [429] * 2  # the next window answers ten again


def test_one_module_reads_basic_auth() -> None:
    """Only vfer/basic_auth.py parses an Authorization header or asks for one; every server that
    reads the header hands it to :meth:`BasicAuth.check`."""
    deployed = [REPO / role for role in ("vfer", "edge_node", "broker_aggregator", "provisioning")]
    readers = []
    for path in sorted(p for root in deployed for p in root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(REPO))
        if name == "vfer/basic_auth.py":
            continue
        assert "WWW-Authenticate" not in text, name
        if '"Authorization"' in text:
            readers.append(name)
            assert 'auth.check(self.headers.get("Authorization")' in text, name
    assert sorted(readers) == ["edge_node/kiosk/operator.py", "vfer/ops_http.py"]
