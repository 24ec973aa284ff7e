"""`python -m edge_node adapt` and `python -m edge_node model ...`: personalization and bundle versions."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from edge_node import bundles
from edge_node.adapt import AdaptParams, AdaptResult, adapt
from edge_node.store import ClipStore
from vfer.cli import UserError


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


def print_result(r: AdaptResult) -> None:
    click.echo(f"clips stored: {r.clips_total}; below p_threshold: {r.below_threshold}")
    click.echo(f"{'class':<12} {'candidates':>10} {'selected':>9}")
    for c in r.classes:
        click.echo(f"{c:<12} {r.candidates_per_class[c]:>10} {r.selected_per_class[c]:>9}")
    click.echo(f"{r.status}: {r.reason}")
    if r.loss_before is not None:
        click.echo(
            f"pseudo-label loss: central {r.loss_before:.4f} -> personalized {r.loss_after:.4f}"
        )
    if r.new_version:
        click.echo(
            f"new bundle {r.new_version} (from {r.base_version}) is active; step model changed: {r.step_changed}"
        )
    click.echo(f"took {r.seconds:.1f} s")


@click.command("adapt")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="node.yaml"
)
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False), help="clip database")
@click.option(
    "--bundle", type=click.Path(path_type=Path), help="model bundle (folder or managed link)"
)
@click.option("--p", "p", type=click.IntRange(min=0), help="at most P clips per class [15]")
@click.option(
    "--p-threshold", type=click.FloatRange(0, 1), help="minimum pseudo-label confidence [0.5]"
)
@click.option("--epochs", type=click.IntRange(min=1), help="fine-tuning epochs [2]")
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), help="Adam learning rate [0.001]"
)
@click.option(
    "--min-clips",
    type=click.IntRange(min=1),
    help="do not adapt below this many selected clips [4]",
)
@click.option(
    "--nightly",
    is_flag=True,
    help="the timer's mode: skip if tonight's adaptation already ran (service or timer), else record it",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def adapt_cmd(
    config_path: Path | None,
    db: Path | None,
    bundle: Path | None,
    p: int | None,
    p_threshold: float | None,
    epochs: int | None,
    lr: float | None,
    min_clips: int | None,
    nightly: bool,
    as_json: bool,
) -> None:
    """Personalize v once from the stored clips (the nightly job) and switch to the new bundle."""
    from edge_node.config import load_node_config

    cfg = load_node_config(config_path, db=db, bundle=bundle)
    a = cfg.adaptation
    params = AdaptParams(
        p=a.p if p is None else p,
        p_threshold=a.p_threshold if p_threshold is None else p_threshold,
        epochs=a.epochs if epochs is None else epochs,
        lr=a.lr if lr is None else lr,
        min_clips=a.min_clips if min_clips is None else min_clips,
        teacher=a.teacher,
    )
    if nightly:
        from datetime import datetime

        from edge_node.personalizer import load_memo, save_memo, tonight

        memo = load_memo(cfg.db)
        night = tonight(datetime.now(), a.window_start)
        if memo.get("night_done") == night:
            click.echo(f"tonight ({night}) is already done: not adapting again")
            return
    result = run_adapt(cfg.db, cfg.bundle, params)
    if nightly and result.status != "skipped":
        memo["night_done"] = night
        save_memo(cfg.db, memo)
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        print_result(result)


@click.group("model")
def model_group() -> None:
    """The node's bundle versions: status and rollback."""


@model_group.command("status")
@click.option("--bundle", required=True, type=click.Path(path_type=Path))
def model_status(bundle: Path) -> None:
    """Which bundle is active, which is previous, which is the central base."""
    active = bundles.load_active(bundle)
    m = active.manifest
    click.echo(
        f"active: {m.head_version} (round {m.federation_round}, personalized {m.personalized})"
    )
    state = bundles.read_state(bundle)
    click.echo(
        f"previous: {state.previous or '-'}; central base: {state.central or m.head_version}"
    )


@model_group.command("rollback")
@click.option("--bundle", required=True, type=click.Path(path_type=Path))
def model_rollback(bundle: Path) -> None:
    """Go back to the previous bundle (the node picks it up at its next clip)."""
    now = bundles.rollback(bundle)
    click.echo(f"active bundle is now {now}")
