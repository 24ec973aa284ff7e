"""`python -m training sim-node`: one simulated edge node, the real edge_node code.

It claims a slot of a simulation folder (``--slot auto`` takes the first free one, which is what
``docker compose up --scale node=N`` needs), copies the central bundle into its own work folder,
writes its ``node.yaml`` and runs the node in two steps, as a kiosk does over its first days:

1. **record**: the capture loop (``edge_node.service.run_node``) over the folder of the slot's
   clips, its camera, until the folder ends; so every node adapts on all its clips, not on the
   first few it happened to have when a round opened;
2. **federate**: the node's personalizer (``edge_node.personalization.loop.Personalizer``) adapts v when a
   federation round opens and submits it, until SIGTERM.

``health.json`` in the work folder says which step the node is in (``phase``); the process
simulator starts the aggregator once every node is federating, and a restarted container does
not record its clips again once it has. ``adaptations.json`` keeps every adaptation the node ran, as its
``edge_node adapt --json`` child reported it (the safety gate's verdict included): the report
takes each node's verdict from there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from training.sim.setup import read_plan, slot_dir
from vfer.atomic import atomic_write_text
from vfer.cli import UserError

if TYPE_CHECKING:
    from edge_node.config import NodeConfig

log = logging.getLogger(__name__)
RECORDING, FEDERATING = "recording", "federating"  # health.json's phase
HEALTH = "health.json"
ADAPTATIONS = "adaptations.json"


def claim_slot(sim: Path, wanted: str, nodes: int, owner: str) -> int:
    """A slot index: ``wanted`` as a number, or the first one no other node has claimed (atomic mkdir)."""
    if wanted != "auto":
        slot = int(wanted)
        if not 0 <= slot < nodes:
            raise UserError(f"slot {slot} does not exist (0..{nodes - 1})")
        return slot
    claims = sim / "claims"
    claims.mkdir(exist_ok=True)
    for slot in range(nodes):
        marker = claims / f"slot-{slot}"
        try:
            marker.mkdir()
        except FileExistsError:
            if (marker / "owner").is_file() and (marker / "owner").read_text() == owner:
                return slot  # a restarted container gets its own slot back
            continue
        (marker / "owner").write_text(owner)
        return slot
    raise UserError(f"all {nodes} slots of {sim} are taken; set up more nodes")


def node_config(sim: Path, slot: int, work: Path, broker: str, face_model: str) -> dict[str, Any]:
    """The node.yaml of a simulated node (validated by the node's own config model)."""
    meta = json.loads((slot_dir(sim, slot) / "slot.json").read_text())
    prof = read_plan(sim)
    from training.sim.setup import PROFILES

    p = PROFILES[prof.profile]
    return {
        "node_id": meta["node_id"],
        "bundle": str(work / "bundle"),
        "db": str(work / "clips.db"),
        "log_level": "INFO",
        "camera": {
            "source": str(slot_dir(sim, slot) / "clips"),
            "kind": "folder",
            "realtime": False,
            "loop": False,
        },
        # detection on every frame, as the lab's preprocessing crops the held-out clips the
        # report scores, so before/after personalization compare like with like
        "face": {"model": face_model, "detect_every": 1},
        "clips": {"gap_s": 0.5, "max_s": 60.0, "min_frames": min(8, p.min_frames)},
        "kiosk": {"enabled": False},
        "federation": _federation(sim, meta["node_id"], broker, prof.tls_fleet),
        # report: every node submits (the round must close), and the verdict is recorded so the
        # report can say how often the gate would have blocked a head that lowered F1
        "adaptation": {
            "enabled": True,
            "trigger": "round",
            "min_clips": p.min_clips,
            "gate": "report",
        },
    }


def _federation(sim: Path, node_id: str, broker: str, tls_fleet: bool) -> dict[str, Any]:
    """Anonymous with the fleet's public key; or, in a provisioned fleet, the node's own
    ``add-node`` section (user, password file, CA, MQTT 5) on ``broker``."""
    if tls_fleet:
        from training.sim.tls_fleet import node_federation

        return {**node_federation(sim, node_id), "broker_url": broker}
    return {
        "enabled": True,
        "broker_url": broker,
        "fleet_public_key": str((sim / "fleet" / "fleet_public_key.pem").resolve()),
        "mqtt_version": "auto",
    }


def run_sim_node(
    sim: Path, slot_spec: str, work: Path | None, broker: str | None, stop: threading.Event
) -> int:
    from edge_node.config import NodeConfig
    from vfer.config_io import validate_model

    plan = read_plan(sim)
    owner = os.environ.get("HOSTNAME") or f"pid-{os.getpid()}"
    slot = claim_slot(sim, slot_spec, plan.nodes, owner)
    work = work or slot_dir(sim, slot) / "work"
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "bundle").exists():
        shutil.copytree(sim / "central" / "bundle", work / "bundle")
    models = json.loads((sim / "models.json").read_text())
    face = os.environ.get("FEDVFER_MODELS")
    face_model = (
        str(Path(face) / "face_detection_short_range.tflite") if face else models["face_model"]
    )
    data = node_config(sim, slot, work, broker or plan.broker, face_model)
    (work / "node.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    config = validate_model(NodeConfig, data, source=str(work / "node.yaml"))
    log.info("sim node %s in slot %d, work %s", config.node_id, slot, work)
    if read_health(work).get("phase") != FEDERATING:  # else: restarted after recording
        write_health(work, config.node_id, slot, RECORDING)
        recorded = record(config, Path(face_model), stop)
        if stop.is_set():
            return slot
        write_health(work, config.node_id, slot, FEDERATING, recorded=recorded)
    federate(config, work / ADAPTATIONS, stop)
    return slot


def read_health(work: Path) -> dict[str, Any]:
    """The node's ``health.json`` (empty before the node wrote one, or while it is half written)."""
    try:
        return dict(json.loads((work / HEALTH).read_text()))
    except (OSError, ValueError):
        return {}


def write_health(
    work: Path, node_id: str, slot: int, phase: str, *, recorded: int | None = None
) -> dict[str, Any]:
    health = {"ok": True, "node_id": node_id, "slot": slot, "phase": phase}
    if recorded is not None:
        health["recorded_clips"] = recorded
    atomic_write_text(work / HEALTH, json.dumps(health))
    return health


def record(config: NodeConfig, face_model: Path, stop: threading.Event) -> int:
    """The capture loop over the slot's clips until the folder ends; the clips it stored."""
    from edge_node.service import run_node

    summary = run_node(config, face_model=face_model, stop=stop)
    return len(summary.clips_saved)


def federate(config: NodeConfig, journal: Path, stop: threading.Event) -> None:
    """The personalizer until ``stop``; its adaptation results are kept in ``journal``."""
    from edge_node.personalization.loop import Personalizer
    from edge_node.state import NodeState

    personalizer = Personalizer(config, NodeState(), stop)
    personalizer.start()
    written = 0
    try:
        while not stop.wait(1.0):
            written = keep_results(personalizer.results, journal, written)
            if personalizer.error is not None:
                raise UserError(f"personalizer failed: {personalizer.error}")
    finally:
        stop.set()
        personalizer.join(timeout=60)
        keep_results(personalizer.results, journal, written)


def keep_results(results: list[Any], journal: Path, written: int) -> int:
    """Rewrite ``journal`` when the personalizer has new results; how many it holds now."""
    done = list(results)  # the personalizer thread appends; a copy is a consistent prefix
    if len(done) > written:
        atomic_write_text(journal, json.dumps([r.summary() for r in done], indent=1) + "\n")
    return len(done)


def read_adaptations(work: Path) -> list[dict[str, Any]]:
    """What ``federate`` kept: every adaptation's result, oldest first (empty without any)."""
    try:
        return list(json.loads((work / ADAPTATIONS).read_text()))
    except (OSError, ValueError):
        return []
