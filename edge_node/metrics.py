"""The node's Prometheus ``/metrics`` (``metrics:`` in node.yaml), read at scrape time.

Nothing is pushed from the capture loop: the collector reads the live state the loop already keeps
(fps, clips stored, its running totals, adaptation results), the database's size on disk, the
bundle home's installed central version (``installed.json``) and the federation outbox's depth
(:func:`edge_node.federation.outbox.pending_in`, read-only). No face data, embedding or prediction is exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_node.bundles import BundleHome
from edge_node.config import NodeConfig
from edge_node.federation.outbox import default_outbox, pending_in
from edge_node.state import NodeState
from vfer.basic_auth import Clock
from vfer.config_io import read_secret
from vfer.ops_http import OpsServer, metrics_route, start_ops_server

PREFIX = "fedvfer_node_"


class NodeCollector(Collector):
    def __init__(self, config: NodeConfig, state: NodeState) -> None:
        self._config = config
        self._state = state
        self._home = BundleHome(config.bundle)

    def collect(self) -> Iterator[Metric]:
        snap = self._state.snapshot()
        act = snap.activity
        yield _gauge("fps", "frames processed per second", snap.fps)
        yield _counter("frames", "frames processed", act.frames)
        yield _counter("face_frames", "frames in which a face was found", act.face_frames)
        yield _counter("clips_saved", "clips recorded into the database", act.clips_saved)
        yield _counter("clips_discarded", "clips too short to keep", act.clips_discarded)
        yield _gauge("clips_stored", "clips in the database now", snap.clips_stored)
        yield _counter(
            "retention_deleted_clips", "clips deleted by retention", act.retention_deleted
        )
        yield _gauge(
            "database_bytes", "bytes of the clip database and its WAL", _db_bytes(self._config.db)
        )
        runs = CounterMetricFamily(
            PREFIX + "adaptations", "personalizations by result", labels=["result"]
        )
        for result in ("adapted", "skipped", "rejected", "blocked"):
            runs.add_metric([result], act.adaptations.get(result, 0))
        yield runs
        gate = CounterMetricFamily(
            PREFIX + "gate_blocked",
            "heads the safety gate kept inactive, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(act.gate_blocked.items()):
            gate.add_metric([reason], n)
        yield gate
        yield _gauge("central_version", "central v version installed (0: none)", self._central())
        yield _gauge("outbox_depth", "updates waiting for the aggregator's answer", self._outbox())
        yield _gauge(
            "resident_memory_bytes",
            "resident memory of the capture process",
            snap.process.rss_mb * 2**20,
        )
        yield _gauge(
            "paused", "1 while recording is paused", 1.0 if self._state.recording_paused() else 0.0
        )
        yield from self._privacy()

    def _privacy(self) -> Iterator[Metric]:
        """adaptation.privacy's window, from the ledger's newest night (docs/privacy.md)."""
        a = self._config.adaptation
        if not a.privacy.enabled:
            return
        from edge_node.personalization.ledger import view_now

        v = view_now(Path(self._config.db), a.privacy, a.window_start)
        yield _gauge("privacy_epsilon_spent", "epsilon spent over the window", v.spent)
        yield _gauge("privacy_epsilon_left", "epsilon left in the window", v.left)
        yield _gauge("privacy_epsilon_window", "epsilon budget of the window", v.epsilon_window)
        yield _gauge(
            "privacy_epsilon_per_night", "epsilon one night may spend", v.epsilon_per_night
        )
        yield _gauge("privacy_delta", "delta of every epsilon above", v.delta)

    def _central(self) -> int:
        try:
            return self._home.central_version()
        except (OSError, ValueError):
            return 0

    def _outbox(self) -> int:
        return pending_in(default_outbox(Path(self._config.db)))


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=float(value))


def start_node_metrics(
    config: NodeConfig, state: NodeState, clock: Clock | None = None
) -> OpsServer:
    """Serve ``/metrics`` as ``metrics:`` in node.yaml says (loopback, optional password);
    ``clock`` times the wrong-password throttle (default: monotonic time)."""
    m = config.metrics
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(config, state))
    password = read_secret(m.password_file, "FEDVFER_METRICS_PASSWORD")
    return start_ops_server(
        {"/metrics": metrics_route(registry)},
        host=m.host,
        port=m.port,
        password=password,
        name="node-metrics",
        clock=clock,
    )
