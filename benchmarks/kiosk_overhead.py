"""What the kiosk page costs the node: process CPU time per frame, without and with the page.

``python benchmarks/kiosk_overhead.py [--quick] [--bundle B]`` runs the real node
(``python -m edge_node run``) on a looping video at its native rate (the realistic kiosk case:
a camera delivers frames at a fixed rate) three times:

* ``headless``: ``--no-kiosk`` (no preview JPEGs, no server);
* ``kiosk_idle``: ``--kiosk-port`` (the pipeline encodes the preview; nobody watches);
* ``kiosk_page``: as above with the page open in headless Chromium at 800x480, which pulls the
  MJPEG preview at ``kiosk.preview_fps`` (15) and the state stream at ``kiosk.state_rate_hz``.

Each run warms up, then the node's own CPU time (user + system, psutil) is read over a window;
frames in the window = the video's fps x the window (the node keeps up at this rate; its own
end-of-run fps is recorded as a check). Chromium's processes are not counted: the goal is the
node's extra CPU, at most 10 % of the headless pipeline. Writes benchmarks/results/kiosk_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.support import paths
from tests.support.browser import chromium_path, launch_browser, open_page

REPO = Path(__file__).resolve().parents[1]

VIDEO = paths.VIDEO / "WolfgangLanger_Pexels.mp4"
GOAL = 0.10
CLASSES = ("happiness", "sadness", "anger", "neutral")
PREVIEW_FPS = 15.0


def build_bundle(root: Path) -> Path:
    from tests.support.bundles import random_head
    from training.backbone_cut import cut_at_pool
    from vfer.bundle import write_bundle
    from vfer.heads_spec import ifer_spec, vfer_spec

    backbone = root / "backbone.tflite"
    backbone.write_bytes(cut_at_pool(paths.BACKBONE_INT8.read_bytes()))
    out = root / "bundle"
    write_bundle(
        out,
        classes=CLASSES,
        backbone=backbone,
        ifer_weights=random_head(ifer_spec(4), 1, 0.3),
        vfer_weights=random_head(vfer_spec(4), 2, 0.3),
        head_version="bench",
    )
    return out


def video_fps(video: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        return float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"node exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def kiosk_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "api/state", timeout=2) as res:
            return bool(json.loads(res.read()).get("frame_size"))
    except OSError:
        return False


def kiosk_fps(url: str) -> float | None:
    try:
        with urllib.request.urlopen(url + "api/state", timeout=5) as res:
            return float(json.loads(res.read())["fps"])
    except (OSError, KeyError, ValueError):
        return None


def _thread_cpu(proc: Any) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in proc.threads()}


def run_once(mode: str, bundle: Path, work: Path, warmup: float, window: float) -> dict[str, Any]:
    import psutil

    port = free_port()
    log = work / f"{mode}.log"
    cmd = [
        sys.executable, "-m", "edge_node", "run", "--source", str(VIDEO), "--bundle", str(bundle),
        "--db", str(work / f"{mode}.db"), "--face-model", str(paths.FACE_MODEL), "--loop",
    ]  # fmt: skip
    cmd += ["--no-kiosk"] if mode == "headless" else ["--kiosk-port", str(port)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3"}
    url = f"http://127.0.0.1:{port}/"
    with log.open("wb") as out, ExitStack() as stack:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            if mode == "headless":
                wait_for(lambda: "node node-1: source" in log.read_text(), 120, "the node", proc)
            else:
                wait_for(lambda: kiosk_up(url), 120, "the kiosk", proc)
            if mode == "kiosk_page":
                browser = stack.enter_context(launch_browser())
                page = open_page(browser, url, (800, 480))
                page.wait_for_selector("#no-preview", state="hidden", timeout=30_000)
            time.sleep(warmup)  # benchmark pacing: let caches, JIT and the page settle
            node = psutil.Process(proc.pid)
            c0, t0, th0 = node.cpu_times(), time.monotonic(), _thread_cpu(node)
            time.sleep(window)
            c1, t1, th1 = node.cpu_times(), time.monotonic(), _thread_cpu(node)
            steady_fps = kiosk_fps(url) if mode != "headless" else None
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    wall = t1 - t0
    per_thread = sorted(
        ((tid, th1[tid] - th0.get(tid, 0.0)) for tid in th1), key=lambda x: x[1], reverse=True
    )
    main_thread = next((d for tid, d in per_thread if tid == proc.pid), 0.0)
    match = re.search(r"stopped after (\d+) frames \(([\d.]+) fps\)", log.read_text())
    return {
        "mode": mode,
        "window_s": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_per_wall_s": round(cpu / wall, 4),
        # where the CPU went: the capture loop (main thread) vs every other thread (LiteRT's
        # worker threads, MediaPipe, the kiosk's HTTP threads), top five
        "main_thread_cpu_s": round(main_thread, 3),
        "top_threads_cpu_s": [round(d, 3) for _tid, d in per_thread[:5]],
        "node_fps_steady": steady_fps,  # the pipeline's own rate estimate (kiosk runs only)
        "node_frames_total": int(match.group(1)) if match else None,
        "node_fps_reported": float(match.group(2)) if match else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows (about a minute in all)")
    ap.add_argument("--bundle", type=Path, help="model bundle (default: build a random-head one)")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "kiosk_overhead.json"
    )
    args = ap.parse_args(argv)
    for needed in (VIDEO, paths.FACE_MODEL, paths.BACKBONE_INT8):
        if not needed.exists():
            print(f"Error: test data {needed} is absent", file=sys.stderr)
            return 1
    if chromium_path() is None:
        print("Error: Chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    warmup, window = (3.0, 10.0) if args.quick else (5.0, 40.0)
    fps = video_fps(VIDEO)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        work = Path(tmp)
        bundle = args.bundle or build_bundle(work)
        runs = [
            run_once(m, bundle, work, warmup, window)
            for m in ("headless", "kiosk_idle", "kiosk_page")
        ]
    for r in runs:
        r["cpu_ms_per_frame"] = round(1000 * r["cpu_per_wall_s"] / fps, 3)
    base = runs[0]["cpu_ms_per_frame"]
    overhead = {r["mode"]: round(r["cpu_ms_per_frame"] / base - 1, 4) for r in runs[1:]}
    result = {
        "summary": (
            f"page open adds {100 * overhead['kiosk_page']:+.1f}% node CPU per frame "
            f"(goal <= {100 * GOAL:.0f}%), idle kiosk {100 * overhead['kiosk_idle']:+.1f}%"
        ),
        "goal_met": overhead["kiosk_page"] <= GOAL,
        "overhead_vs_headless": overhead,
        "runs": runs,
        "video": VIDEO.name,
        "video_fps": round(fps, 3),
        "preview_fps": PREVIEW_FPS,
        "quick": args.quick,
        "method": "node process user+system CPU (psutil) over a window after warm-up; "
        "frames = video fps x window (real-time pacing, --loop; node_fps_steady checks the node "
        "keeps up); node_frames_total/node_fps_reported include start-up; Chromium not counted",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "chromium": str(chromium_path()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["summary"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
