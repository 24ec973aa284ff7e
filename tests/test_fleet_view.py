"""The operator's fleet view: metrics and page from a real state database and real status
messages, over real HTTP, the page in real headless Chromium."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker_aggregator.fleet_view import StatusBook, fleet_json, fleet_routes, read_state
from broker_aggregator.store import State
from tests.support.browser import launch_browser, open_page, skip_reason
from vfer.messages import NodePrivacy, StatusMsg, to_json
from vfer.ops_http import OpsServer, start_ops_server
from vfer.topics import Topics

T = Topics("fedvfer")
PASSWORD = "s3cret-fleet"


def _fill(db: Path) -> None:
    """Round 1 finished (3 updates -> central 2), round 2 open with 1 update; rejections."""
    s = State(db)
    now = time.time()
    s.open_round(1, 1, now - 100, now + 100)
    for node in ("pi-1", "pi-2", "pi-3"):
        s.record_accepted(1, node, "agg-1", 1, f"u-{node}-1")
    for reason in ("stale_base", "stale_base", "bad_weights"):
        s.count_rejection(1, reason)
    s.finish_round(1, 2, now - 40, 3, b"frame")
    s.open_round(2, 2, now - 30, now + 100)
    s.record_accepted(2, "pi-1", "agg-1", 2, "u-pi-1-2")
    s.count_rejection(2, "wrong_round")
    s.close()


def _status(
    book: StatusBook, node: str, state: str, version: int | None, privacy: Any = None
) -> bool:
    msg = StatusMsg(
        node_id=node, state=state, central_version=version, round_id=2, ts=1.0, privacy=privacy
    )
    return book.on_message(T.node_status(node), to_json(msg))


#: a node with adaptation.privacy on: its status carries its window's epsilon
PRIVATE = NodePrivacy(
    epsilon_spent=4.25, epsilon_left=10.75, epsilon_window=15, window_nights=30, delta=1e-5
)


def test_a_nodes_epsilon_reaches_the_fleet_json_and_bad_ones_are_refused(tmp_path: Path) -> None:
    book = StatusBook(T)
    assert _status(book, "pi-1", "online", 2, PRIVATE) and _status(book, "pi-2", "online", 2)
    nodes = {n["node_id"]: n for n in fleet_json(tmp_path / "none.db", book)["nodes"]}
    assert (nodes["pi-1"]["epsilon_spent"], nodes["pi-1"]["epsilon_left"]) == (4.25, 10.75)
    assert nodes["pi-2"]["epsilon_spent"] is None  # personalizes without DP
    bad = to_json(StatusMsg(node_id="pi-1", state="online", privacy=PRIVATE))
    for forged in (b'"epsilon_spent":-1.0', b'"epsilon_spent":NaN', b'"delta":1.0'):
        payload = bad.replace(b'"epsilon_spent":4.25', forged).replace(b'"delta":1e-05', forged)
        assert not book.on_message(T.node_status("pi-1"), payload)
    assert book.rejected == 3


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[OpsServer, StatusBook, Path]]:
    db = tmp_path / "aggregator.db"
    _fill(db)
    book = StatusBook(T)
    assert _status(book, "pi-1", "online", 2)
    assert _status(book, "pi-2", "offline", 1)
    assert _status(book, "pi-3", "offline", 2, PRIVATE)  # its epsilon, on the page
    server = start_ops_server(fleet_routes(db, book, page=True), password=PASSWORD)
    try:
        yield server, book, db
    finally:
        server.stop()


def _get(url: str, password: str | None = PASSWORD, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"operator:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_match_the_state_and_the_statuses(
    served: tuple[OpsServer, StatusBook, Path],
) -> None:
    server, _book, _db = served
    code, body = _get(server.url + "/metrics")
    assert code == 200
    m = _metrics(body.decode())
    assert m[("fedvfer_aggregator_round_id", ())] == 2
    assert m[("fedvfer_aggregator_round_state", (("state", "open"),))] == 1
    assert m[("fedvfer_aggregator_round_state", (("state", "finished"),))] == 0
    assert m[("fedvfer_aggregator_round_submissions", ())] == 1
    assert m[("fedvfer_aggregator_submissions_total", ())] == 4
    assert m[("fedvfer_aggregator_rounds_finished_total", ())] == 1
    assert m[("fedvfer_aggregator_rejections_total", (("reason", "stale_base"),))] == 2
    assert m[("fedvfer_aggregator_rejections_total", (("reason", "bad_weights"),))] == 1
    assert m[("fedvfer_aggregator_rejections_total", (("reason", "wrong_round"),))] == 1
    assert m[("fedvfer_aggregator_central_version", ())] == 2
    assert m[("fedvfer_aggregator_nodes_seen", ())] == 3  # pi-3 only submitted
    assert m[("fedvfer_aggregator_nodes_online", ())] == 1
    assert m[("fedvfer_aggregator_last_round_duration_seconds", ())] == pytest.approx(60, abs=1)
    assert m[("fedvfer_aggregator_stored_bytes", ())] > 0


def test_every_route_wants_the_password_and_the_right_host(
    served: tuple[OpsServer, StatusBook, Path],
) -> None:
    server, _book, _db = served
    for path in ("/", "/api/fleet", "/metrics", "/static/fleet.js"):
        assert _get(server.url + path, password=None)[0] == 401, path
        assert _get(server.url + path, password="wrong")[0] == 401, path
        assert _get(server.url + path)[0] == 200, path
        # DNS rebinding: the right password cannot come from a foreign name's page anyway,
        # and a foreign Host is refused before anything else
        assert _get(server.url + path, host="evil.example:80")[0] == 421, path
    assert _get(server.url + "/nope")[0] == 404


def test_status_book_refuses_mis_addressed_and_malformed_statuses() -> None:
    book = StatusBook(T, max_nodes=2)
    forged = StatusMsg(node_id="pi-2", state="online", central_version=9, round_id=1, ts=1.0)
    assert not book.on_message(T.node_status("pi-1"), to_json(forged))  # another node's id
    assert not book.on_message(T.node_status("pi-1"), b"\xff{not json")
    assert not book.on_message("fedvfer/nodes/pi-1/update", to_json(forged))
    assert _status(book, "pi-1", "online", 1) and _status(book, "pi-2", "online", 1)
    assert not _status(book, "pi-3", "online", 1)  # capped: a flood of ids is not remembered
    assert _status(book, "pi-1", "offline", 2)  # a known node still updates
    assert book.rejected == 4
    assert [(n.node_id, n.state, n.central_version) for n in book.snapshot()] == [
        ("pi-1", "offline", 2),
        ("pi-2", "online", 1),
    ]


def test_an_empty_or_missing_database_reads_as_an_empty_fleet(tmp_path: Path) -> None:
    s = read_state(tmp_path / "none.db")
    assert s.rounds == [] and s.central_version is None and s.submissions_total == 0
    assert not (tmp_path / "none.db").exists()  # reading never creates the state


def test_fleet_page_in_chromium(served: tuple[OpsServer, StatusBook, Path], tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server, _book, _db = served
    with launch_browser() as browser:
        anonymous = browser.new_context()
        assert anonymous.request.get(server.url + "/").status == 401
        anonymous.close()
        page = open_page(
            browser,
            server.url + "/",
            (1280, 800),
            http_credentials={"username": "operator", "password": PASSWORD},
        )
        page.wait_for_selector("#nodes tr", timeout=15_000)
        rows = page.locator("#nodes tr").all_inner_texts()
        assert any("pi-1" in r and "online" in r and "v2" in r for r in rows), rows
        assert any("pi-2" in r and "offline" in r for r in rows), rows
        assert any("pi-3" in r and "4.25 / 10.75 left" in r for r in rows), rows
        rounds = page.locator("#rounds tr").all_inner_texts()
        assert rounds[0].split("\t")[:2] == ["2", "open"], rounds
        assert "finished" in rounds[1] and "v2" in rounds[1], rounds
        assert page.locator("#central").inner_text() == "v2"
        assert "stale_base" in page.locator("#rejections").inner_text()
        shot = tmp_path / "fleet.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    data = json.loads(_get(server.url + "/api/fleet")[1])
    assert {n["node_id"] for n in data["nodes"]} == {"pi-1", "pi-2", "pi-3"}
