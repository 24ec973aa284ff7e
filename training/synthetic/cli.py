"""`python -m training synth`: write a synthetic face-clip corpus (manifest.csv, subjects.json, .mp4 clips)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from training.synthetic.generate import SynthConfig, generate
from vfer.classes import EMOTIONS_4, EMOTIONS_6


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    return w, h


@click.command("synth")
@click.option("--subjects", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option("--clips-per-class", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--classes", type=click.Choice(["4", "6"]), default="6", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--size", default="320x240", show_default=True, help="Frame size WIDTHxHEIGHT.")
@click.option("--fps", type=click.FloatRange(5, 60), default=20.0, show_default=True)
@click.option(
    "--dev-subjects", type=click.IntRange(0), default=None, help="Default: 1 from 4 subjects."
)
@click.option("--test-subjects", type=click.IntRange(0), default=None, help="Default: a third.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    help="Processes rendering clips (the output does not depend on it).",
)
def synth_cmd(
    subjects: int,
    clips_per_class: int,
    classes: str,
    seed: int,
    out: Path,
    size: str,
    fps: float,
    dev_subjects: int | None,
    test_subjects: int | None,
    workers: int,
) -> None:
    """Render a synthetic corpus of talking, emoting faces: no licence, no download.

    Each subject has their own look and their own way of expressing each emotion. Writes
    OUT/clips/<subject>/*.mp4, OUT/manifest.csv (path, subject, label, split, gender) and
    OUT/subjects.json (every subject's parameters). Deterministic for a seed.
    """
    width, height = _size(size)
    cfg = SynthConfig(
        subjects=subjects,
        clips_per_class=clips_per_class,
        classes=EMOTIONS_4 if classes == "4" else EMOTIONS_6,
        seed=seed,
        width=width,
        height=height,
        fps=fps,
        dev_subjects=dev_subjects,
        test_subjects=test_subjects,
    )
    started = time.monotonic()
    manifest = generate(cfg, out, workers=workers)
    click.echo(f"wrote {manifest} in {time.monotonic() - started:.1f} s")


@click.command("synth-images")
@click.option("--identities", type=click.IntRange(10, 20_000), default=300, show_default=True)
@click.option("--per-class", type=click.IntRange(1, 100), default=2, show_default=True)
@click.option("--classes", type=click.Choice(["4", "6"]), default="4", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=min(2, os.cpu_count() or 1), show_default=True
)
def synth_images_cmd(
    identities: int, per_class: int, classes: str, seed: int, out: Path, workers: int
) -> None:
    """Render the synthetic image corpus g learns from (the AffectNet stand-in).

    Many identities, nobody the video corpus has; a few photos each per class with varied pose,
    light, intensity and personal style. Writes OUT/images/, OUT/manifest.csv, OUT/subjects.json.
    """
    from training.synthetic.stills import StillsConfig, generate_stills

    cfg = StillsConfig(
        identities=identities,
        per_class=per_class,
        classes=EMOTIONS_4 if classes == "4" else EMOTIONS_6,
        seed=seed,
    )
    started = time.monotonic()
    manifest = generate_stills(cfg, out, workers=workers)
    click.echo(f"wrote {manifest} in {time.monotonic() - started:.1f} s")
