"""The node's personalization loop: when to adapt, and what to do with the result.

One thread beside the capture loop, sharing its stop event:

* trigger ``window`` (a real kiosk): once a night, inside the configured window and while no clip
  is being recorded, personalize v (:mod:`edge_node.adapt`); if a federation round is open for the
  central version the node holds, submit the new v.
* trigger ``round`` (the fleet simulation): personalize as soon as a round opens, then submit.

With federation on, it also installs every newer *verified* central v as a new bundle version:
the base of the next personalization, and what the display shows while it is not personalized.
The display keeps its personalized head otherwise (the paper's point).

Both jobs need TensorFlow, so both run in a child process (:mod:`edge_node.children`): this
process, the capture process, never imports it. Which central is installed, which rounds were
submitted and which night was done live in the bundle home's ``state.json``
(:class:`~edge_node.bundles.BundleHome`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge_node.adapt import AdaptParams, AdaptResult
from edge_node.bundles import BundleHome
from edge_node.children import ChildError, ChildRun, adapt_in_child, install_central_in_child
from edge_node.config import NodeConfig
from edge_node.schedule import in_window, night_of
from edge_node.state import FederationInfo, NodeState

log = logging.getLogger(__name__)
RETRY_S = 10.0


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
        self.home = BundleHome(config.bundle)
        self.home.adopt_legacy_memo(config.db)
        self.results: list[AdaptResult] = []
        self.children: list[ChildRun] = []  # every child run, with its peak RSS
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.config.federation.enabled:
                self._run_federated()
            else:
                self._run_local()
        except ChildError as exc:
            if self.stop_event.is_set():  # the node is stopping: the child was stopped with it
                log.info("personalizer stopped with the node (%s)", exc)
                return
            log.exception("personalizer stopped: %s", exc)
            self.error = exc
        except BaseException as exc:  # surfaced by the service, never silent
            log.exception("personalizer stopped: %s", exc)
            self.error = exc

    def adapt_now(self, params: AdaptParams) -> AdaptResult:
        """One personalization, in a child process; the capture loop picks up the new bundle."""
        with self.lock:
            forgets = self.state.forget_generation
            result, run = adapt_in_child(
                self.config.db, self.config.bundle, params, stop=self.stop_event
            )
            if self.state.forget_generation != forgets and result.status == "adapted":
                # "forget me" came while the child ran: its head was built from forgotten clips
                self.home.forget_personalized("forget me during adaptation")
                result.status, result.reason, result.trainable = (
                    "rejected",
                    "the clips were forgotten while adapting",
                    {},
                )
        self.children.append(run)
        self.results.append(result)
        reasons = result.gate.get("reasons", []) if result.status == "blocked" else []
        self.state.count_adaptation(result.status, tuple(str(r) for r in reasons))  # type: ignore[attr-defined]
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
            # the nightly timer may have run meanwhile: the home's state says
            if self._window_open() and self.home.night_done() != self._tonight():
                result = self.adapt_now(AdaptParams.build(self.config.adaptation))
                if result.status != "skipped":
                    self.home.mark_night_done(self._tonight())

    def _run_federated(self) -> None:
        from edge_node.federation import FederationClient, NodeUpdate
        from edge_node.federation.client import default_outbox

        cfg = self.config
        with FederationClient(cfg.node_id, cfg.federation, default_outbox(cfg.db)) as fed:
            self.fed = fed
            next_try = 0.0
            while not self.stop_event.wait(0.5):
                mine = self.home.central_version()  # state.json: no bundle is re-verified
                central = fed.latest_central()
                if central is not None and central.version > mine:
                    self.children.append(
                        install_central_in_child(
                            cfg.bundle,
                            central.version,
                            central.round_id,
                            central.classes,
                            central.weights,
                            stop=self.stop_event,
                        )
                    )
                    mine = self.home.central_version()
                rnd = fed.current_round()
                self.state.update(
                    federation=FederationInfo(
                        enabled=True,
                        connected=bool(fed.link.connected),
                        last_round=central.round_id if central else None,
                        central_version=str(mine),
                    )
                )
                if rnd is None or rnd.state != "open" or rnd.round_id in self.home.rounds_done():
                    continue
                if rnd.base_version != mine or time.monotonic() < next_try:
                    continue  # wait for the round's central to arrive (or for the retry time)
                trigger = cfg.adaptation.trigger
                if (trigger == "window" and not self._window_open()) or self.busy():
                    continue  # outside the window, or a clip is being recorded right now
                params = AdaptParams.build(cfg.adaptation, rnd.personalization)
                result = self.adapt_now(params)
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
                self.home.mark_round_done(rnd.round_id)
                if trigger == "window":
                    self.home.mark_night_done(self._tonight())
