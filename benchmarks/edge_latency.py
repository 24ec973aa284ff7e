"""Edge node latency: per-stage cost, whole-pipeline fps, the naive Keras path, memory over time.

    python benchmarks/edge_latency.py [--quick] [--soak-s S]

Writes benchmarks/results/edge_latency.json and prints a table. The source is the real test
video (WolfgangLanger_Pexels.mp4, one face throughout) letterboxed to 640x480 and re-encoded, so
decoding is measured too. The bundle is the int8 MobileNetV2 cut at its pool plus heads with random
weights (speed does not depend on the weights). The naive path is what a first prototype does:
the same detector and crop, then Keras ``model.predict`` per frame for f (MobileNetV2,
weights=None, same architecture), g, and v over the clip so far (Keras v has no streaming step).
The full run soaks for 10 minutes (``--soak-s`` shortens it; ``--quick`` soaks 15 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edge_node.pipeline import Models, Pipeline, PipelineOptions  # noqa: E402
from edge_node.sources import VideoFileSource  # noqa: E402
from edge_node.state import NodeState  # noqa: E402
from edge_node.store import ClipStore, NewClip  # noqa: E402
from tests.support import paths  # noqa: E402
from tests.support.edge_fixtures import build_bundles  # noqa: E402
from vfer.faces import FaceCropper, crop_square, square_box  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
W, H = 640, 480


def make_source(out: Path) -> Path:
    """The test video letterboxed to 640x480, as MJPEG (cheap to decode, like a webcam stream)."""
    cap = cv2.VideoCapture(str(paths.VIDEO / "WolfgangLanger_Pexels.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS) or 24.0
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        scale = min(W / w, H / h)
        small = cv2.resize(bgr, (round(w * scale), round(h * scale)))
        canvas = np.zeros((H, W, 3), np.uint8)
        y0, x0 = (H - small.shape[0]) // 2, (W - small.shape[1]) // 2
        canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
        writer.write(canvas)
    cap.release()
    writer.release()
    return out


def ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000
    return {
        "mean": round(float(a.mean()), 3),
        "p50": round(float(np.median(a)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
    }


def stages(
    video: Path, models: Models, cropper: FaceCropper, db: Path, n: int
) -> dict[str, dict[str, float]]:
    t: dict[str, list[float]] = {
        k: [] for k in ("decode", "detect", "crop", "backbone", "ifer", "vfer_step", "store")
    }
    cap = cv2.VideoCapture(str(video))
    embs, ifers = [], []
    models.vfer.reset()
    while len(t["decode"]) < n:
        t0 = time.perf_counter()
        ok, bgr = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t1 = time.perf_counter()
        faces = cropper.detect(rgb)
        t2 = time.perf_counter()
        t["decode"].append(t1 - t0)
        t["detect"].append(t2 - t1)
        if not faces:
            continue
        box = max(faces, key=lambda f: f[0].area)[0]
        x0, y0, side = square_box(box, 0.25, W, H)
        crop = crop_square(rgb, x0, y0, side)
        t3 = time.perf_counter()
        emb = models.backbone.embed(crop)
        t4 = time.perf_counter()
        ifer = models.ifer.predict_frame(emb)
        t5 = time.perf_counter()
        models.vfer.step(emb)
        t6 = time.perf_counter()
        for k, a, b in (
            ("crop", t2, t3),
            ("backbone", t3, t4),
            ("ifer", t4, t5),
            ("vfer_step", t5, t6),
        ):
            t[k].append(b - a)
        embs.append(emb)
        ifers.append(ifer)
    cap.release()
    classes = models.bundle.classes
    with ClipStore(db) as store:  # one 240-frame clip per write, cost spread over its frames
        for i in range(0, len(embs) - 239, 240) or [0]:
            e = np.stack(embs[i : i + 240])
            clip = NewClip(
                0.0,
                10.0,
                1.0,
                "x" * 64,
                classes,
                np.arange(len(e)) / 24,
                e,
                np.stack(ifers[i : i + 240]),
                ifers[0],
            )
            t0 = time.perf_counter()
            store.add_clip(clip)
            t["store"].append((time.perf_counter() - t0) / len(e))
    return {k: ms(v) for k, v in t.items() if v}


def pipeline_fps(
    video: Path, bundle: Path, cropper: FaceCropper, db: Path, n: int
) -> dict[str, float]:
    source = VideoFileSource(video, loop=True)
    stop = threading.Event()
    with ClipStore(db) as store:
        pipe = Pipeline(bundle, cropper, store, NodeState(), PipelineOptions())
        frames = source.frames(stop)
        for _ in range(10):  # warm-up
            pipe.process(next(frames))
        t0 = time.perf_counter()
        for _ in range(n):
            pipe.process(next(frames))
        dt = time.perf_counter() - t0
        stop.set()
        pipe.finish()
        pipe.close()
    return {
        "frames": n,
        "seconds": round(dt, 3),
        "fps": round(n / dt, 1),
        "ms_per_frame": round(1000 * dt / n, 3),
    }


def naive_fps(video: Path, cropper: FaceCropper, n: int) -> dict[str, float]:
    import keras

    from vfer.heads import build_ifer, build_vfer

    f = keras.applications.MobileNetV2(
        weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3)
    )
    g, v = build_ifer(6), build_vfer(6)
    cap = cv2.VideoCapture(str(video))
    clip: list[np.ndarray] = []
    times = []
    while len(times) < n + 3:
        ok, bgr = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        t0 = time.perf_counter()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        crop = cropper.crop(rgb)
        if crop is None:
            continue
        x = crop.image[np.newaxis].astype(np.float32) / 127.5 - 1.0
        emb = f.predict(x, verbose=0)
        g.predict(emb, verbose=0)
        clip.append(emb[0])
        v.predict(np.stack(clip)[np.newaxis], verbose=0)
        times.append(time.perf_counter() - t0)
    cap.release()
    dt = float(np.sum(times[3:]))  # the first calls trace the graphs
    return {
        "frames": n,
        "seconds": round(dt, 3),
        "fps": round(n / dt, 2),
        "ms_per_frame": round(1000 * dt / n, 2),
    }


def soak(
    video: Path, bundle: Path, cropper: FaceCropper, db: Path, seconds: float
) -> dict[str, object]:
    import psutil

    proc = psutil.Process()
    source = VideoFileSource(video, loop=True)
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    with ClipStore(db) as store:
        pipe = Pipeline(bundle, cropper, store, NodeState(), PipelineOptions(preview=True))
        t0 = time.monotonic()
        next_sample = t0
        frames = 0
        for frame in source.frames(stop):
            pipe.process(frame)
            frames += 1
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - t0, proc.memory_info().rss / 2**20))
                next_sample = now + max(1.0, seconds / 60)
            if now - t0 >= seconds:
                break
        stop.set()
        pipe.finish()
        pipe.close()
        clips = store.count()
    settled = [s for s in samples if s[0] >= seconds * 0.2] or samples
    x, y = np.array([s[0] for s in settled]), np.array([s[1] for s in settled])
    slope = float(np.polyfit(x / 60, y, 1)[0]) if len(x) > 2 else 0.0
    return {
        "seconds": round(seconds, 1),
        "frames": frames,
        "clips_written": clips,
        "rss_mb_start": round(samples[0][1], 1),
        "rss_mb_after_warmup": round(float(y[0]), 1),
        "rss_mb_end": round(samples[-1][1], 1),
        "rss_mb_max": round(max(s[1] for s in samples), 1),
        "rss_slope_mb_per_min_after_warmup": round(slope, 3),
        "samples": [[round(a, 1), round(b, 1)] for a, b in samples],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames, 15 s soak (under a minute)")
    ap.add_argument("--soak-s", type=float, default=None, help="memory soak length (full: 600)")
    args = ap.parse_args()
    soak_s = args.soak_s if args.soak_s is not None else (15.0 if args.quick else 600.0)
    n_stage, n_pipe, n_naive = (150, 200, 15) if args.quick else (472, 1000, 60)
    import psutil

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        root = Path(tmp)
        bundles = build_bundles(root)
        video = make_source(root / "src640x480.avi")
        models = Models.load(bundles.a)
        with FaceCropper.from_path(bundles.face_model) as cropper:
            stage = stages(video, models, cropper, root / "stages.db", n_stage)
            pipe = pipeline_fps(video, bundles.a, cropper, root / "pipe.db", n_pipe)
            naive = naive_fps(video, cropper, n_naive)
            mem = soak(video, bundles.a, cropper, root / "soak.db", soak_s)
        models.close()
    speedup = round(pipe["fps"] / naive["fps"], 1)
    result = {
        "summary": f"pipeline {pipe['fps']} fps on 640x480 (int8 f), {speedup}x the Keras-per-frame path; RSS slope {mem['rss_slope_mb_per_min_after_warmup']} MB/min over {soak_s:.0f} s",
        "quick": args.quick,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": psutil.cpu_count(),
            "python": platform.python_version(),
        },
        "source": "WolfgangLanger_Pexels.mp4 letterboxed to 640x480, MJPEG; one face in every frame",
        "backbone": "tf2_mobilenet_v2_1.0_224_ptq.tflite (int8) cut at the pool, LiteRT 2 threads",
        "stages_ms": stage,
        "pipeline": pipe,
        "naive_keras_per_frame": naive,
        "speedup_vs_naive": speedup,
        "memory_soak": mem,
        "goals": {"pipeline_fps>=100": pipe["fps"] >= 100, "speedup>=20": speedup >= 20},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'stage':<12}{'mean ms':>10}{'p50':>10}{'p95':>10}")
    for k, v in stage.items():
        print(f"{k:<12}{v['mean']:>10.3f}{v['p50']:>10.3f}{v['p95']:>10.3f}")
    print(f"\nwhole pipeline: {pipe['fps']} fps ({pipe['ms_per_frame']} ms/frame)")
    print(
        f"naive Keras per frame: {naive['fps']} fps ({naive['ms_per_frame']} ms/frame); speed-up {speedup}x"
    )
    print(
        f"memory over {soak_s:.0f} s: RSS {mem['rss_mb_after_warmup']} -> {mem['rss_mb_end']} MB "
        f"(max {mem['rss_mb_max']}), slope {mem['rss_slope_mb_per_min_after_warmup']} MB/min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
