"""Aggregator throughput and memory through a real mosquitto on loopback.

    python benchmarks/aggregator.py [--quick]

For N simulated submissions of the real v head (208,582 float32 values, about 835 KB each) in
one round: wall time from the first publish to the signed central, submissions per second,
the aggregator process's peak RSS (psutil), and a proof that nothing was lost (N acks, the
central says N submissions and equals the mean of what was sent). Also the effect of float16
transport on the averaged head. Writes benchmarks/results/aggregator.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.aggregator import AggregatorProcess, personalized, random_v
from tests.support.mosquitto import start_mosquitto
from vfer import signing
from vfer import weights as wcodec
from vfer.fedavg import aggregate
from vfer.messages import MAGIC, CentralHeader, UpdateHeader, open_central, pack, unpack

REPO = Path(__file__).resolve().parents[1]

BROKER_CONF = (
    "max_packet_size 4200000\nmax_queued_messages 100000\nmax_queued_bytes 0\n"
    "max_inflight_messages 100\n"
)
DISTINCT = 16  # distinct weight sets, reused across simulated nodes (their mean is known)
WINDOW = 200  # updates in flight without an ack, like a fleet of nodes each with one outbox


def run_round(
    n: int,
    work: Path,
    broker_url: str,
    port: int,
    keys: tuple[Path, Path],
    base: dict[str, np.ndarray],
    broker_pid: int,
) -> dict[str, object]:
    initial = work / "initial.safetensors"
    wcodec.save(initial, base)
    rng = np.random.default_rng(n)
    sets = [personalized(base, rng) for _ in range(DISTINCT)]
    bodies = [wcodec.to_bytes(s) for s in sets]
    # Each simulated node would hash its own body on its own Pi: hash each distinct body once
    # here, so the load generator does not eat the CPU the broker and aggregator share with it.
    digests = [hashlib.sha256(b).hexdigest() for b in bodies]
    agg = AggregatorProcess(
        [
            "--broker",
            broker_url,
            "--initial-weights",
            str(initial),
            "--classes",
            "6",
            "--state-db",
            str(work / f"agg-{n}.db"),
            "--signing-key",
            str(keys[0]),
            "--rounds",
            "1",
            "--min-submissions",
            str(n),
            "--max-submissions",
            str(n),
            "--deadline-s",
            "3600",
            "--worker-id",
            f"bench-{n}",
            "--log-level",
            "WARNING",
        ],
        work / f"agg-{n}.log",
    ).start()
    peak = [0]
    stop = threading.Event()

    cpu = {"aggregator": 0.0, "broker": 0.0, "this": 0.0}
    procs = {"aggregator": psutil.Process(agg.pid), "broker": psutil.Process(broker_pid)}
    me = psutil.Process()

    def cpu_s(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def watch() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], procs["aggregator"].memory_info().rss)
                for name, p in procs.items():
                    cpu[name] = cpu_s(p)  # the last reading before it exits
            except psutil.Error:
                return
            stop.wait(0.02)

    threading.Thread(target=watch, daemon=True).start()
    acked: set[str] = set()
    central: list[bytes] = []
    cond = threading.Condition()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        with cond:
            if m.topic.endswith("/ack"):
                acked.add(m.topic.split("/")[2])
            elif m.topic.endswith("central/bundle"):
                hdr, _ = unpack(m.payload, CentralHeader)
                if hdr.version >= 2:
                    central.append(bytes(m.payload))
            cond.notify_all()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-fleet-{n}", protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.subscribe([("fedvfer/nodes/+/ack", 1), ("fedvfer/central/bundle", 1)])
    c.loop_start()
    assert agg.wait_for_log("", 1)
    # wait until the round is open (the aggregator publishes it retained)
    opened = threading.Event()
    c.message_callback_add("fedvfer/round", lambda *_: opened.set())
    c.subscribe("fedvfer/round", 1)
    opened.wait(30)
    sent_count = [0] * DISTINCT
    cpu0 = {name: cpu_s(p) for name, p in procs.items()}
    me0, load0 = cpu_s(me), os.getloadavg()[0]
    t0 = time.perf_counter()
    for i in range(n):
        with cond:
            cond.wait_for(lambda i=i: i - len(acked) < WINDOW, timeout=60)
        k = i % DISTINCT
        sent_count[k] += 1
        header = UpdateHeader(
            node_id=f"sim-{i:05d}",
            round_id=1,
            base_version=1,
            update_id=uuid.uuid4().hex,
            seq=1,
            created_at=time.time(),
            clips_per_class={"happiness": 5},
            body_size=len(bodies[k]),
            body_sha256=digests[k],
        )
        c.publish(f"fedvfer/nodes/sim-{i:05d}/update", frame(header, bodies[k]), qos=1)
    with cond:
        cond.wait_for(lambda: bool(central), timeout=300)
    wall = time.perf_counter() - t0
    me1, load1 = cpu_s(me), os.getloadavg()[0]
    agg.wait(timeout=60)
    stop.set()
    c.loop_stop()
    c.disconnect()
    hdr, body = open_central(central[0], signing.load_public_key(keys[1]))
    expected = aggregate(
        [(s, cnt) for s, cnt in zip(sets, sent_count, strict=True) if cnt], "samples"
    )
    got = wcodec.from_bytes(body)
    err = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    return {
        "submissions": n,
        "wall_s": round(wall, 3),
        "submissions_per_s": round(n / wall, 1),
        "aggregator_peak_rss_mb": round(peak[0] / 2**20, 1),
        # CPU seconds each process spent between the first publish and the central
        "cpu_ms_per_update": {
            "aggregator": round(1000 * (cpu["aggregator"] - cpu0["aggregator"]) / n, 2),
            "mosquitto": round(1000 * (cpu["broker"] - cpu0["broker"]) / n, 2),
            "load_generator": round(1000 * (me1 - me0) / n, 2),
        },
        "load_average_1min": [round(load0, 2), round(load1, 2)],
        "acks": len(acked),
        "central_num_submissions": hdr.num_submissions,
        "max_abs_error_vs_numpy_mean": err,
        "lost": n - len(acked),
        "payload_bytes": len(
            pack(
                UpdateHeader(
                    node_id="x0",
                    round_id=1,
                    base_version=1,
                    update_id=uuid.uuid4().hex,
                    seq=1,
                    created_at=0,
                    clips_per_class={},
                ),
                bodies[0],
            )
        ),
    }


def replacement_flood(
    work: Path, port: int, keys: tuple[Path, Path], base: dict[str, np.ndarray], k: int = 60
) -> dict[str, object]:
    """One node sends ``k`` replacements (seq 1..k) in one open round: the round file's size.

    Before ``max_replacements_per_round`` (issue 14) sixty of them grew the file from 0.8 to
    51 MB; now every copy past the cap is answered ``rate_limited`` and never written.
    """
    initial = work / "flood-initial.safetensors"
    wcodec.save(initial, base)
    state_db = work / "flood.db"
    agg = AggregatorProcess(
        [
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--initial-weights",
            str(initial),
            "--classes",
            "6",
            "--state-db",
            str(state_db),
            "--signing-key",
            str(keys[0]),
            "--min-submissions",
            "2",
            "--max-submissions",
            "2",
            "--log-level",
            "WARNING",
        ],
        work / "flood.log",
    ).start()
    answers: dict[str, str] = {}
    cond = threading.Condition()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        data = json.loads(m.payload)
        with cond:
            answers[data["update_id"]] = data["reason"] or data["status"]
            cond.notify_all()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder", protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe("fedvfer/nodes/flooder/ack", 1)
    opened = threading.Event()
    c.message_callback_add("fedvfer/round", lambda *_: opened.set())
    c.subscribe("fedvfer/round", 1)
    c.loop_start()
    try:
        opened.wait(30)
        rng = np.random.default_rng(60)
        for seq in range(1, k + 1):
            header = UpdateHeader(
                node_id="flooder",
                round_id=1,
                base_version=1,
                update_id=uuid.uuid4().hex,
                seq=seq,
                created_at=time.time(),
                clips_per_class={"anger": 1},
            )
            c.publish(
                "fedvfer/nodes/flooder/update",
                pack(header, wcodec.to_bytes(personalized(base, rng))),
                qos=1,
            )
        with cond:
            cond.wait_for(lambda: len(answers) >= k, timeout=120)
        round_file = state_db.with_name(f"{state_db.name}.payloads") / "round-000001.bin"
        size = round_file.stat().st_size if round_file.exists() else 0
    finally:
        c.loop_stop()
        c.disconnect()
        agg.stop()
    body = len(wcodec.to_bytes(base))
    verdicts = sorted(set(answers.values()))
    return {
        "replacements_sent": k,
        "answers": {v: list(answers.values()).count(v) for v in verdicts},
        "round_file_mb": round(size / 1e6, 2),
        "bound_mb": round(6 * body / 1e6, 2),  # first copy + max_replacements_per_round (5)
    }


def frame(header: UpdateHeader, body: bytes) -> bytes:
    """What :func:`vfer.messages.pack` builds, with the body's size and sha256 already set."""
    head = json.dumps(header.to_json_dict(), separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + body


def float16_effect(base: dict[str, np.ndarray], nodes: int = 100) -> dict[str, float]:
    """Average ``nodes`` personalized heads sent as float32 and as float16; compare."""
    rng = np.random.default_rng(16)
    heads = [personalized(base, rng) for _ in range(nodes)]
    full = aggregate([(h, 1) for h in heads])
    half = aggregate(
        [({k: a.astype(np.float16).astype(np.float32) for k, a in h.items()}, 1) for h in heads]
    )
    diff = np.concatenate([(half[k] - full[k]).ravel() for k in full])
    move = np.concatenate([(full[k] - base[k]).ravel() for k in full])
    return {
        "nodes": nodes,
        "max_abs_diff": float(np.max(np.abs(diff))),
        "rms_diff": float(np.sqrt(np.mean(diff**2))),
        "rms_of_the_round_update": float(np.sqrt(np.mean(move**2))),
        "relative_to_update": float(np.sqrt(np.mean(diff**2)) / np.sqrt(np.mean(move**2))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 and 100 submissions only (< 1 min)")
    ap.add_argument("--sizes", help="comma-separated N to run instead, e.g. 1000")
    ap.add_argument(
        "--flood-only", action="store_true", help="only the replacement flood (round file size)"
    )
    args = ap.parse_args()
    sizes = [10, 100] if args.quick else [10, 100, 1000, 2000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    if args.flood_only:
        sizes = []
    base = random_v(6, np.random.default_rng(0))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedvfer-bench-") as tmp:
        work = Path(tmp)
        keys = signing.generate_keypair(work / "fleet")
        for n in sizes:
            broker = start_mosquitto(work / f"mosquitto-{n}", BROKER_CONF)
            try:
                rows.append(
                    run_round(n, work, broker.url, broker.port, keys, base, broker.proc.pid)
                )
            finally:
                broker.stop()
            r = rows[-1]
            print(
                f"{n:>6} submissions  {r['wall_s']:>8.2f} s  {r['submissions_per_s']:>8.1f}/s  "
                f"peak RSS {r['aggregator_peak_rss_mb']:>7.1f} MB  lost {r['lost']}  "
                f"CPU ms/update {r['cpu_ms_per_update']}  load {r['load_average_1min']}",
                flush=True,
            )
        broker = start_mosquitto(work / "mosquitto-flood", BROKER_CONF)
        try:
            flood = replacement_flood(work, broker.port, keys, base)
        finally:
            broker.stop()
        print(f"replacement flood: {flood}", flush=True)
    f16 = float16_effect(base)
    print(
        f"float16 transport: averaged head differs by at most {f16['max_abs_diff']:.2e} "
        f"(rms {f16['rms_diff']:.2e}, {100 * f16['relative_to_update']:.2f}% of the round's update)"
    )
    out = REPO / "benchmarks" / "results" / "aggregator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "aggregator",
                "quick": args.quick,
                "summary": "; ".join(
                    f"{r['submissions']}: {r['submissions_per_s']}/s, "
                    f"{r['aggregator_peak_rss_mb']} MB, lost {r['lost']}"
                    for r in rows
                ),
                "machine": platform.platform(),
                "cpus": psutil.cpu_count(),
                "rounds": rows,
                "replacement_flood": flood,
                "float16_transport": f16,
                "sha256_of_code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12],
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
