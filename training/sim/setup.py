"""`python -m training sim-setup`: everything a simulated fleet needs, in one folder.

::

    SIM/
      central/bundle/           g and v trained on the synthetic corpus's central subjects
      fleet/                    signing_key.pem (aggregator), fleet_public_key.pem (nodes); or a
                                provisioned fleet folder (training.sim.tls_fleet, ``tls_fleet``)
      aggregator.yaml           the aggregator's config (state under SIM/aggregator/ or /state)
      nodes/slot-<i>/clips/     one held-out subject's clips, the node's "camera" (a video folder)
      nodes/slot-<i>/slot.json  the node id, its subject and its held-out evaluation clips
      plan.json                 nodes, rounds, classes, seed: what ``simulate`` evaluates against
      work/                     the corpus, the embedding cache, the backbone (reused across runs)

The same folder serves the process simulator (``python -m training simulate``) and Docker
(``deploy/docker``): both then run ``python -m training sim-node`` per node and
``python -m broker_aggregator run --config SIM/aggregator.yaml``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from vfer import personalization_defaults as defaults
from vfer.classes import EMOTIONS_6
from vfer.cli import UserError

log = logging.getLogger(__name__)


#: the smallest secure-aggregation group (SecAgg+ never draws one below 5): `make demo SECURE=1`
#: runs this many nodes, one group
SECURE_GROUP = 5


@dataclass(frozen=True)
class SimProfile:
    """How big the simulated world is. ``demo`` fits `make demo` in minutes on 2 cores.

    The demo is in the paper's regime: a node records about 30 clips of its person and adapts on
    them (the paper: about 40 unlabelled clips per speaker), and is scored on 36 others, so one
    clip moves its micro-F1 by under 0.03 (it was 18 clips each before). The clips still last 2
    to 3 s, at 6 fps instead of 10, so the frames to embed (about 13,900) stay close to the
    earlier demo's 12,600 and `make demo` keeps to its few minutes.
    """

    central_subjects: int = 10  # central training (2 of them dev)
    dev_subjects: int = 2
    #: per subject and class; a node records 5 of each class (30) and is scored on the other 6 (36)
    clips_per_class: int = 11
    min_frames: int = 12
    max_frames: int = 18
    fps: float = 6.0
    g_epochs: int = 20
    v_epochs: int = 12
    p: int = defaults.P  # the paper's P for CREMA-D
    p_threshold: float = defaults.P_THRESHOLD
    min_clips: int = 2
    deadline_s: float = 90.0
    #: g's own synthetic image corpus: identities, photos per class (the AffectNet stand-in)
    stills: tuple[int, int] = (300, 1)


PROFILES = {
    "demo": SimProfile(),
    # A smoke-test world for the test suite: g is barely trained, so nothing would reach the
    # paper's p_threshold of 0.5; the rule still ranks (P per class, most confident first).
    "tiny": SimProfile(
        central_subjects=4,
        dev_subjects=1,
        clips_per_class=2,
        min_frames=12,
        max_frames=16,
        fps=10.0,
        g_epochs=3,
        v_epochs=2,
        p_threshold=0.0,
        deadline_s=60.0,
        stills=(12, 1),
    ),
}


@dataclass(frozen=True)
class Plan:
    nodes: int
    rounds: int
    classes: tuple[str, ...]
    seed: int
    profile: str
    broker: str
    #: SIM/fleet is a provisioned fleet (training.sim.tls_fleet): nodes and aggregator log in
    #: over TLS with its credentials; else anonymous, with only the fleet's signing key
    tls_fleet: bool = False
    #: rounds run SecAgg+ (``secure_aggregation`` in aggregator.yaml; needs ``tls_fleet``, whose
    #: ``add-node`` gives every node its identity key)
    secure: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d


def read_plan(sim: Path) -> Plan:
    p = sim / "plan.json"
    if not p.is_file():
        raise UserError(
            f"{sim}: not a simulation folder (run `python -m training sim-setup` first)"
        )
    d = json.loads(p.read_text())
    return Plan(d["nodes"], d["rounds"], tuple(d["classes"]), d["seed"], d["profile"], d["broker"],
                bool(d.get("tls_fleet", False)), bool(d.get("secure", False)))  # fmt: skip


def slot_dir(sim: Path, slot: int) -> Path:
    return sim / "nodes" / f"slot-{slot}"


def setup(
    sim: Path,
    *,
    nodes: int,
    rounds: int,
    broker: str,
    seed: int = 0,
    profile_name: str = "demo",
    classes: tuple[str, ...] = EMOTIONS_6,
    progress: bool = True,
    work: Path | None = None,
    ifer_corpus: str = "synthetic-images",
    ifer_root: Path | None = None,
    tls_fleet: bool = False,
    secure: bool = False,
) -> Plan:
    """Generate the corpus, train the central model (cached), and lay out the fleet's folders.

    ``work`` holds what is worth keeping between runs (corpus, embedding cache, the trained
    central model); by default ``SIM/work``. g (the teacher) learns from ``ifer_corpus``: by
    default the synthetic image corpus (people neither v's corpus nor the nodes have), else
    ``affectnet``/``manifest`` at ``ifer_root``, or ``same`` (v's corpus).

    ``tls_fleet``: ``SIM/fleet`` already holds the fleet :func:`training.sim.tls_fleet.make_sim_fleet`
    made; the aggregator's config then starts from its ``aggregator.yaml`` (its TLS listener,
    credentials and signing key) and the nodes log in with their ``add-node`` files.
    ``secure`` (needs ``tls_fleet`` and at least :data:`SECURE_GROUP` nodes): the rounds run
    secure aggregation, one group of all the nodes.
    """
    from training.experiments.protocol import subject_splits
    from training.experiments.setup import (
        SynthSizes,
        _synth_classes,
        resolve_models,
        stills_corpus,
        synthetic_corpus,
    )
    from training.preprocess import EmbeddingCache, ensure, real_pipeline
    from training.sim.tls_fleet import node_id
    from training.train import QUICK, train_central, with_epochs
    from vfer.signing import generate_keypair

    if nodes < 1:
        raise UserError("--nodes must be at least 1")
    if secure and (not tls_fleet or nodes < SECURE_GROUP):
        raise UserError(f"secure aggregation needs the TLS fleet and at least {SECURE_GROUP} "
                        f"nodes (its smallest group), got {nodes}")  # fmt: skip
    prof = PROFILES[profile_name]
    work = work or sim / "work"
    backbone, face_model = resolve_models(None, None, work)
    sizes = SynthSizes(
        subjects=prof.central_subjects + nodes,
        clips_per_class=prof.clips_per_class,
        test_subjects=nodes,
        dev_subjects=prof.dev_subjects,
        min_frames=prof.min_frames,
        max_frames=prof.max_frames,
        fps=prof.fps,
    )
    root = synthetic_corpus(work / "corpora", sizes, classes, seed)
    from training.corpora import load_corpus

    corpus = load_corpus("synthetic", root, classes, seed=seed)
    g_corpus = None
    if ifer_corpus != "same":
        if ifer_root is None and ifer_corpus != "synthetic-images":
            raise UserError(f"--ifer-corpus {ifer_corpus} needs --ifer-root PATH")
        g_root = ifer_root or stills_corpus(
            work / "corpora", prof.stills, _synth_classes(classes), seed
        )
        g_corpus = load_corpus(ifer_corpus, g_root, classes, seed=seed)
        ensure(
            EmbeddingCache.for_models(work / "embeddings", backbone, face_model),
            [r.path for r in g_corpus.records],
            real_pipeline(backbone, face_model),
            progress=progress,
            description="embedding g's images",
        )
    tag = "" if g_corpus is None else f"-g-{g_corpus.name}"
    bundle = train_central(
        corpus,
        work / "embeddings",
        work / "central" / f"{profile_name}-{len(classes)}c-s{seed}{tag}",
        with_epochs(QUICK, prof.g_epochs, prof.v_epochs),
        backbone=backbone,
        face_model=face_model,
        seed=seed,
        progress=progress,
        ifer_corpus=g_corpus,
    )
    central = sim / "central" / "bundle"
    if central.exists():
        shutil.rmtree(central)
    shutil.copytree(bundle.path, central)
    test = corpus.split("test")
    splits = subject_splits(test, 0.5, seed)
    if len(splits) < nodes:
        raise UserError(f"the corpus has {len(splits)} held-out subjects for {nodes} nodes")
    cache = EmbeddingCache.for_models(work / "embeddings", backbone, face_model)
    # the held-out clips score v; the adaptation clips only let the report state how good the
    # teacher g is on the nodes' people (the nodes embed their own copies on-device)
    ensure(cache, [r.path for s in splits[:nodes] for r in s.evaluate + s.adapt],
           real_pipeline(backbone, face_model), progress=progress,
           description="embedding the nodes' clips (lab copy, for the report)")  # fmt: skip
    fleet = sim / "fleet"
    if tls_fleet and not (fleet / "fleet.json").is_file():
        raise UserError(f"{fleet} holds no provisioned fleet (training.sim.tls_fleet makes one)")
    if not (fleet / "fleet_public_key.pem").is_file():
        generate_keypair(fleet)
    for i, split in enumerate(splits[:nodes]):
        d = slot_dir(sim, i)
        if d.exists():
            shutil.rmtree(d)
        (d / "clips").mkdir(parents=True)
        for r in split.adapt:
            shutil.copyfile(r.path, d / "clips" / Path(r.path).name)
        slot = {
            "slot": i,
            "node_id": node_id(i),
            "subject": split.subject,
            "adapt": [{"path": Path(r.path).name, "label": r.label} for r in split.adapt],
            "evaluate": [
                {"path": str(Path(r.path).resolve()), "label": r.label} for r in split.evaluate
            ],
        }
        (d / "slot.json").write_text(json.dumps(slot, indent=2))
    _write_aggregator_yaml(sim, central, classes, nodes, rounds, broker, prof, tls_fleet, secure)
    plan = Plan(nodes, rounds, classes, seed, profile_name, broker, tls_fleet, secure)
    (sim / "plan.json").write_text(json.dumps(plan.to_json(), indent=2))
    (sim / "models.json").write_text(
        json.dumps(
            {
                "backbone": str(backbone.resolve()),
                "face_model": str(face_model.resolve()),
                "work": str(work.resolve()),
            }
        )
    )
    log.info(
        "simulation ready in %s: %d nodes, %d rounds, central %s",
        sim,
        nodes,
        rounds,
        bundle.bundle_id[:12],
    )
    return plan


def _write_aggregator_yaml(
    sim: Path,
    bundle: Path,
    classes: tuple[str, ...],
    nodes: int,
    rounds: int,
    broker: str,
    prof: SimProfile,
    tls_fleet: bool = False,
    secure: bool = False,
) -> None:
    """SIM/aggregator.yaml. With ``tls_fleet`` the broker part (URL of the aggregator's own
    listener, user, password file, CA, signing key, share group) is init-fleet's, as written;
    ``secure`` adds ``secure_aggregation`` (groups of at least :data:`SECURE_GROUP`) and waits
    for every node's join."""
    from training.sim.tls_fleet import aggregator_config

    state = sim / "aggregator"
    state.mkdir(exist_ok=True)
    login: dict[str, Any] = (
        aggregator_config(sim)
        if tls_fleet
        else {
            "broker_url": broker,
            "signing_key_file": str((sim / "fleet" / "signing_key.pem").resolve()),
        }
    )
    cfg = {
        **login,
        "state_db": str((state / "aggregator.db").resolve()),
        "initial_weights": str((bundle / "vfer_head.safetensors").resolve()),
        "classes": list(classes),
        "round": {
            "min_submissions": 1,
            "max_submissions": nodes,
            "deadline_s": prof.deadline_s,
            "rounds": rounds,
        },
        "personalization": {"p": prof.p, "p_threshold": prof.p_threshold, "epochs": 2, "lr": 1e-3},
    }
    if secure:
        from provisioning.identity import VOUCHING_PUBLIC

        cfg["round"]["min_submissions"] = nodes
        cfg["secure_aggregation"] = {
            "vouching_public_key": str((sim / "fleet" / "aggregator" / VOUCHING_PUBLIC).resolve()),
            "min_group_size": SECURE_GROUP,
        }
    (sim / "aggregator.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
