"""The node's personalization loop: when to adapt, and what to do with the result.

One thread beside the capture loop, sharing its stop event:

* trigger ``window`` (a real kiosk): once a night, inside the configured window and while no clip
  is being recorded, personalize v (:mod:`edge_node.personalization.run`); if a federation round
  is open for the central version the node has installed, submit the new v.
* trigger ``round`` (the fleet simulation): personalize as soon as a round opens, then submit.

With federation on, it also installs every newer *verified* central v as a new head version: the
base of the next personalization, and what the display shows while it is not personalized. The
display keeps its personalized head otherwise (the paper's point). An install that fails is
logged and tried again later; until one succeeds the node keeps (and reports) the central it has.

Both jobs need TensorFlow, so both run in a child process
(:mod:`edge_node.personalization.child`): this process, the capture process, never imports it.
Each adaptation's report is kept in the clip database (:mod:`edge_node.personalization.results`).
Which central is installed, which rounds were submitted and which night was done live in the
bundle home's ``installed.json`` (:class:`~edge_node.bundles.BundleHome`), their one owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_node.bundles import BundleHome
from edge_node.config import NodeConfig
from edge_node.personalization.child import (
    ChildError,
    ChildRun,
    adapt_in_child,
    install_central_in_child,
)
from edge_node.personalization.ledger import kiosk_notice, status_privacy
from edge_node.personalization.params import AdaptParams
from edge_node.personalization.results import record
from edge_node.personalization.run import AdaptResult
from edge_node.schedule import in_window, night_of
from edge_node.state import FederationInfo, NodeState
from edge_node.store import ClipStore

if TYPE_CHECKING:
    from edge_node.federation import CentralModel, FederationClient
    from vfer.messages import RoundMsg

log = logging.getLogger(__name__)
RETRY_S = 10.0
PRIVACY_RETRY_S = 3600.0  # after a night adaptation.privacy did not count (nothing to send)


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
        self._next_try = 0.0  # monotonic: no adaptation for a round before this
        self._next_install = 0.0  # monotonic: no install attempt before this

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

    def adapt_now(self, params: AdaptParams, night: str | None = None) -> AdaptResult:
        """One personalization, in a child process; the capture loop picks up the new bundle.
        ``night``: the child marks that night done (see :func:`adapt_in_child`)."""
        with self.lock:
            forgets = self.state.forget_generation
            result, run = adapt_in_child(
                self.config.db, self.config.bundle, params, stop=self.stop_event, night=night
            )
            if self.state.forget_generation != forgets and result.status == "adapted":
                # "forget me" came while the child ran: its head was built from forgotten clips
                self.home.forget_personalized("forget me during adaptation")
                result.status, result.reason, result.trainable = (
                    "rejected",
                    "the clips were forgotten while adapting",
                    {},
                )
            with ClipStore(self.config.db) as store:
                record(store, result.report())
        self.state.update(notice=kiosk_notice(self.config))  # the epsilon spent, when private
        self.children.append(run)
        self.results.append(result)
        reasons = result.gate.get("reasons", []) if result.status == "blocked" else []
        self.state.count_adaptation(result.status, tuple(str(r) for r in reasons))  # type: ignore[attr-defined]
        if result.status == "adapted":
            self.state.update(last_adaptation=datetime.now().isoformat(timespec="seconds"))
        return result

    def params(self, round_settings: Any = None) -> AdaptParams:
        gap_s = self.config.clips.gap_s  # what makes clips one visit (adaptation.privacy)
        return AdaptParams.build(self.config.adaptation, round_settings, gap_s=gap_s)

    def _window_open(self) -> bool:
        a = self.config.adaptation
        return a.enabled and in_window(self.now(), a.window_start, a.window_end) and not self.busy()

    def _tonight(self) -> str:
        return night_of(self.now(), self.config.adaptation.window_start)

    def _run_local(self) -> None:
        while not self.stop_event.wait(5.0):
            # the nightly timer may have run meanwhile: the home's state says
            if self._window_open() and self.home.night_done() != self._tonight():
                # the child marks the night done, with the switch when it adapts: a stop
                # right after the new head shows cannot leave the night undone
                self.adapt_now(self.params(), self._tonight())

    # federation ----------------------------------------------------------------------------
    def _run_federated(self) -> None:
        from edge_node.federation import FederationClient
        from edge_node.federation.outbox import default_outbox

        cfg = self.config
        outbox = default_outbox(cfg.db)
        with FederationClient(
            cfg.node_id, cfg.federation, outbox, installed=self.home.central_version
        ) as fed:
            self.attach(fed)
            while not self.stop_event.wait(0.5):
                central = fed.latest_central()
                installed = self._install_newer(fed, central)
                self._show(fed, central, installed)
                rnd = fed.current_round()
                if self._ready_for(rnd, installed):
                    assert rnd is not None
                    self._personalize_for(fed, rnd)

    def attach(self, fed: FederationClient) -> None:
        """Submit through ``fed``; its status carries this node's epsilon (adaptation.privacy)."""
        self.fed = fed
        fed.privacy = lambda: status_privacy(self.config)  # the fleet page's epsilon per node
        fed.publish_status()

    def _install_newer(self, fed: FederationClient, central: CentralModel | None) -> int:
        """Install a received central newer than the installed one; the version installed now."""
        installed = self.home.central_version()  # installed.json: no bundle is re-verified
        if central is None or central.version <= installed or time.monotonic() < self._next_install:
            return installed
        try:
            self.children.append(
                install_central_in_child(
                    self.config.bundle,
                    central.version,
                    central.round_id,
                    central.classes,
                    central.weights,
                    stop=self.stop_event,
                )
            )
        except ChildError as exc:
            if self.stop_event.is_set():
                raise
            log.warning(
                "central v%d not installed (%s); retrying in %.0f s", central.version, exc, RETRY_S
            )
            self._next_install = time.monotonic() + RETRY_S
            return installed
        fed.publish_status()  # the fleet sees what the node runs now
        return self.home.central_version()

    def _show(self, fed: FederationClient, central: CentralModel | None, installed: int) -> None:
        self.state.update(
            federation=FederationInfo(
                enabled=True,
                connected=fed.link.connected(),
                last_round=central.round_id if central else None,
                central_version=installed,
            )
        )

    def _ready_for(self, rnd: RoundMsg | None, installed: int) -> bool:
        """An open round on the installed central, not yet done, with the node free to adapt."""
        if rnd is None or rnd.state != "open" or rnd.round_id in self.home.rounds_done():
            return False
        if rnd.base_version != installed or time.monotonic() < self._next_try:
            return False  # wait for the round's central to be installed (or for the retry time)
        trigger = self.config.adaptation.trigger
        # outside the window, or a clip is being recorded right now
        return not ((trigger == "window" and not self._window_open()) or self.busy())

    def _personalize_for(self, fed: FederationClient, rnd: RoundMsg) -> None:
        from edge_node.federation import NodeUpdate

        result = self.adapt_now(self.params(rnd.personalization))
        if not may_submit(result):
            log.info(
                "round %d: not submitting (%s)",
                rnd.round_id,
                result.reason,
            )
            # a night the privacy budget refused stays refused until a night leaves the window
            wait = RETRY_S if result.privacy is None else PRIVACY_RETRY_S
            self._next_try = time.monotonic() + wait
            return
        fed.submit(
            NodeUpdate(
                round_id=rnd.round_id,
                base_version=rnd.base_version,
                weights=result.trainable,
                clips_per_class=result.selected_per_class,
                metrics=update_metrics(result),
            )
        )
        log.info(
            "round %d: submitted v personalized on %d clips",
            rnd.round_id,
            sum(result.selected_per_class.values()),
        )
        self.home.mark_round_done(rnd.round_id)
        fed.publish_status()  # the epsilon this round spent, on the fleet page
        if self.config.adaptation.trigger == "window":
            self.home.mark_night_done(self._tonight())


def may_submit(result: AdaptResult) -> bool:
    """Whether a personalization's head may be sent: an adapted one; with adaptation.privacy, one
    the budget counted tonight (the guard's and the gate's verdicts, which read clips outside the
    accounting, decide only what the kiosk displays: docs/privacy.md)."""
    if result.privacy is None:
        return result.status == "adapted"
    finite = all(np.isfinite(a).all() for a in result.trainable.values())
    return bool(result.privacy.get("submit")) and bool(result.trainable) and finite


def update_metrics(result: AdaptResult) -> dict[str, float]:
    """The update's metrics: the fit, and with adaptation.privacy the node's epsilon (this
    round's night, and the window's spent and left, as the accountant composed them)."""
    metrics = {
        "loss_before": float(result.loss_before or 0.0),
        "loss_after": float(result.loss_after or 0.0),
        "clips_total": float(result.clips_total),
    }
    p = result.privacy or {}
    for key in ("epsilon_night", "epsilon_spent", "epsilon_left", "epsilon_window", "delta"):
        if key in p:
            metrics[key] = float(p[key])  # type: ignore[arg-type]
    return metrics
