"""`python -m training simulate` and `make demo`: a whole federated fleet on one machine.

1. ``sim-setup``: synthetic corpus, central g and v (cached), one held-out subject per node.
2. A broker: the one given (``--broker``), else the embedded default (private Mosquitto, or
   in-process amqtt when no mosquitto binary exists).
3. N node processes and the aggregator, each running the real code (``python -m training
   sim-node`` and ``python -m broker_aggregator run``); the nodes record their subject's clips,
   then the aggregator starts, and the nodes personalize when a round opens and submit; R FedAvg
   rounds run.
4. Evaluation on each subject's held-out clips: the central v before, each node's personalized v,
   and the central v after every round. Written as report.json, report.md and PNG charts.

Children run in their own process groups and are stopped by pid on the way out, Ctrl-C included.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.sim.broker import RunningBroker, start_embedded_broker
from training.sim.setup import Plan, setup
from training.sim.tls_fleet import FleetMosquitto, SimFleet, free_ports, make_sim_fleet
from vfer.classes import EMOTIONS_6
from vfer.cli import UserError

log = logging.getLogger(__name__)


@dataclass
class Children:
    """Child processes, each in its own session, all stopped by pid."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], log_path: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(log_path, "ab") as fh:
            self.procs[name] = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.logs[name] = log_path

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, names: list[str] | None = None, timeout: float = 30.0) -> None:
        chosen = [n for n in (names or list(self.procs)) if n in self.procs]
        for n in chosen:
            p = self.procs[n]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in chosen:
            p = self.procs[n]
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def tail(self, name: str, lines: int = 15) -> str:
        p = self.logs.get(name)
        if p is None or not p.exists():
            return ""
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])


def simulate(
    *,
    nodes: int,
    rounds: int,
    broker: str | None,
    out: Path,
    seed: int = 0,
    profile: str = "demo",
    work: Path | None = None,
    timeout_s: float = 900.0,
    live: bool = True,
    ifer_corpus: str = "synthetic-images",
    ifer_root: Path | None = None,
    children: Any = None,
    tls_fleet: bool = False,
    fleet_broker: Callable[[SimFleet, Path], RunningBroker] | None = None,
    secure: bool = False,
) -> dict[str, Any]:
    """Run the fleet and return the report (also written to ``out``). ``children`` runs the
    nodes and the aggregator: processes by default, containers for `make docker-demo`
    (training.sim.docker.DockerChildren).

    ``tls_fleet``: the fleet is provisioned (training.sim.tls_fleet: init-fleet, add-node per
    node) and its broker runs the generated TLS/ACL config, started by ``fleet_broker(fleet,
    logs)``: mosquitto on the host by default, a container for `make docker-demo`.

    ``secure``: the rounds run secure aggregation (SecAgg+, docs/secure-aggregation.md) on the
    provisioned fleet (it implies ``tls_fleet``; at least 5 nodes, one group)."""
    from training.sim.observer import FleetObserver
    from training.sim.report import evaluate, write_report

    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    sim = out / "sim"
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for stale in (sim / "aggregator", sim / "fleet", sim / "claims"):
        if stale.exists():
            import shutil

            shutil.rmtree(stale)
    handle: RunningBroker | None = None
    fleet: SimFleet | None = None
    children = children if children is not None else Children()
    tls_fleet = tls_fleet or secure
    try:
        if tls_fleet:
            if broker is not None:
                raise UserError("--tls-fleet starts its own broker on the fleet's config: "
                                "leave out --broker")  # fmt: skip
            fleet = make_sim_fleet(sim, nodes, EMOTIONS_6, free_ports(3))
            handle = (fleet_broker or _fleet_mosquitto)(fleet, logs)
            broker = handle.url
            broker_kind = handle.kind
        elif broker is None:
            handle = start_embedded_broker(nodes, log_dir=logs)
            broker = handle.url
            broker_kind = handle.kind
        else:
            broker_kind = "external"
        _say(live, f"broker: {broker} ({broker_kind})")
        _say(
            live,
            "setting up: synthetic corpus, central training (cached after the first run), node folders",
        )
        plan = setup(
            sim,
            nodes=nodes,
            rounds=rounds,
            broker=broker,
            seed=seed,
            profile_name=profile,
            work=work,
            ifer_corpus=ifer_corpus,
            ifer_root=ifer_root,
            tls_fleet=fleet is not None,
            secure=secure,
        )
        t_setup = time.monotonic() - t0
        deadline = time.monotonic() + timeout_s
        # a provisioned fleet's observer has its own read-only login (training.sim.tls_fleet)
        watch, login = (fleet.observer_url, fleet.observer_login()) if fleet else (broker, {})
        with FleetObserver(watch, sim / "fleet" / "fleet_public_key.pem", **login) as observer:
            for i in range(nodes):
                children.start(
                    f"node-{i + 1}",
                    [sys.executable, "-m", "training", "sim-node", "--sim-dir", str(sim), "--slot", str(i),
                     "--broker", broker],
                    logs / f"node-{i + 1}.log",
                )  # fmt: skip
            _wait_recorded(sim, children, plan, deadline, live)
            t_recorded = time.monotonic() - t0 - t_setup
            # in a provisioned fleet the aggregator.yaml names its own listener
            children.start(
                "aggregator",
                [sys.executable, "-m", "broker_aggregator", "run", "--config", str(sim / "aggregator.yaml"),
                 *([] if fleet else ["--broker", broker])],
                logs / "aggregator.log",
            )  # fmt: skip
            _wait_rounds(observer, children, plan, deadline, live)
            seen = observer.snapshot()
        children.stop([f"node-{i + 1}" for i in range(nodes)])
        children.stop(["aggregator"])
        t_fleet = time.monotonic() - t0 - t_setup
        _say(live, "evaluating on each subject's held-out clips")
        report = evaluate(sim, plan, seen)
        report["run"] = {
            "broker": broker_kind,
            "broker_url": broker,
            "seconds_setup": round(t_setup, 1),
            "seconds_recording": round(t_recorded, 1),
            "seconds_fleet": round(t_fleet, 1),
            "seconds_total": round(time.monotonic() - t0, 1),
            "seed": seed,
            "profile": profile,
            "secure_aggregation": secure,
        }
        write_report(report, out)
        return report
    finally:
        children.stop()
        if handle is not None:
            handle.stop()


def _fleet_mosquitto(fleet: SimFleet, logs: Path) -> RunningBroker:
    """`simulate --tls-fleet`'s broker: mosquitto on the host, on the fleet's config."""
    return FleetMosquitto(fleet, logs / "mosquitto.log").start()


def _say(live: bool, text: str) -> None:
    if live:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]fedvfer[/bold] {text}")


def _wait_recorded(sim: Path, children: Children, plan: Plan, deadline: float, live: bool) -> None:
    """Until every node has recorded its camera's clips (its health.json says it federates)."""
    from rich.console import Console
    from rich.live import Live

    from training.sim.node import FEDERATING, read_health
    from training.sim.setup import slot_dir

    def recorded() -> list[dict[str, Any]]:
        health = [read_health(slot_dir(sim, i) / "work") for i in range(plan.nodes)]
        return [h for h in health if h.get("phase") == FEDERATING]

    def line(done: list[dict[str, Any]]) -> str:
        clips = sum(int(h.get("recorded_clips", 0)) for h in done)
        return (
            f"nodes recording their cameras: {len(done)}/{plan.nodes} done ({clips} clips), "
            f"{time.monotonic() - start:.0f} s"
        )

    start = time.monotonic()
    console = Console(stderr=True)
    with Live(line([]), console=console, refresh_per_second=2, transient=not live) as screen:
        while len(done := recorded()) < plan.nodes:
            screen.update(line(done))
            dead = children.dead()
            if dead:
                name = sorted(dead)[0]
                raise UserError(
                    f"{name} exited ({dead[name]}) while recording:\n{children.tail(name)}"
                )
            if time.monotonic() > deadline:
                raise UserError("the nodes did not record their clips in time; see the logs")
            time.sleep(0.5)
        screen.update(line(done))
    _end_live(console, live)


def _wait_rounds(
    observer: Any, children: Children, plan: Plan, deadline: float, live: bool
) -> None:
    """Until the central of the last round is published; a live line shows where the fleet is."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console(stderr=True)

    def view() -> Table:
        seen = observer.snapshot()
        t = Table(title=f"fleet: {plan.nodes} nodes, {plan.rounds} rounds", expand=False)
        t.add_column("round")
        t.add_column("state")
        t.add_column("central version")
        t.add_column("submissions")
        for r in range(1, plan.rounds + 1):
            c = seen.centrals.get(r)
            t.add_row(
                str(r), seen.rounds.get(r, "-"), str(c[0]) if c else "-", str(c[2]) if c else "-"
            )
        online = sum(1 for s in seen.status.values() if s == "online")
        t.caption = f"nodes online {online}/{plan.nodes}; {time.monotonic() - start:.0f} s"
        return t

    start = time.monotonic()
    with Live(view(), console=console, refresh_per_second=2, transient=not live) as screen:
        while not observer.wait_round_central(plan.rounds, 1.0):
            screen.update(view())
            dead = children.dead()
            if "aggregator" in dead:
                raise UserError(
                    f"the aggregator exited ({dead['aggregator']}):\n{children.tail('aggregator')}"
                )
            if len(dead) == len(children.procs):
                raise UserError("every node exited before the rounds finished; see the logs")
            if time.monotonic() > deadline:
                raise UserError(
                    f"the rounds did not finish in time; aggregator log:\n{children.tail('aggregator')}"
                )
        screen.update(view())
    _end_live(console, live)


def _end_live(console: Any, live: bool) -> None:
    """Rich ends a kept live display with a newline on a terminal only; a log file gets one too."""
    if live and not console.is_terminal:
        console.line()
