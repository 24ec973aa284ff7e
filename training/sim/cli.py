"""Commands: simulate, sim-setup, sim-node (the fleet simulation) and demo (`make demo`)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import click

from training.sim.setup import PROFILES
from vfer.cli import setup_logging

_DIR = click.Path(path_type=Path, file_okay=False)
COMPOSE_BROKER = "mqtt://mosquitto:1883"  # the broker's name inside deploy/docker's compose network


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _arrow(before: float | None, after: float | None) -> str:
    return f"{_num(before)} → {_num(after)}"


def print_report(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from training.sim.report import gate_line, gate_text

    console = Console()
    t = Table(
        title="nodes: F1 on each subject's held-out clips, before → after personalization",
        caption="clips: recorded/selected for the fine-tune/held out and scored",
    )
    t.add_column("node", no_wrap=True)
    t.add_column("clips", no_wrap=True, justify="right")
    t.add_column("micro-F1", no_wrap=True)
    t.add_column("macro-F1 (all classes)", no_wrap=True)
    t.add_column("macro-F1 (present)", no_wrap=True)
    t.add_column("safety gate (the node's verdict)", min_width=22)
    for n in report["nodes"]:
        t.add_row(
            n["node"],
            f"{n['recorded_clips']}/{n['selected_clips']}/{n['eval_clips']}",
            f"{n['micro_f1_before']:.3f} → {n['micro_f1_after']:.3f}",
            f"{n['macro_f1_before']:.3f} → {n['macro_f1_after']:.3f}",
            _arrow(n.get("macro_f1_present_before"), n.get("macro_f1_present_after")),
            gate_text(n.get("gate")),
        )
    console.print(t)
    c = Table(title="central v per round (all held-out clips)")
    for col in ("stage", "version", "submissions", "micro-F1", "macro-F1"):
        c.add_column(col)
    for row in report["central"]:
        c.add_row(
            row["stage"],
            str(row["version"]),
            str(row["submissions"]),
            f"{row['micro_f1']:.3f}",
            f"{row['macro_f1']:.3f}",
        )
    console.print(c)
    summary = report["summary"]
    teacher = summary.get("teacher_on_nodes") or {}
    if teacher.get("accuracy") is not None:
        console.print(
            f"teacher g on the nodes' adaptation clips: accuracy {teacher['accuracy']:.3f}, "
            f"macro-F1 {teacher['macro_f1']:.3f} over all classes, "
            f"{_num(teacher.get('macro_f1_present'))} over those present ({teacher['clips']} clips)"
        )
    fleet = summary.get("fleet")
    if fleet:
        f = Table(
            title=f"fleet: each node's change from personalization ({fleet['personalized']} of "
            f"{fleet['nodes']} nodes personalized)"
        )
        for col in ("F1", "mean change", "95% CI (bootstrap over nodes)", "gained", "lost", "same"):
            f.add_column(col)
        for name in ("micro", "macro"):
            g = fleet[f"{name}_f1_change"]
            f.add_row(name, f"{g['mean']:+.3f}", f"{g['ci_low']:+.3f} to {g['ci_high']:+.3f}",
                      str(g["gained"]), str(g["lost"]), str(g["same"]))  # fmt: skip
        console.print(f)
    if summary.get("gate", {}).get("judged"):
        console.print(f"safety gate (report mode, never applied): {gate_line(summary['gate'])}")
    console.print(
        f"Done in {report['run']['seconds_total']:.0f} s. Look next at {out / 'report.md'}, "
        f"{out / 'report.json'}, the charts {', '.join(str(out / f) for f in report['figures'])}, "
        f"the logs in {out / 'logs'}, and docs/architecture.md."
    )


def _ifer(f: Any) -> Any:
    f = click.option(
        "--ifer-root", type=click.Path(path_type=Path), help="g's corpus folder or manifest"
    )(f)
    f = click.option(
        "--ifer-corpus",
        type=click.Choice(["synthetic-images", "affectnet", "manifest", "same"]),
        default="synthetic-images",
        show_default=True,
        help="g's own corpus (the paper: AffectNet); same: the video corpus",
    )(f)
    return f


@click.command("simulate")
@click.option("--nodes", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--rounds",
    type=click.IntRange(1, 20),
    default=2,
    show_default=True,
    help="FedAvg rounds (paper: 2)",
)
@click.option(
    "--broker", help="mqtt://host:port of an existing broker (default: start an embedded one)"
)
@click.option("--out", type=_DIR, default=Path("demo-output"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="demo", show_default=True)
@click.option(
    "--cache",
    type=_DIR,
    default=Path(".cache/sim"),
    show_default=True,
    help="corpus, embeddings, central model",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=900.0,
    show_default=True,
    help="seconds for all rounds",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option(
    "--tls-fleet",
    is_flag=True,
    help="provision the fleet (init-fleet, add-node) and run mosquitto on its TLS/ACL config",
)
@_ifer
def simulate_cmd(
    nodes: int, rounds: int, broker: str | None, out: Path, seed: int, profile: str, cache: Path,
    timeout_s: float, as_json: bool, tls_fleet: bool, ifer_corpus: str, ifer_root: Path | None,
) -> None:  # fmt: skip
    """Run N simulated nodes and the aggregator through R FedAvg rounds, then report."""
    from training.sim.simulate import simulate

    setup_logging("WARNING")
    report = simulate(
        nodes=nodes, rounds=rounds, broker=broker, out=out, seed=seed, profile=profile,
        work=cache / f"{profile}", timeout_s=timeout_s, live=not as_json,
        ifer_corpus=ifer_corpus, ifer_root=ifer_root, tls_fleet=tls_fleet,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(report))
    else:
        print_report(report, out)


@click.command("demo")
@click.option("--nodes", type=click.IntRange(1, 16), help="default: 4, or 5 with --secure")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=_DIR, default=Path("demo-output"), show_default=True)
@click.option(
    "--secure",
    is_flag=True,
    help="secure aggregation (SecAgg+) on the provisioned TLS/ACL fleet: the aggregator sees "
    "only the group's sum (`make demo SECURE=1`)",
)
@_ifer
def demo_cmd(
    nodes: int | None, seed: int, out: Path, secure: bool, ifer_corpus: str, ifer_root: Path | None
) -> None:
    """The newcomer's first run (`make demo`): 4 nodes, 2 FedAvg rounds, embedded broker."""
    from training.sim.setup import SECURE_GROUP
    from training.sim.simulate import simulate

    nodes = nodes or (SECURE_GROUP if secure else 4)
    if secure and nodes < SECURE_GROUP:
        raise click.UsageError(
            f"--secure needs --nodes {SECURE_GROUP} or more (the smallest group)"
        )
    setup_logging("WARNING")
    report = simulate(
        secure=secure,
        nodes=nodes,
        rounds=2,
        broker=None,
        out=out,
        seed=seed,
        work=Path(".cache/sim/demo"),
        ifer_corpus=ifer_corpus,
        ifer_root=ifer_root,
    )
    print_report(report, out)


@click.command("docker-build")
@click.option("--base", default="python:3.11-slim-bookworm", show_default=True, help="base image")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("demo-output/logs/docker-build.log"),
    show_default=True,
)
def docker_build_cmd(base: str, log_path: Path) -> None:
    """`make docker-images`: the broker, aggregator and node images from deploy/docker/ on BASE."""
    from training.sim.docker import IMAGES, build_images

    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        build_images(base, log_path)
    except subprocess.CalledProcessError as e:
        raise click.ClickException(
            f"docker build failed (exit {e.returncode}); see {log_path}"
        ) from e
    click.echo(f"images on {base}: {', '.join(IMAGES.values())} (log {log_path})")


@click.command("docker-demo")
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 10), default=2, show_default=True)
@click.option("--out", type=_DIR, default=Path("demo-output"), show_default=True)
@click.option("--base", default="python:3.11-slim-bookworm", show_default=True, help="base image")
@click.option("--build/--no-build", default=True, show_default=True, help="build the images first")
def docker_demo_cmd(nodes: int, rounds: int, out: Path, base: str, build: bool) -> None:
    """`make docker-demo`: the demo's fleet in containers (broker on the fleet's generated
    TLS/ACL config, aggregator, a node each)."""
    from training.sim.docker import run_docker_demo

    setup_logging("WARNING")
    print_report(run_docker_demo(nodes, rounds, out, base, build), out)


@click.command("docker-faults")
@click.option("--out", type=_DIR, default=Path("demo-output/faults"), show_default=True)
@click.option("--case", "cases", multiple=True, type=click.Choice(["restart", "kill"]))
def docker_faults_cmd(out: Path, cases: tuple[str, ...]) -> None:
    """The fleet's fault cases in containers: aggregator restarted, a node killed, mid-round."""
    from training.sim.docker_faults import run_case

    setup_logging("WARNING")
    results = [run_case(out.resolve() / c, c) for c in cases or ("restart", "kill")]
    (out / "faults.json").write_text(json.dumps(results, indent=2))
    for r in results:
        click.echo(f"{r['case']}: {'passed' if r['ok'] else 'FAILED'} {json.dumps(r)}")
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


@click.command("sim-setup")
@click.option("--sim-dir", required=True, type=_DIR)
@click.option("--nodes", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 20), default=2, show_default=True)
@click.option("--broker", help=f"broker URL the nodes use  [default: {COMPOSE_BROKER}]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="demo", show_default=True)
@click.option(
    "--tls-fleet",
    is_flag=True,
    help="provision SIM/fleet (init-fleet, add-node) for a broker on this machine's loopback, "
    "run by SIM/fleet/broker/sim-mosquitto.conf",
)
@_ifer
def sim_setup_cmd(
    sim_dir: Path,
    nodes: int,
    rounds: int,
    broker: str | None,
    seed: int,
    profile: str,
    tls_fleet: bool,
    ifer_corpus: str,
    ifer_root: Path | None,
) -> None:
    """Prepare a simulation folder: corpus, central model, fleet keys, node slots, aggregator.yaml."""
    from training.sim.setup import setup
    from training.sim.tls_fleet import free_ports, make_sim_fleet
    from vfer.classes import EMOTIONS_6

    if tls_fleet and broker is not None:
        raise click.UsageError("--tls-fleet picks its own broker (localhost, free ports): "
                               "leave out --broker")  # fmt: skip
    setup_logging("INFO")
    fleet = make_sim_fleet(sim_dir, nodes, EMOTIONS_6, free_ports(3)) if tls_fleet else None
    plan = setup(
        sim_dir,
        nodes=nodes,
        rounds=rounds,
        broker=fleet.node_url if fleet else broker or COMPOSE_BROKER,
        seed=seed,
        profile_name=profile,
        ifer_corpus=ifer_corpus,
        ifer_root=ifer_root,
        tls_fleet=fleet is not None,
    )
    done = plan.to_json()
    if fleet is not None:
        done["broker_conf"] = str(fleet.broker_conf)
    click.echo(json.dumps(done))


@click.command("sim-node")
@click.option("--sim-dir", required=True, type=_DIR)
@click.option(
    "--slot", default="auto", show_default=True, help="slot index, or auto: the first free one"
)
@click.option("--work", type=_DIR, help="this node's own folder (default: the slot's work/)")
@click.option("--broker", help="broker URL (default: the one sim-setup was given)")
def sim_node_cmd(sim_dir: Path, slot: str, work: Path | None, broker: str | None) -> None:
    """One simulated node: the real edge node on a slot's clips, in federation, until SIGTERM."""
    from edge_node.service import stop_on_signals
    from training.sim.node import run_sim_node

    setup_logging("INFO")
    stop = threading.Event()
    with stop_on_signals(stop):
        run_sim_node(sim_dir, slot, work, broker, stop)
