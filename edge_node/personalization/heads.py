"""Head versions: the one function that writes a new v into the bundle home, and the central's
install job (``python -m edge_node model install-central``, run in a child process).

A head version is a bundle folder whose f, g and teacher are carried over unchanged from its base
(BatchNorm statistics too: they never travel) and whose v (its step model and weights) is new:
personalized on this node (:mod:`edge_node.personalization.run`) or a verified central v from the
aggregator (:func:`install_central`). Both need TensorFlow to export the step model, which the
capture process never imports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_node.bundles import BundleHome
from vfer import weights as wio
from vfer.bundle import VFER_STEP, VFER_WEIGHTS, Bundle

log = logging.getLogger(__name__)


def write_head(
    home: BundleHome,
    base: Bundle,
    weights: dict[str, np.ndarray],
    *,
    name: str,
    personalized: bool,
    federation_round: int,
    notes: Mapping[str, str],
) -> Bundle:
    """Write ``weights`` (all of v's) as head version ``name`` on top of ``base``; not active yet."""
    from vfer.export import vfer_step_tflite

    files: dict[str, bytes | Path] = {
        **base.carried_files(),  # f, g and the teacher, unchanged
        VFER_STEP: vfer_step_tflite(weights),
        VFER_WEIGHTS: wio.to_bytes(weights),
    }
    return home.write_version(
        name,
        files,
        classes=base.classes,
        head_version=name,
        federation_round=federation_round,
        personalized=personalized,
        parent=base.manifest.head_version,
        teacher=base.manifest.teacher,
        notes=dict(notes),
    )


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
    home = BundleHome(bundle_path)
    if version <= home.central_version():
        log.info("central v%d is not newer than the installed one: nothing to do", version)
        return home.installed().central or ""
    base = home.central()
    if base.classes != tuple(classes):
        raise ValueError(
            f"central v has classes {list(classes)}, this node's bundle {list(base.classes)}"
        )
    full = base.vfer_weights()
    full.update({n: a.astype("float32") for n, a in trainable.items()})
    name = f"central-v{version}"
    if not home.has_version(name):
        notes = {"central_version": str(version)}
        write_head(
            home, base, full, name=name, personalized=False, federation_round=round_id, notes=notes
        )
    if home.active().manifest.personalized:
        home.set_central(name, version)  # keep showing the personalized head
    else:
        home.switch_to(name, central=True, central_version=version)
    log.info("installed central v%d (round %d) as %s", version, round_id, name)
    return name
