"""The node's personalization loop: when to adapt, and what to do with the result.

One thread beside the capture loop, sharing its stop event:

* trigger ``window`` (a real kiosk): once a night, inside the configured window and while no clip
  is being recorded, personalize v (:mod:`edge_node.adapt`); if a federation round is open for the
  central version the node holds, submit the new v.
* trigger ``round`` (the fleet simulation): personalize as soon as a round opens, then submit.

With federation on, it also installs every newer *verified* central v as a new bundle version:
the base of the next personalization, and what the display shows while it is not personalized.
The display keeps its personalized head otherwise (the paper's point).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_node import bundles
from edge_node.adapt import AdaptParams, AdaptResult
from edge_node.config import NodeConfig
from edge_node.schedule import in_window, night_of
from edge_node.state import FederationInfo, NodeState
from vfer import weights as wio
from vfer.bundle import (
    VFER_STEP,
    VFER_WEIGHTS,
    Bundle,
    write_files,
)

log = logging.getLogger(__name__)
RETRY_S = 10.0


def central_version(bundle: Bundle) -> int:
    """The federation version of a central bundle (0: never received from an aggregator)."""
    return int(bundle.manifest.notes.get("central_version", "0"))


def install_central(
    bundle_path: Path,
    version: int,
    round_id: int,
    classes: tuple[str, ...],
    trainable: dict[str, Any],
) -> str:
    """Write a verified central v as a new bundle version and make it the personalization base.

    The node keeps BatchNorm statistics from its current central bundle (they never travel).
    """
    from vfer.export import vfer_step_tflite

    base = bundles.central_bundle(bundle_path)
    if base.classes != tuple(classes):
        raise ValueError(
            f"central v has classes {list(classes)}, this node's bundle {list(base.classes)}"
        )
    full = base.vfer_weights()
    full.update({n: a.astype("float32") for n, a in trainable.items()})
    name = f"central-v{version}"
    target = bundles.new_version_path(bundle_path, name)
    if not target.exists():
        bundles.ensure_managed(bundle_path)
        write_files(
            target,
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
    if bundles.load_active(bundle_path).manifest.personalized:
        bundles.set_central(bundle_path, name)  # keep showing the personalized head
    else:
        bundles.switch_to(bundle_path, name, central=True)
    log.info("installed central v%d (round %d) as %s", version, round_id, name)
    return name


def memo_path(db: Path) -> Path:
    """Where the node remembers which night and which rounds it has personalized for."""
    return Path(f"{db}.personalizer.json")


def load_memo(db: Path) -> dict[str, Any]:
    try:
        return {"rounds_done": [], "night_done": None, **json.loads(memo_path(db).read_text())}
    except (OSError, ValueError):
        return {"rounds_done": [], "night_done": None}


def save_memo(db: Path, memo: dict[str, Any]) -> None:
    from vfer.atomic import atomic_write_text

    atomic_write_text(memo_path(db), json.dumps(memo))


def tonight(now: datetime, window_start: str) -> str:
    return night_of(now, window_start)


class Personalizer(threading.Thread):
    """Runs adaptation on schedule or per round, submits to federation, installs centrals."""

    def __init__(
        self,
        config: NodeConfig,
        state: NodeState,
        stop: threading.Event,
        *,
        now: Callable[[], datetime] = datetime.now,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="personalizer", daemon=True)
        self.config = config
        self.state = state
        self.stop_event = stop
        self.now = now
        self.busy = busy or (lambda: state.snapshot().recording)
        self.lock = threading.Lock()  # one adaptation at a time
        self.fed: Any = None
        self._memo = load_memo(config.db)
        self.results: list[AdaptResult] = []
        self.error: BaseException | None = None

    def _save_memo(self) -> None:
        save_memo(self.config.db, self._memo)

    def run(self) -> None:
        try:
            if self.config.federation.enabled:
                self._run_federated()
            else:
                self._run_local()
        except BaseException as exc:  # surfaced by the service, never silent
            log.exception("personalizer stopped: %s", exc)
            self.error = exc

    def _params(self, override: Any = None) -> AdaptParams:
        a = self.config.adaptation
        if override is not None:
            return AdaptParams(
                p=override.p,
                p_threshold=override.p_threshold,
                epochs=override.epochs,
                lr=override.lr,
                min_clips=a.min_clips,
                teacher=a.teacher,
            )
        return AdaptParams(
            p=a.p,
            p_threshold=a.p_threshold,
            epochs=a.epochs,
            lr=a.lr,
            min_clips=a.min_clips,
            teacher=a.teacher,
        )

    def adapt_now(self, params: AdaptParams) -> AdaptResult:
        from edge_node.cli_adapt import run_adapt

        with self.lock:
            result = run_adapt(self.config.db, self.config.bundle, params)
        self.results.append(result)
        if result.status == "adapted":
            self.state.update(last_adaptation=datetime.now().isoformat(timespec="seconds"))
        return result

    def _window_open(self) -> bool:
        a = self.config.adaptation
        return a.enabled and in_window(self.now(), a.window_start, a.window_end) and not self.busy()

    def _tonight(self) -> str:
        return night_of(self.now(), self.config.adaptation.window_start)

    def _run_local(self) -> None:
        while not self.stop_event.wait(5.0):
            self._memo = load_memo(self.config.db)  # the nightly timer may have run meanwhile
            if self._window_open() and self._memo.get("night_done") != self._tonight():
                result = self.adapt_now(self._params())
                if result.status != "skipped":
                    self._memo["night_done"] = self._tonight()
                    self._save_memo()

    def _run_federated(self) -> None:
        from edge_node.federation import FederationClient, NodeUpdate
        from edge_node.federation.client import default_outbox

        cfg = self.config
        with FederationClient(cfg.node_id, cfg.federation, default_outbox(cfg.db)) as fed:
            self.fed = fed
            next_try = 0.0
            while not self.stop_event.wait(0.5):
                mine = central_version(bundles.central_bundle(cfg.bundle))
                central = fed.latest_central()
                if central is not None and central.version > mine:
                    install_central(
                        cfg.bundle,
                        central.version,
                        central.round_id,
                        central.classes,
                        central.weights,
                    )
                    mine = central.version
                rnd = fed.current_round()
                self.state.update(
                    federation=FederationInfo(
                        enabled=True,
                        connected=bool(fed.link.connected),
                        last_round=central.round_id if central else None,
                        central_version=str(mine),
                    )
                )
                if rnd is None or rnd.state != "open" or rnd.round_id in self._memo["rounds_done"]:
                    continue
                if rnd.base_version != mine or time.monotonic() < next_try:
                    continue  # wait for the round's central to arrive (or for the retry time)
                trigger = cfg.adaptation.trigger
                if (trigger == "window" and not self._window_open()) or self.busy():
                    continue  # outside the window, or a clip is being recorded right now
                result = self.adapt_now(self._params(rnd.personalization))
                if result.status != "adapted":
                    log.info(
                        "round %d: not submitting (%s); retrying in %.0f s",
                        rnd.round_id,
                        result.reason,
                        RETRY_S,
                    )
                    next_try = time.monotonic() + RETRY_S
                    continue
                fed.submit(
                    NodeUpdate(
                        round_id=rnd.round_id,
                        base_version=rnd.base_version,
                        weights=result.trainable,
                        clips_per_class=result.selected_per_class,
                        metrics={
                            "loss_before": float(result.loss_before or 0.0),
                            "loss_after": float(result.loss_after or 0.0),
                            "clips_total": float(result.clips_total),
                        },
                    )
                )
                log.info(
                    "round %d: submitted v personalized on %d clips",
                    rnd.round_id,
                    sum(result.selected_per_class.values()),
                )
                self._memo["rounds_done"] = [*self._memo["rounds_done"], rnd.round_id][-50:]
                if trigger == "window":
                    self._memo["night_done"] = self._tonight()
                self._save_memo()
