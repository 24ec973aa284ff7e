"""The kiosk's Host allowlist (issue 14, item 7): the pure rule, and DNS rebinding against the
real kiosk server on a free loopback port."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_node.config import KioskConfig
from edge_node.kiosk import start_kiosk
from edge_node.state import NodeState
from tests.test_kiosk_server import ForgetWorker, Kiosk, add_clips, clip_count
from vfer.hosts import allowed_hosts, host_allowed, parse_host

JPEG = b"\xff\xd8live-preview\xff\xd9"


def test_parse_host_forms() -> None:
    assert parse_host("LocalHost:8080") == ("localhost", 8080)
    assert parse_host("127.0.0.1") == ("127.0.0.1", None)
    assert parse_host("[::1]:8080") == ("[::1]", 8080)
    assert parse_host("::1") == ("[::1]", None)  # a config entry may be bare
    for bad in ("", ":8080", "a:b", "a:0", "a:70000", "[::1", "[::1]x", "a b", "evil/x", "u@h"):
        assert parse_host(bad) is None, bad


def test_default_allowlist_is_the_bind_address_and_the_local_names() -> None:
    hosts = allowed_hosts(None, "192.168.1.20")
    for ok in ("localhost", "localhost:8080", "127.0.0.1:8080", "192.168.1.20:8080"):
        assert host_allowed(ok, hosts), ok
    for bad in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[::1]:8080", None):
        assert not host_allowed(bad, hosts), bad
    # A wildcard bind address is not a name; only the local names are allowed then.
    assert allowed_hosts(None, "0.0.0.0") == allowed_hosts(None, "127.0.0.1")
    assert host_allowed("[::1]:80", allowed_hosts(None, "::1"))


def test_configured_allowlist_replaces_the_default_and_ports_are_exact() -> None:
    hosts = allowed_hosts(["kiosk-7.lan", "10.0.0.7:8080"], "0.0.0.0")
    assert host_allowed("kiosk-7.lan:9999", hosts)
    assert host_allowed("10.0.0.7:8080", hosts)
    assert not host_allowed("10.0.0.7:8081", hosts) and not host_allowed("10.0.0.7", hosts)
    assert not host_allowed("localhost:8080", hosts)
    with pytest.raises(ValueError, match="allowed_hosts"):
        allowed_hosts(["a:b"], "127.0.0.1")
    with pytest.raises(ValidationError, match="not a host name"):
        KioskConfig(allowed_hosts=["http://evil.example/"])


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[Kiosk]:
    db = tmp_path / "node.db"
    add_clips(db, [0, 1])
    state = NodeState()
    state.set_preview(JPEG)
    stop = threading.Event()
    handle = start_kiosk(state, KioskConfig(port=0, forget_timeout_s=5), db, stop)
    try:
        yield Kiosk(handle, state, db, stop)
    finally:
        stop.set()
        handle.stop()


def rebound(kiosk: Kiosk, method: str, path: str, body: object = None) -> int:
    """What a page on evil.example sends once its name resolves to the kiosk's address: the
    browser's own Host and a matching (same-origin) Origin."""
    conn = http.client.HTTPConnection("127.0.0.1", kiosk.port, timeout=10)
    evil = f"evil.example:{kiosk.port}"
    headers = {"Host": evil, "Origin": f"http://{evil}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        res = conn.getresponse()
        res.read()
        return res.status
    finally:
        conn.close()


def test_dns_rebinding_is_refused_on_every_route(kiosk: Kiosk) -> None:
    worker = ForgetWorker(kiosk.state, kiosk.db, threading.Event())
    try:
        assert rebound(kiosk, "POST", "/api/forget", {"confirm": True}) == 421
        assert rebound(kiosk, "POST", "/api/pause", {}) == 421
        for path in ("/preview.jpg", "/api/state", "/", "/static/kiosk.js", "/operator", "/nope"):
            assert rebound(kiosk, "GET", path) == 421, path
        assert rebound(kiosk, "HEAD", "/preview.jpg") == 421
        # Nothing happened: the clips are there, recording was not paused.
        assert clip_count(kiosk.db) == 2
        assert not kiosk.state.pause_requested.is_set()
        # The kiosk's own names still work, with a matching Origin for the controls.
        status, _, body = kiosk.request("GET", "/preview.jpg")
        assert status == 200 and body == JPEG
        own = {"Host": f"localhost:{kiosk.port}", "Origin": f"http://localhost:{kiosk.port}"}
        assert kiosk.request("POST", "/api/pause", {}, own)[0] == 200
        assert kiosk.state.pause_requested.is_set()
        assert kiosk.request("POST", "/api/forget", {"confirm": True})[0] == 200
        assert clip_count(kiosk.db) == 0
    finally:
        worker.join()
