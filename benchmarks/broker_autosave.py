"""How long mosquitto takes to write its persistence file, to choose ``autosave_interval``.

A real mosquitto with ``persistence true`` holds what a kill -9 would lose: the retained
central (835 KB) and round, and N updates (835 KB each) queued for the aggregator's
persistent session while it is offline. ``SIGUSR1`` makes mosquitto save its database now;
the time until the new file is renamed into place is the cost of one autosave, which blocks
mosquitto's single thread. Writes ``benchmarks/results/broker_autosave.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.aggregator import random_v
from tests.support.mosquitto import start_mosquitto
from vfer import weights as wcodec

RESULTS = Path(__file__).resolve().parent / "results"


def _client(port: int, cid: str, clean: bool) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=clean, properties=props)
    c.loop_start()
    return c


def save_time(db: Path, pid: int, timeout: float = 60.0) -> float:
    """Seconds from SIGUSR1 until mosquitto's database file is replaced."""

    def ident() -> tuple[int, int]:
        st = db.stat() if db.exists() else None
        return (st.st_ino, st.st_mtime_ns) if st else (0, 0)

    before = ident()
    start = t0 = time.perf_counter()
    os.kill(pid, signal.SIGUSR1)
    while time.perf_counter() - start < timeout:
        if ident() != before:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > 3.0:  # a signal mosquitto did not act on: send again
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGUSR1)
        time.sleep(0.001)
    raise RuntimeError("mosquitto did not save within the timeout")


def measure(queued: int, body: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "data"
        store.mkdir()
        conf = (
            "max_packet_size 4200000\nmax_queued_messages 100000\nmax_queued_bytes 0\n"
            f"persistence true\npersistence_location {store}/\nautosave_interval 3600\n"
        )
        broker = start_mosquitto(Path(tmp) / "m", conf)
        try:
            agg = _client(broker.port, "fedvfer-agg-1", clean=True)
            agg.subscribe("$share/fedvfer-aggregators/fedvfer/nodes/+/update", qos=1)
            time.sleep(0.3)
            agg.disconnect()  # offline: what follows queues in its session
            agg.loop_stop()
            node = _client(broker.port, "bench-node", clean=True)
            node.publish("fedvfer/central/bundle", body, qos=1, retain=True).wait_for_publish(10)
            for i in range(queued):
                node.publish(f"fedvfer/nodes/pi-{i}/update", body, qos=1).wait_for_publish(10)
            node.disconnect()
            node.loop_stop()
            db = store / "mosquitto.db"
            times = []
            for _ in range(3):
                times.append(save_time(db, broker.proc.pid))
                time.sleep(0.5)
            return {
                "queued_updates": queued,
                "db_mb": round(db.stat().st_size / 1e6, 1),
                "save_s_median": round(float(np.median(times)), 4),
                "save_s_max": round(max(times), 4),
            }
        finally:
            broker.stop()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="0 and 10 queued updates only")
    ap.add_argument("--queued", type=int, nargs="*", default=[0, 10, 100, 300])
    args = ap.parse_args(argv)
    body = wcodec.to_bytes(random_v(6, np.random.default_rng(0)))
    sizes = [0, 10] if args.quick else args.queued
    rows = [measure(n, body) for n in sizes]
    for r in rows:
        print(r, flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = {
        "rows": rows,
        "load_1min": os.getloadavg()[0],
        "summary": f"save of {rows[-1]['db_mb']} MB took {rows[-1]['save_s_median']} s",
    }
    (RESULTS / "broker_autosave.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
