"""Forget me: every stored clip and every personalized head built from them, gone.

The store (:meth:`ClipStore.delete_all`: delete, VACUUM, empty the WAL) and the bundle home
(:meth:`BundleHome.forget_personalized`: back to the central head, personalized versions deleted)
each clean their own; :func:`forget_everything` does both, in that order, for the two callers: the
capture loop when the kiosk asks (:meth:`edge_node.pipeline.Pipeline.forget`, which also drops the
clip being recorded and pauses recording first) and ``python -m edge_node forget --all``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from edge_node.bundles import BundleHome
from edge_node.store import ClipStore


class ForgetConfig(BaseModel):
    """``forget:`` in node.yaml: what "forget me" does besides deleting clips."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pause_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="after 'forget me', recording stays paused this long (the visitor can leave)",
    )


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forgotten:
    clips: int  # clips deleted from the store
    heads: tuple[str, ...]  # personalized head versions dropped from the bundle home


def forget_everything(
    store: ClipStore, bundle: str | os.PathLike[str] | None, why: str = "forget me"
) -> Forgotten:
    """Delete every clip, then every personalized head of the bundle home at ``bundle`` (None:
    clips only). Raises :class:`vfer.bundle.BundleError` when a personalized head is active
    and no central version is left to go back to; the clips are gone by then."""
    clips = store.delete_all()
    heads = BundleHome(bundle).forget_personalized(why) if bundle is not None else []
    log.info("forgot %s clips and %s personalized heads (%s)", clips, len(heads), why)
    return Forgotten(clips, tuple(heads))
