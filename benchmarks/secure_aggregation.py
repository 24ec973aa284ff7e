"""Benchmark: what secure aggregation (vfer/secagg) costs against plain FedAvg of the same updates.

For v's real size (208,582 float32 values, K=6) it runs whole secure rounds in one process
(tests/support/secagg.py: real node sessions and group aggregators exchanging the serialized
messages) and measures:

* bytes per node per round, each stage, sent and received, against the plain update frame;
* node CPU per step (``time.process_time`` of each ``NodeSession`` call, and of encoding the
  update when the session is made), in a group of 9 (8 peers) and of 8;
* aggregator CPU for 8, 64 and 1,000 nodes (groups of 8, run one after the other: the
  aggregator's groups are independent), against plain FedAvg (``vfer.fedavg.RunningSum``) of
  the same updates in the same run;
* the quantization error of the fleet mean (the mean of the group means) against the float
  mean of the same updates, max abs per weight, and the documented bound.

Writes benchmarks/results/secure_aggregation.json. ``--quick`` stops at 64 nodes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.aggregator import personalized, random_v
from tests.support.secagg import Harness, node_id
from vfer import weights as wcodec
from vfer.fedavg import RunningSum
from vfer.heads_spec import vfer_spec
from vfer.messages import UpdateHeader, pack
from vfer.secagg import GroupResult, SecAggParams, quantize

REPO = Path(__file__).resolve().parents[1]
SPEC = vfer_spec(6)
GROUP = 8
GOAL_UPLOAD_RATIO = 1.05
GOAL_NODE_CPU_S = 0.100


def plain_update_bytes(weights: dict[str, np.ndarray]) -> int:
    """The plaintext update a node sends today: a frame with the safetensors float32 v."""
    header = UpdateHeader(
        node_id=node_id(0),
        round_id=3,
        base_version=3,
        update_id="5f0c2b7e9a0d4c1e8b6a2f3d4e5f6a7b",
        seq=12,
        created_at=1764131234.5,
        clips_per_class={"anger": 4, "happiness": 15, "neutral": 15, "sadness": 3},
        metrics={"train_loss": 0.41, "pseudo_label_mean_conf": 0.78},
    )
    return len(pack(header, wcodec.to_bytes(weights)))


def fleet_updates(n: int, base: dict[str, np.ndarray], seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [personalized(base, rng) for _ in range(n)]


def secure_group(
    params: SecAggParams, base: dict[str, np.ndarray], heads: list[dict[str, np.ndarray]], seed: int
) -> Harness:
    """One group's secure round over ``heads`` (moves from ``base`` travel, as nodes send)."""
    base_flat = quantize.flatten(base, SPEC)
    moves = {node_id(i): quantize.flatten(w, SPEC) - base_flat for i, w in enumerate(heads)}
    h = Harness(len(heads), params, seed=seed, updates=moves)
    (r,) = h.run().values()
    if not isinstance(r, GroupResult) or r.problem is not None:
        raise SystemExit(f"a group did not finish: {r}")
    h.result = r  # type: ignore[attr-defined]
    return h


def node_costs(params: SecAggParams, base: dict[str, np.ndarray], size: int) -> dict[str, Any]:
    """Median and max node CPU per stage, and bytes per stage, in one group of ``size``."""
    h = secure_group(params, base, fleet_updates(size, base, seed=size), seed=size)
    stages = list(h.node_cpu[h.ids[0]])
    cpu = {
        s: {
            "median_ms": round(1000 * statistics.median(h.node_cpu[n][s] for n in h.ids), 2),
            "max_ms": round(1000 * max(h.node_cpu[n][s] for n in h.ids), 2),
        }
        for s in stages
    }
    totals = [sum(h.node_cpu[n].values()) for n in h.ids]
    sizes = {k: int(statistics.median(h.sizes[n][k] for n in h.ids)) for k in h.sizes[h.ids[0]]}
    return {
        "group_size": size,
        "peers": size - 1,
        "cpu_per_stage": cpu,
        "cpu_round_median_ms": round(1000 * statistics.median(totals), 1),
        "cpu_round_max_ms": round(1000 * max(totals), 1),
        "bytes_per_stage": sizes,
        "bytes_sent": sum(v for k, v in sizes.items() if k.startswith("sent ")),
        "bytes_received": sum(v for k, v in sizes.items() if k.startswith("received ")),
    }


def fleet_run(params: SecAggParams, base: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """``n`` nodes in groups of 8: aggregator CPU (secure) against plain FedAvg, and the error."""
    secure_s, plain_s, node_s = 0.0, 0.0, 0.0
    per_step: dict[str, float] = {}
    plain = RunningSum()
    fleet_sum = np.zeros(params.vector_length)
    base_flat = quantize.flatten(base, SPEC)
    worst, bound = 0.0, 0.0
    for g in range(n // GROUP):
        heads = fleet_updates(GROUP, base, seed=1000 + g)
        t0 = time.process_time()
        for w in heads:
            plain.add(w)
        plain_s += time.process_time() - t0
        h = secure_group(params, base, heads, seed=g)
        secure_s += sum(h.timings.values())
        for step, t in h.timings.items():
            per_step[step] = per_step.get(step, 0.0) + t
        node_s += sum(sum(c.values()) for c in h.node_cpu.values())
        r: GroupResult = h.result  # type: ignore[attr-defined]
        oracle = np.mean([h.clipped(nid) for nid in h.ids], axis=0)
        worst = max(worst, float(np.max(np.abs(r.mean - oracle))))
        bound = max(bound, r.error_bound)
        fleet_sum += r.mean * len(r.survivors)
    t0 = time.process_time()
    float_mean = plain.mean(dtype="float64")
    plain_s += time.process_time() - t0
    secure_mean = base_flat + fleet_sum / n
    fleet_err = float(np.max(np.abs(secure_mean - quantize.flatten(float_mean, SPEC))))
    return {
        "nodes": n,
        "groups": n // GROUP,
        "aggregator_cpu_s": round(secure_s, 3),
        "plain_fedavg_cpu_s": round(plain_s, 3),
        "ratio": round(secure_s / plain_s, 1) if plain_s else None,
        "aggregator_cpu_ms_per_node": round(1000 * secure_s / n, 2),
        "aggregator_cpu_s_per_step": {k: round(v, 3) for k, v in per_step.items()},
        "node_cpu_ms_per_node": round(1000 * node_s / n, 1),
        "max_abs_error_group_mean": worst,
        "max_abs_error_fleet_mean_vs_float_fedavg": fleet_err,
        "documented_bound_per_weight": bound,
    }


def write_json(
    quick: bool,
    params: SecAggParams,
    plain_bytes: int,
    goals: dict[str, Any],
    nodes: list[dict[str, Any]],
    fleets: list[dict[str, Any]],
) -> None:
    upload_ratio, node_cpu_ms = goals["masked_upload_ratio"], goals["node_cpu_8_peers_max_ms"]
    out = REPO / "benchmarks" / "results" / "secure_aggregation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "secure_aggregation",
                "quick": quick,
                "summary": f"upload {upload_ratio:.4f}x plaintext, node CPU (8 peers) "
                f"{node_cpu_ms} ms, aggregator {fleets[-1]['nodes']} nodes "
                f"{fleets[-1]['aggregator_cpu_s']} s vs FedAvg {fleets[-1]['plain_fedavg_cpu_s']} s",
                "machine": platform.platform(),
                "vector_length": params.vector_length,
                "params": params.model_dump(),
                "scale": quantize.scale(params),
                "plain_update_bytes": plain_bytes,
                "goals": goals,
                "node": nodes,
                "fleet": fleets,
                "sha256_of_code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(REPO)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 and 64 nodes only")
    args = ap.parse_args()
    base = random_v(6, np.random.default_rng(0))
    params = SecAggParams(vector_length=quantize.flatten(base, SPEC).size)
    plain_bytes = plain_update_bytes(personalized(base, np.random.default_rng(1)))
    nodes = [node_costs(params, base, size) for size in (GROUP + 1, GROUP)]
    masked = nodes[0]["bytes_per_stage"]["sent secagg_masked"]
    upload_ratio = masked / plain_bytes
    node_cpu_ms = nodes[0]["cpu_round_max_ms"]
    print(f"masked upload {masked} B vs plaintext {plain_bytes} B: {upload_ratio:.4f}x")
    print(
        f"node CPU, one round with 8 peers: median {nodes[0]['cpu_round_median_ms']} ms, max {node_cpu_ms} ms"
    )
    fleets = []
    for n in [8, 64] if args.quick else [8, 64, 1000]:
        fleets.append(fleet_run(params, base, n))
        f = fleets[-1]
        print(
            f"{n:>5} nodes: aggregator {f['aggregator_cpu_s']} s CPU vs plain FedAvg "
            f"{f['plain_fedavg_cpu_s']} s; max error {f['max_abs_error_fleet_mean_vs_float_fedavg']:.2e} "
            f"(bound {f['documented_bound_per_weight']:.2e})",
            flush=True,
        )
    goals = {
        "masked_upload_ratio": round(upload_ratio, 4),
        "masked_upload_ok": upload_ratio <= GOAL_UPLOAD_RATIO,
        "node_cpu_8_peers_max_ms": node_cpu_ms,
        "node_cpu_ok": node_cpu_ms < 1000 * GOAL_NODE_CPU_S,
        "error_within_bound": all(
            f["max_abs_error_group_mean"] <= f["documented_bound_per_weight"] for f in fleets
        ),
    }
    write_json(args.quick, params, plain_bytes, goals, nodes, fleets)


if __name__ == "__main__":
    main()
