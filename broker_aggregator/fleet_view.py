"""The operator's view of a fleet: Prometheus metrics and a read-only fleet page.

Everything here is read, never written: the rounds, submissions, rejections and centrals come from
the aggregator's state database (opened read-only at request time, so the round service's hot path
carries nothing extra), and the nodes' last status, central version and last-seen time come from
their retained MQTT status messages (``<prefix>/nodes/<id>/status``), which a node may publish only
under its own id (the broker's ACL). No node's private data exists here to show.

Metric names follow Prometheus conventions (``fedvfer_aggregator_*``, ``_total`` for counters,
base units); docs/aggregator-config.md and docs/mqtt.md list them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker_aggregator.store import payload_dir
from vfer.basic_auth import Clock
from vfer.messages import (
    CentralHeader,
    CentralPrivacy,
    MessageError,
    StatusMsg,
    from_json,
    unpack,
)
from vfer.ops_http import OpsServer, Route, metrics_route, start_ops_server
from vfer.topics import Topics

ROUND_STATES = ("open", "closing", "finished")
#: At most this many nodes are remembered (status topics are the nodes' own; a flood is capped).
MAX_NODES = 10_000
RECENT_ROUNDS = 20


@dataclass(frozen=True)
class NodeSeen:
    node_id: str
    state: str  # online | offline
    central_version: int | None
    round_id: int | None
    last_seen: float  # unix time this aggregator received the status
    epsilon_spent: float | None = None  # the node's DP window (adaptation.privacy); None: off
    epsilon_left: float | None = None


class StatusBook:
    """The last status of every node, from the retained status topics (thread-safe)."""

    def __init__(self, topics: Topics, max_nodes: int = MAX_NODES) -> None:
        self._topics = topics
        self._max = max_nodes
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeSeen] = {}
        self.rejected = 0

    def subscription(self) -> str:
        return self._topics.all_status

    def on_message(self, topic: str, payload: bytes, now: float | None = None) -> bool:
        """Record a status; False (and counted) for anything malformed or mis-addressed."""
        node_id = self._topics.node_of(topic) if topic.endswith("/status") else None
        try:
            msg = from_json(payload, StatusMsg)
        except MessageError:
            msg = None
        if node_id is None or msg is None or msg.node_id != node_id:
            with self._lock:
                self.rejected += 1
            return False
        p = msg.privacy
        seen = NodeSeen(
            node_id,
            msg.state,
            msg.central_version,
            msg.round_id,
            now or time.time(),
            None if p is None else p.epsilon_spent,
            None if p is None else p.epsilon_left,
        )
        with self._lock:
            if node_id not in self._nodes and len(self._nodes) >= self._max:
                self.rejected += 1
                return False
            self._nodes[node_id] = seen
        return True

    def snapshot(self) -> list[NodeSeen]:
        with self._lock:
            return sorted(self._nodes.values(), key=lambda n: n.node_id)


@dataclass(frozen=True)
class RoundRow:
    round_id: int
    state: str
    base_version: int
    opened_at: float
    closed_at: float | None
    result_version: int | None
    submissions: int
    rejections: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetState:
    rounds: list[RoundRow]  # newest first, at most RECENT_ROUNDS
    rounds_finished: int
    submissions_total: int
    rejections_total: dict[str, int]
    central_version: int | None
    nodes_submitted: int
    stored_bytes: int
    privacy: CentralPrivacy | None = None  # what central DP spent, from the newest central


def read_state(db_path: Path, recent: int = RECENT_ROUNDS) -> FleetState:
    """One consistent read of the aggregator's state database (read-only; WAL readers wait for no
    writer). A database that does not exist yet reads as an empty fleet."""
    if not db_path.exists():
        return FleetState([], 0, 0, {}, None, 0, 0)
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    try:
        con.execute("BEGIN")
        accepted = dict(
            con.execute("SELECT round_id, count(*) FROM accepted GROUP BY round_id").fetchall()
        )
        per_round: dict[int, dict[str, int]] = {}
        for rid, reason, n in con.execute("SELECT round_id, reason, count FROM rejections"):
            per_round.setdefault(int(rid), {})[str(reason)] = int(n)
        rows = con.execute(
            "SELECT round_id, state, base_version, opened_at, closed_at, result_version, "
            "num_submissions FROM rounds ORDER BY round_id DESC"
        ).fetchall()
        nodes = con.execute("SELECT count(DISTINCT node_id) FROM accepted").fetchone()[0]
        central = con.execute("SELECT max(version) FROM centrals").fetchone()[0]
        frame = con.execute("SELECT frame FROM centrals WHERE version = ?", [central]).fetchone()
    finally:
        con.close()
    rounds = [
        RoundRow(
            int(r[0]),
            str(r[1]),
            int(r[2]),
            float(r[3] or 0.0),
            None if r[4] is None else float(r[4]),
            None if r[5] is None else int(r[5]),
            int(r[6]) if r[6] is not None else int(accepted.get(r[0], 0)),
            per_round.get(int(r[0]), {}),
        )
        for r in rows
    ]
    totals: dict[str, int] = {}
    for reasons in per_round.values():
        for reason, n in reasons.items():
            totals[reason] = totals.get(reason, 0) + n
    return FleetState(
        rounds=rounds[:recent],
        rounds_finished=sum(1 for r in rounds if r.state == "finished"),
        submissions_total=sum(r.submissions for r in rounds),
        rejections_total=totals,
        central_version=None if central is None else int(central),
        nodes_submitted=int(nodes or 0),
        stored_bytes=_bytes_on_disk(db_path),
        privacy=_privacy_of(bytes(frame[0])) if frame else None,
    )


def _privacy_of(frame: bytes) -> CentralPrivacy | None:
    """What central DP spent on a stored central (None without it, or for an unreadable frame:
    the operator's view never fails on one row)."""
    try:
        return unpack(frame, CentralHeader)[0].privacy
    except MessageError:
        return None


def _bytes_on_disk(db_path: Path) -> int:
    total = 0
    for p in (db_path, db_path.with_name(db_path.name + "-wal")):
        if p.exists():
            total += p.stat().st_size
    bodies = payload_dir(db_path)
    if bodies.is_dir():
        total += sum(f.stat().st_size for f in bodies.iterdir() if f.is_file())
    return total


class FleetCollector(Collector):
    """Prometheus metrics of the aggregator, read at scrape time."""

    def __init__(self, db_path: Path, book: StatusBook, epsilon_budget: float | None) -> None:
        self._db = db_path
        self._book = book
        self._budget = epsilon_budget  # central_privacy.epsilon (None: central DP is off)

    def collect(self) -> Iterator[Metric]:
        s = read_state(self._db)
        yield from _round_metrics(s)
        if self._budget is not None:
            used = s.privacy.epsilon_total if s.privacy is not None else 0.0
            yield _gauge("central_epsilon_spent", "central DP's epsilon over its rounds", used)
            yield _gauge(
                "central_epsilon_left", "central_privacy.epsilon not yet spent", self._budget - used
            )
        nodes = self._book.snapshot()
        yield _gauge(
            "nodes_seen",
            "nodes that sent a status or an update",
            max(len(nodes), s.nodes_submitted),
        )
        yield _gauge(
            "nodes_online",
            "nodes whose last status says online",
            sum(1 for n in nodes if n.state == "online"),
        )
        yield _gauge(
            "stored_bytes", "bytes of the state database and update bodies", s.stored_bytes
        )
        yield CounterMetricFamily(
            "fedvfer_aggregator_status_rejected",
            "malformed or mis-addressed status messages",
            value=self._book.rejected,
        )


def _round_metrics(s: FleetState) -> Iterator[Metric]:
    """The rounds, submissions, rejections and the newest central, from the state database."""
    current = s.rounds[0] if s.rounds else None
    yield _gauge(
        "round_id", "id of the newest round (0: none yet)", current.round_id if current else 0
    )
    state = GaugeMetricFamily(
        "fedvfer_aggregator_round_state", "1 for the newest round's state", labels=["state"]
    )
    for name in ROUND_STATES:
        state.add_metric([name], 1.0 if current and current.state == name else 0.0)
    yield state
    yield _gauge(
        "round_submissions",
        "updates counted in the newest round",
        current.submissions if current else 0,
    )
    yield CounterMetricFamily(
        "fedvfer_aggregator_rounds_finished",
        "rounds closed with a new central",
        value=s.rounds_finished,
    )
    yield CounterMetricFamily(
        "fedvfer_aggregator_submissions", "updates counted in any round", value=s.submissions_total
    )
    rej = CounterMetricFamily(
        "fedvfer_aggregator_rejections", "updates rejected, by reason", labels=["reason"]
    )
    for reason, n in sorted(s.rejections_total.items()):
        rej.add_metric([reason], n)
    yield rej
    last = next((r for r in s.rounds if r.closed_at is not None), None)
    yield _gauge(
        "last_round_duration_seconds",
        "seconds from opening to the central of the newest finished round",
        (last.closed_at - last.opened_at) if last and last.closed_at else 0.0,
    )
    yield _gauge("central_version", "version of the newest central v", s.central_version or 0)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"fedvfer_aggregator_{name}", doc, value=float(value))


def fleet_json(db_path: Path, book: StatusBook) -> dict[str, Any]:
    """What the fleet page shows: nodes, recent rounds, totals."""
    s = read_state(db_path)
    return {
        "generated_at": time.time(),
        "central_version": s.central_version,
        "rounds_finished": s.rounds_finished,
        "submissions_total": s.submissions_total,
        "rejections_total": s.rejections_total,
        "stored_bytes": s.stored_bytes,
        "nodes": [asdict(n) for n in book.snapshot()],
        "rounds": [asdict(r) for r in s.rounds],
        "central_privacy": s.privacy.model_dump() if s.privacy is not None else None,
    }


def _static(name: str) -> bytes:
    return resources.files("broker_aggregator").joinpath("static", name).read_bytes()


def fleet_routes(
    db_path: Path, book: StatusBook, *, page: bool, epsilon_budget: float | None = None
) -> dict[str, Route]:
    """``/metrics``, and with ``page`` the fleet page (``/``, ``/api/fleet``, its static files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db_path, book, epsilon_budget))
    routes = {"/metrics": metrics_route(registry)}
    if page:
        routes |= {
            "/": Route(lambda: _static("fleet.html"), "text/html; charset=utf-8"),
            "/static/fleet.js": Route(
                lambda: _static("fleet.js"), "text/javascript; charset=utf-8"
            ),
            "/static/fleet.css": Route(lambda: _static("fleet.css"), "text/css; charset=utf-8"),
            "/api/fleet": Route(
                lambda: json.dumps(fleet_json(db_path, book)).encode(), "application/json"
            ),
        }
    return routes


class FleetView:
    """The leader's operator endpoint: the status subscription and the HTTP server together.

    The round service calls :meth:`subscriptions` on every connect, offers every message to
    :meth:`offer` (paho's thread; True when it was a status, which is then not the intake's), and
    starts and stops it around its loop.
    """

    def __init__(
        self,
        db_path: Path,
        topics: Topics,
        host: str,
        port: int,
        password: str | None,
        clock: Clock | None = None,  # times the wrong-password throttle (default: monotonic)
        epsilon_budget: float | None = None,  # central_privacy.epsilon, exported with what is left
    ):
        self.book = StatusBook(topics)
        self._db = db_path
        self._host, self._port, self._password, self._clock = host, port, password, clock
        self.server: OpsServer | None = None
        self._budget = epsilon_budget

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.book.subscription(), 1)]

    def offer(self, topic: str, payload: bytes) -> bool:
        if not topic.endswith("/status"):
            return False
        self.book.on_message(topic, payload)
        return True

    def start(self) -> None:
        routes = fleet_routes(
            self._db, self.book, page=self._password is not None, epsilon_budget=self._budget
        )
        self.server = start_ops_server(
            routes,
            host=self._host,
            port=self._port,
            password=self._password,
            name="fleet-view",
            clock=self._clock,
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
