"""The node's model jobs, each run by ``python -m edge_node`` in its own short-lived process.

* :func:`run_adapt` / :func:`nightly_adapt`: ``python -m edge_node adapt`` (the systemd timer's
  command, and what the running node starts as a child process);
* :func:`install_central`: ``python -m edge_node model install-central`` (the node starts it when a
  verified central v arrives).

Both need TensorFlow (fine-tuning v, exporting the step model), which the capture process never
imports (:mod:`edge_node.children` starts them). Both write a new bundle version through
:class:`~edge_node.bundles.BundleHome` and exit; the capture loop picks up the switched bundle at
its next clip.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_node.adapt import AdaptParams, AdaptResult, adapt
from edge_node.bundles import BundleHome
from edge_node.schedule import night_of
from edge_node.store import ClipStore
from vfer import weights as wio
from vfer.bundle import VFER_STEP, VFER_WEIGHTS
from vfer.cli import UserError

log = logging.getLogger(__name__)


class StoreClips:
    """The clip store as adaptation's :class:`edge_node.adapt.ClipSource`."""

    def __init__(self, store: ClipStore, teacher: str = "g") -> None:
        self.store = store
        self.teacher = teacher  # adaptation.teacher: g | external | ensemble

    def candidates(self, classes: tuple[str, ...]) -> tuple[list[int], np.ndarray]:
        rows = [r for r in self.store.clips() if r.classes == classes]
        if not rows:
            return [], np.zeros((0, len(classes)), np.float32)
        if self.teacher == "g":
            return [r.id for r in rows], np.stack([r.ifer_mean for r in rows])
        return [r.id for r in rows], np.stack([self._mean(r.id) for r in rows])

    def _mean(self, clip_id: int) -> np.ndarray:
        """Eq. 1 over the configured teacher's per-frame probabilities (g's where none stored)."""
        from edge_node.display import pseudo_probs

        g = self.store.frame_ifer(clip_id)
        return pseudo_probs(self.teacher, g, self.store.frame_teacher(clip_id)).mean(axis=0)  # type: ignore[arg-type]

    def frame_embeddings(self, clip_id: int) -> np.ndarray:
        return self.store.frame_embeddings(clip_id)


def run_adapt(db: Path, bundle: Path, params: AdaptParams) -> AdaptResult:
    if not db.is_file():
        raise UserError(
            f"{db}: no such database (record clips with `python -m edge_node run` or `ingest` first)"
        )
    with ClipStore(db) as store:
        return adapt(StoreClips(store, params.teacher), bundle, params)


def nightly_adapt(
    db: Path, bundle: Path, params: AdaptParams, window_start: str, now: datetime
) -> AdaptResult | None:
    """Adapt once per night: None when tonight's adaptation already ran (node or timer)."""
    home = BundleHome(bundle)
    home.adopt_legacy_memo(db)
    night = night_of(now, window_start)
    if home.night_done() == night:
        return None
    result = run_adapt(db, bundle, params)
    if result.status != "skipped":
        home.mark_night_done(night)
    return result


def install_central(
    bundle_path: Path,
    version: int,
    round_id: int,
    classes: tuple[str, ...],
    trainable: dict[str, Any],
) -> str:
    """Write a verified central v as a new bundle version and make it the personalization base.

    The node keeps BatchNorm statistics from its current central bundle (they never travel). The
    display switches to it only while no personalized head is shown (the paper's point).
    """
    from vfer.export import vfer_step_tflite

    home = BundleHome(bundle_path)
    if version <= home.central_version():
        log.info("central v%d is not newer than the installed one: nothing to do", version)
        return home.read_state().central or ""
    base = home.central()
    if base.classes != tuple(classes):
        raise ValueError(
            f"central v has classes {list(classes)}, this node's bundle {list(base.classes)}"
        )
    full = base.vfer_weights()
    full.update({n: a.astype("float32") for n, a in trainable.items()})
    name = f"central-v{version}"
    if not home.has_version(name):
        home.write_version(
            name,
            {
                **base.carried_files(),  # f, g and the teacher, unchanged
                VFER_STEP: vfer_step_tflite(full),
                VFER_WEIGHTS: wio.to_bytes(full),
            },
            classes=base.classes,
            head_version=name,
            federation_round=round_id,
            personalized=False,
            parent=base.manifest.head_version,
            teacher=base.manifest.teacher,
            notes={"central_version": str(version)},
        )
    if home.active().manifest.personalized:
        home.set_central(name, version)  # keep showing the personalized head
    else:
        home.switch_to(name, central=True, central_version=version)
    log.info("installed central v%d (round %d) as %s", version, round_id, name)
    return name
