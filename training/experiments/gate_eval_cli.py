"""``python -m training gate-eval REPORT``: how well each gate signal predicts a losing head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from vfer.cli import UserError


@click.command("gate-eval")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--dev-seeds",
    type=click.IntRange(1, 99),
    required=True,
    help="the report's first N seeds choose each gate's threshold; the rest score it",
)
@click.option("--section", default="within", show_default=True, help="within, cross or fedavg")
@click.option("--variant", default=None, help="the rule to judge (default: the reference)")
@click.option("--out", type=click.Path(path_type=Path), help="also write the result as JSON")
def gate_eval_cmd(
    reports: tuple[Path, ...], dev_seeds: int, section: str, variant: str | None, out: Path | None
) -> None:
    """Score the gate's signals of a ``--seeds N --gate-signals`` report on held-out seeds.

    Each REPORT is an experiment's folder or its report.json: the seeds finished so far (its
    seed-N/report.json) are pooled, so a long run can be read while it goes on, and runs that
    continue one another (--seed 5 --seeds 5 --data-seed 0) are read together."""
    from training.experiments.signals import evaluate

    report = reports[0]
    data = _load(reports)
    sec = data.get(section)
    if not sec or "variants" not in sec:
        raise UserError(f"{report}: no pooled {section!r} section (run with --seeds N)")
    name = variant or sec["reference"]
    if name not in sec["variants"]:
        raise UserError(f"{report}: no variant {name!r}; it has {', '.join(sec['variants'])}")
    rows = sec["variants"][name]["subjects"]
    if not any(r.get("signals") for r in rows):
        raise UserError(f"{report}: no gate signals in it (run the experiment with --gate-signals)")
    seeds = sorted({r["seed"] for r in rows})
    if dev_seeds >= len(seeds):
        raise UserError(f"--dev-seeds {dev_seeds} leaves no held-out seed of {seeds}")
    result = {
        "reports": [str(r) for r in reports],
        "section": section,
        "variant": name,
        "dev_seeds": seeds[:dev_seeds],
        "held_out_seeds": seeds[dev_seeds:],
        **evaluate(rows, set(seeds[:dev_seeds])),
    }
    if out is not None:
        out.write_text(json.dumps(result, indent=1, allow_nan=True), encoding="utf-8")
    for line in table(result):
        click.echo(line)


def _load(reports: tuple[Path, ...]) -> dict[str, Any]:
    from training.experiments.seeds import pool

    runs: dict[int, dict[str, Any]] = {}
    for report in reports:
        folder = report.parent if report.is_file() else report
        found = sorted(folder.glob("seed-*/report.json"))
        if not found and report.is_file():
            found = [report]  # a single-seed report
        if not found:
            raise UserError(f"{report}: no report.json and no seed-N/report.json in it")
        for f in found:
            run = json.loads(f.read_text(encoding="utf-8"))
            runs[int(run["meta"]["seed"])] = run
    return pool([runs[k] for k in sorted(runs)])


def table(result: dict[str, Any]) -> list[str]:
    """The markdown table docs/personalization.md shows."""
    f = "{:+.3f}".format
    lines = [
        f"{result['section']} [{result['variant']}], dev seeds {result['dev_seeds']}, held-out "
        f"seeds {result['held_out_seeds']} ({result['runs']['held_out']} heads, "
        f"{result['held_out_losing']} lower micro-F1 by > 0.02, {result['held_out_gaining']} "
        "raise it by > 0.02)",
        "",
        "| signal | AUC dev | AUC held-out | threshold (dev) | blocked | stops losing | "
        "passes gaining | mean gain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["signals"].items():
        g = s["gate_held_out"]
        lines.append(
            f"| {name} | {s['auc_dev']:.2f} | {s['auc_held_out']:.2f} | {g['threshold']:.3g} | "
            f"{g['blocked']} | {_pct(g['stops_losing'])} | {_pct(g['passes_gaining'])} | "
            f"{f(g['mean_gain'])} |"
        )
    lines.append(f"| always install | | | | 0 | 0% | 100% | {f(result['always_install'])} |")
    lines.append("| never install | | | | all | 100% | 0% | +0.000 |")
    return lines


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f}%"
