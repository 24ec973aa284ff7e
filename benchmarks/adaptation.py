"""Benchmark: one overnight adaptation on the node (issue: on-device personalization).

Measures, on this machine:
* the wall time of ``python -m edge_node adapt`` over P x K clips of about 75 frames (TensorFlow
  import, fine-tuning and the TFLite export included), as a fresh process like the nightly timer;
* what recomputing the backbone on every frame of every epoch would add instead of reading the
  cached embeddings, with f as LiteRT int8 (what the node runs) and as Keras MobileNetV2 (what a
  TensorFlow training loop over images would run);
* the adaptation's peak memory with a small database and one ten times larger (only P x K clips
  are selected from either).

Writes benchmarks/results/adaptation.json. ``--quick`` uses a smaller "large" database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_node.store import ClipStore, NewClip
from tests.support import paths
from tests.support.bundles import build_bundle
from vfer.classes import EMOTIONS_6

REPO = Path(__file__).resolve().parents[1]

P, K, FRAMES = 15, 6, 75


def fill(db: Path, n_clips: int, bundle_id: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with ClipStore(db) as store:
        for i in range(n_clips):
            c = i % K
            emb = np.abs(rng.normal(0.3 * c, 1, (FRAMES, 1280))).astype(np.float32)
            ifer = np.full((FRAMES, K), 0.06, np.float32)
            ifer[:, c] = 0.7
            store.add_clip(
                NewClip(
                    started_at=1e9 + i * 10,
                    ended_at=1e9 + i * 10 + 5,
                    face_ratio=1.0,
                    bundle_id=bundle_id,
                    classes=EMOTIONS_6,
                    times=np.arange(FRAMES) / 15,
                    embeddings=emb,
                    ifer=ifer,
                    vfer_probs=np.full(K, 1 / K, np.float32),
                )
            )


# Runs the CLI in a child that reports its own peak RSS at exit (RUSAGE_CHILDREN would keep the max
# over every child so far).
_CHILD = (
    "import atexit, resource, runpy, sys;"
    "atexit.register(lambda: sys.stderr.write('PEAK_RSS_KB=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss));"
    "sys.argv = ['edge_node'] + sys.argv[1:];"
    "runpy.run_module('edge_node', run_name='__main__')"
)


def run_adapt(db: Path, bundle: Path) -> tuple[float, float, dict[str, object]]:
    """Wall seconds, peak RSS (MiB) and the JSON result of one adapt process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [
        sys.executable,
        "-c",
        _CHILD,
        "adapt",
        "--db",
        str(db),
        "--bundle",
        str(bundle),
        "--json",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
    wall = time.perf_counter() - t0
    peak_kb = int(
        next(line for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_KB=")).split(
            "="
        )[1]
    )
    return wall, peak_kb / 1024, json.loads(out.stdout.strip().splitlines()[-1])


def backbone_costs(n: int) -> dict[str, float]:
    """Seconds per frame for f: LiteRT int8 (one frame at a time) and Keras (batches of 32)."""
    from training.backbone_cut import cut_at_pool
    from vfer.backbone import Backbone

    tmp = Path(tempfile.mkdtemp())
    (tmp / "b.tflite").write_bytes(cut_at_pool(paths.BACKBONE_INT8.read_bytes()))
    crop = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    with Backbone.from_path(tmp / "b.tflite") as f:
        f.embed(crop)
        t0 = time.perf_counter()
        for _ in range(n):
            f.embed(crop)
        litert = (time.perf_counter() - t0) / n
    import keras

    model = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg")
    batch = np.repeat(crop[None].astype(np.float32) / 127.5 - 1, 32, axis=0)
    model.predict(batch, verbose=0)
    t0 = time.perf_counter()
    reps = max(1, n // 32)
    for _ in range(reps):
        model.predict(batch, verbose=0)
    keras_s = (time.perf_counter() - t0) / (reps * 32)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"litert_int8_s_per_frame": litert, "keras_batched_s_per_frame": keras_s}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    try:
        central = build_bundle(work / "central" / "bundle", EMOTIONS_6, seed=3).path
        small_n, large_n = P * K, (3 if args.quick else 10) * P * K
        runs = {}
        for name, n in (("small", small_n), ("large", large_n)):
            node = work / name
            shutil.copytree(central, node / "bundle")
            fill(node / "clips.db", n, "bench")
            wall, rss, result = run_adapt(node / "clips.db", node / "bundle")
            runs[name] = {
                "clips_in_db": n,
                "db_mib": round((node / "clips.db").stat().st_size / 2**20, 1),
                "wall_s": round(wall, 2),
                "peak_rss_mib": round(rss, 1),
                "selected": sum(result["selected_per_class"].values()),  # type: ignore[union-attr]
                "in_process_s": round(float(result["seconds"]), 2),  # type: ignore[arg-type]
                "finetune_epochs_s": round(float(result["train_seconds"]), 2),  # type: ignore[arg-type]
                "status": result["status"],
            }
        f_cost = backbone_costs(100 if args.quick else 400)
        epochs, frames = 2, P * K * FRAMES
        cached = runs["small"]["wall_s"]
        train = float(runs["small"]["finetune_epochs_s"])  # type: ignore[arg-type]
        recompute = {
            name: round(cached + epochs * frames * s, 2)
            for name, s in f_cost.items()  # type: ignore[operator]
        }
        report = {
            "machine": f"{os.cpu_count()} cores, {sys.platform}",
            "setting": {"P": P, "K": K, "frames_per_clip": FRAMES, "epochs": epochs},
            "runs": runs,
            "backbone_s_per_frame": {k: round(v, 5) for k, v in f_cost.items()},
            "recompute_backbone_each_epoch_wall_s": recompute,
            "speedup_vs_recompute": {k: round(v / cached, 1) for k, v in recompute.items()},
            # the same comparison for the training work alone (what each epoch costs), without the
            # fixed start-up (TensorFlow import, model build, export) both paths pay once
            "speedup_training_epochs_vs_recompute": {
                k: round((train + epochs * frames * s) / train, 1) for k, s in f_cost.items()
            },
            "goal": "adaptation <= 10 s wall; >= 20x faster than recomputing the backbone each epoch; memory bounded",
        }
        report["summary"] = (
            f"adapt {cached:.1f} s for {P}x{K} clips; x{report['speedup_vs_recompute']['keras_batched_s_per_frame']}"  # type: ignore[index]
            f" vs Keras f, x{report['speedup_vs_recompute']['litert_int8_s_per_frame']} vs LiteRT f; "  # type: ignore[index]
            f"RSS {runs['small']['peak_rss_mib']} -> {runs['large']['peak_rss_mib']} MiB for 10x DB"
        )
        out = REPO / "benchmarks" / "results" / "adaptation.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
