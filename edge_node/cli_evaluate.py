"""`python -m edge_node evaluate`: score a bundle on a labelled manifest of images or clips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click

from edge_node.display import DEFAULT_DISPLAY, DISPLAYS, Display
from vfer.cli import UserError
from vfer.metrics import macro_f1_text

_PATH = click.Path(path_type=Path)
MODELS = ("g", "v", "teacher", "ensemble", "display")


@click.command("evaluate")
@click.option("--bundle", type=_PATH, required=True, help="model bundle folder")
@click.option("--manifest", type=_PATH, required=True, help="CSV with path,subject,label")
@click.option("--face-model", type=_PATH, help="face_detection_short_range.tflite")
@click.option(
    "--display",
    type=click.Choice(DISPLAYS),
    default=DEFAULT_DISPLAY,
    show_default=True,
    help="the kiosk's display choice to score as `display`",
)
@click.option("--margin", type=click.FloatRange(0, 1), default=0.25, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the full JSON")
def evaluate_cmd(
    bundle: Path,
    manifest: Path,
    face_model: Path | None,
    display: str,
    margin: float,
    as_json: bool,
) -> None:
    """Per-class and macro/micro scores of g, v, the teacher, the ensemble and the display."""
    from edge_node.evaluate import evaluate
    from edge_node.service import resolve_face_model
    from vfer.bundle import BundleError

    if not bundle.is_dir():
        raise UserError(f"{bundle}: no such bundle folder")
    if not manifest.is_file():
        raise UserError(f"{manifest}: no such manifest")
    try:
        fm = resolve_face_model(face_model, bundle)
        report = evaluate(bundle, manifest, fm, display=cast(Display, display), margin=margin)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    _print(report)


def _print(report: dict[str, Any]) -> None:
    rows = report["meta"]["rows"]
    click.echo(
        f"{rows['used']} of {rows['total']} rows scored; label not among the classes "
        f"{rows['label_not_in_classes']}, no face {rows['no_face']}, failed {rows['failed']}"
    )
    for key in MODELS:
        if key in report:
            s = report[key]
            recall = ", ".join(f"{c} {r['recall']:.2f}" for c, r in s["per_class"].items())
            extra = f" ({s['choice']})" if key == "display" else ""
            click.echo(
                f"{key}{extra}: accuracy {s['accuracy']:.3f}, {macro_f1_text(s)}; recall {recall}"
            )
