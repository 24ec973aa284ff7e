"""Benchmark: the nightly fine-tune of v with visit-level DP-SGD on and off (issue 24).

The same selection for both: P x K = 15 x 6 clips of 75 frames (the size benchmarks/adaptation.py
uses), grouped into visits of 1-3 clips (seeded), 2 epochs, expected batch 8, Adam 1e-3. Each
mode runs in a fresh Python process so that its peak RSS (``ru_maxrss``) is its own; the wall
time of the fine-tune itself (graph tracing included, TensorFlow import excluded) and of solving
the noise multiplier are reported apart. Writes benchmarks/results/privacy_finetune.json.

    python -m benchmarks.privacy_finetune [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
P, K, FRAMES = 15, 6, 75


def data(clips: int, seed: int = 0) -> tuple[list[list[np.ndarray]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    xs = [
        np.abs(rng.normal(0.3 * (i % K), 1, (FRAMES, 1280))).astype(np.float32)
        for i in range(clips)
    ]
    ys = [i % K for i in range(clips)]
    visits: list[list[np.ndarray]] = []
    labels: list[list[int]] = []
    i = 0
    while i < clips:
        n = int(rng.integers(1, 4))
        visits.append(xs[i : i + n])
        labels.append(ys[i : i + n])
        i += n
    return visits, labels


def child(mode: str, clips: int) -> dict[str, float]:
    """One fine-tune in this process (run by ``--child``); prints its figures as JSON."""
    from tests.support.aggregator import random_v
    from vfer.personalize import finetune_v
    from vfer.privacy.accountant import plan_night
    from vfer.privacy.dpsgd import finetune_v_dp
    from vfer.privacy.options import PrivacyOptions

    start = random_v(K, np.random.default_rng(1), trainable_only=False)
    visits, labels = data(clips)
    t0 = time.perf_counter()
    out: dict[str, float] = {"visits": len(visits), "clips": clips}
    if mode == "off":
        flat = [c for v in visits for c in v]
        res = finetune_v(start, flat, [y for ys in labels for y in ys], epochs=2, batch_size=8)
        out["steps"] = res.steps
    else:
        opts = PrivacyOptions(enabled=True, epsilon_per_night=float(mode))
        plan = plan_night(opts, len(visits), batch_size=8, epochs=2)
        out["solve_s"] = time.perf_counter() - t0
        out.update(noise_multiplier=plan.noise_multiplier, epsilon=plan.epsilon, steps=plan.steps)
        dp = finetune_v_dp(start, visits, labels, plan, seed=0)
        res = dp.tuned
        out["clipped_share"] = dp.clipped_share
    out["finetune_s"] = time.perf_counter() - t0
    out["train_s"] = res.train_s
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(mode: str, clips: int) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.privacy_finetune",
        "--child",
        mode,
        "--clips",
        str(clips),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    res: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="30 clips instead of 90")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--clips", type=int, default=P * K, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.clips)))
        return 0
    clips = 30 if args.quick else P * K
    modes = ["off", "3", "off", "3"]  # twice each, interleaved: the machine's load drifts
    runs = [{"mode": m, **run_child(m, clips)} for m in modes]
    report = {"clips": clips, "frames_per_clip": FRAMES, "epochs": 2, "batch": 8, "runs": runs}
    out = REPO / "benchmarks" / "results" / "privacy_finetune.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
