"""What ``make pi-check`` prepares on the host (x86, the project's venv) for a node in an arm64
root: the fedvfer wheel, a bundle, a fleet from ``init-fleet``/``add-node``, the boot-partition
folder the Pi installer reads, the media the node runs on, and the broker and aggregator the
node's federation round talks to (both on 127.0.0.1)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from provisioning import cloudinit as ci
from provisioning.image import UNITS_DIR, node_files
from provisioning.installer import FACE_MODEL, UNITS, install_sh
from vfer.ports import wait_port

REPO = Path(__file__).resolve().parents[1]
#: In the root: the boot partition's fedvfer/ folder, and the media the steps run on.
BOOT_SRC = f"/boot/firmware/{ci.BOOT_DIR}"
MEDIA = "/srv/picheck"
CREMA_CLIP = "crema_d/VideoFlash/1001_DFA_HAP_XX.flv"
WOLFGANG = "video/WolfgangLanger_Pexels.mp4"
LONDON_PHOTOS = 20


@dataclass(frozen=True)
class Shared:
    """The read-only data and models (``../shared`` beside the repository, or $FEDVFER_SHARED)."""

    root: Path

    @property
    def face_model(self) -> Path:
        return self.root / "models" / FACE_MODEL

    @property
    def backbone(self) -> Path:
        return self.root / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"

    @property
    def teacher(self) -> Path:
        return self.root / "models" / "fer2013_mini_xception_64.tflite"

    @property
    def london(self) -> Path:
        return self.root / "data" / "london_face_set"


def build_wheel(out: Path) -> Path:
    """The fedvfer wheel from this checkout (what ``image --package`` would carry)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)]
    subprocess.run(cmd, check=True, capture_output=True)
    return next(out.glob("fedvfer-*.whl"))


def build_bundle(out: Path, shared: Shared) -> Path:
    """A 4-class bundle with random heads and the mini-Xception teacher (what `evaluate` scores)."""
    import numpy as np

    from training.backbone_cut import cut_at_pool
    from vfer.bundle import write_bundle
    from vfer.classes import EMOTIONS_4
    from vfer.heads_spec import ifer_spec, vfer_spec

    backbone = out.parent / "backbone.tflite"
    backbone.write_bytes(cut_at_pool(shared.backbone.read_bytes()))
    rng = np.random.default_rng(0)

    def head(spec: dict[str, object]) -> dict[str, np.ndarray]:
        heads = {}
        for name, ws in spec.items():
            shape = ws.shape  # type: ignore[attr-defined]
            if name.endswith(("moving_variance", "gamma")):
                heads[name] = np.ones(shape, np.float32)
            elif name.endswith(("moving_mean", "beta")):
                heads[name] = np.zeros(shape, np.float32)
            else:
                heads[name] = rng.normal(0, 0.05, shape).astype(np.float32)
        return heads

    write_bundle(
        out,
        classes=EMOTIONS_4,
        backbone=backbone,
        ifer_weights=head(dict(ifer_spec(4))),
        vfer_weights=head(dict(vfer_spec(4))),
        head_version="pi-check",
        teacher=shared.teacher,
    )
    return out


def make_fleet(fleet: Path, node: str, port: int, agg_port: int) -> None:
    from provisioning.fleet import add_node, init_fleet

    init_fleet(
        fleet,
        broker_host="localhost",
        port=port,
        aggregator_port=agg_port,
        classes=("happiness", "sadness", "anger", "neutral"),
        deployment_context="research",
    )
    add_node(fleet, node, camera="file", kiosk=False)


def london_manifest(shared: Shared, photos_dir: Path, media_dir: str) -> list[tuple[str, str]]:
    """The first 10 neutral and 10 happy (smiling) photos, copied to ``photos_dir``; rows."""
    rows: list[tuple[str, str, str]] = []
    with (shared.london / "faces.csv").open() as fh:
        for rec in csv.DictReader(fh):
            rows.append((rec["image"], rec["subject_id"], rec["expression"]))
    picked = [r for r in rows if r[2] == "neutral"][: LONDON_PHOTOS // 2]
    picked += [r for r in rows if r[2] == "happiness"][: LONDON_PHOTOS // 2]
    photos_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for image, subject, label in picked:
        name = image.replace("/", "_")
        shutil.copyfile(shared.london / image, photos_dir / name)
        lines.append((f"{media_dir}/{name}", f"{subject},{label}"))
    return lines


def stage(
    root: Path, work: Path, node: str, shared: Shared, video_seconds: float | None = None
) -> Path:
    """The boot partition's fedvfer/ folder inside the root, as ``provisioning image`` writes it
    (credentials, units, wheel, bundle, face model, install.sh), and the media under /srv."""
    src = root / BOOT_SRC.lstrip("/")
    shutil.rmtree(src, ignore_errors=True)
    for name, data in node_files(work / "fleet", node).items():
        (src / "etc").mkdir(parents=True, exist_ok=True)
        (src / "etc" / name).write_bytes(data)
    (src / "systemd").mkdir(parents=True)
    for unit in UNITS:
        shutil.copyfile(UNITS_DIR / unit, src / "systemd" / unit)
    wheel = next((work / "dist").glob("fedvfer-*.whl"))
    (src / "dist").mkdir()
    shutil.copyfile(wheel, src / "dist" / wheel.name)
    shutil.copytree(work / "bundle", src / "bundle")
    (src / "models").mkdir()
    shutil.copyfile(shared.face_model, src / "models" / FACE_MODEL)
    spec = installer_spec(node, wheel.name)
    (src / "install.sh").write_text(install_sh(spec))
    _stage_media(root, shared, video_seconds)
    return src


def installer_spec(node: str, wheel: str) -> ci.ImageSpec:
    """The Pi installer's spec for this check: its own package list less the Raspberry Pi
    archive's (not reachable from plain Debian), the wheel from the card, no kiosk browser."""
    return ci.ImageSpec(
        node=node,
        hostname=node,
        instance_id=f"pi-check-{node}",
        packages=ci.debian_packages(ci.DEFAULT_PACKAGES),
        package_file=wheel,
        kiosk=False,
    )


def trim_video(src: Path, dst: Path, seconds: float) -> int:
    """The first ``seconds`` of ``src`` as an mp4 at ``dst`` (same size and rate); frames written."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    n = 0
    try:
        while n < round(seconds * fps):
            ok, frame = cap.read()
            if not ok:
                break
            out.write(frame)
            n += 1
    finally:
        cap.release()
        out.release()
    return n


def _stage_media(root: Path, shared: Shared, video_seconds: float | None) -> None:
    media = root / MEDIA.lstrip("/")
    shutil.rmtree(media, ignore_errors=True)
    (media / "crema").mkdir(parents=True)
    shutil.copyfile(shared.root / "data" / CREMA_CLIP, media / "crema" / Path(CREMA_CLIP).name)
    (media / "wolfgang").mkdir()
    video = shared.root / "data" / WOLFGANG
    if video_seconds is None:
        shutil.copyfile(video, media / "wolfgang" / video.name)
    else:  # a quicker check: emulation runs the node at well under 1 frame per second
        trim_video(video, media / "wolfgang" / video.name, video_seconds)
    rows = london_manifest(shared, media / "london", f"{MEDIA}/london")
    body = "path,subject,label\n" + "".join(f"{p},{rest}\n" for p, rest in rows)
    (media / "london.csv").write_text(body)


@dataclass
class Fleetside:
    """mosquitto with the fleet's generated config and the aggregator for one round."""

    broker: subprocess.Popen[bytes]
    aggregator: subprocess.Popen[bytes]

    def stop(self) -> None:
        for proc in (self.aggregator, self.broker):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def start_fleetside(work: Path, agg_port: int) -> Fleetside:
    """The broker (its TLS/ACL drop-in, as root so it reads the work folder) and the aggregator
    (its generated aggregator.yaml, 1 round of 1 submission, v from the bundle)."""
    fleet = work / "fleet"
    conf = work / "mosquitto.conf"
    conf.write_text("user root\n" + (fleet / "broker" / "mosquitto.conf").read_text())
    log = (work / "mosquitto.log").open("ab")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    wait_port(agg_port, broker, timeout=20.0, what="mosquitto")
    agg = yaml.safe_load((fleet / "aggregator" / "aggregator.yaml").read_text())
    agg |= {
        "state_db": str(work / "aggregator.db"),
        "initial_weights": str(work / "bundle" / "vfer_head.safetensors"),
        "round": {"min_submissions": 1, "max_submissions": 1, "rounds": 1},
    }
    cfg = work / "aggregator-run.yaml"
    cfg.write_text(yaml.safe_dump(agg))
    alog = (work / "aggregator.log").open("ab")
    cmd = [sys.executable, "-m", "broker_aggregator", "run", "--config", str(cfg)]
    return Fleetside(broker, subprocess.Popen(cmd, stdout=alog, stderr=alog, cwd=REPO))
