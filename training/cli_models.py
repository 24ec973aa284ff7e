"""Foundation commands: model-summary, backbone, export-bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from vfer.classes import parse_classes
from vfer.cli import UserError


def _classes(value: str) -> tuple[str, ...]:
    try:
        return parse_classes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def model_summary(num_classes: int) -> dict[str, dict[str, object]]:
    """Parameter counts of f, g and v, counted on the real Keras models."""
    import keras

    from vfer.heads import build_ifer, build_vfer, param_counts

    f = keras.applications.MobileNetV2(
        weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3)
    )
    f_counts = param_counts(f)
    return {
        "f": {
            "architecture": "MobileNetV2 1.0/224, ImageNet, frozen, global-average pool",
            "input": [224, 224, 3],
            "output_dim": int(f.output_shape[-1]),
            "parameters": f_counts["total"],
            "trainable": 0,
            "non_trainable": f_counts["total"],
        },
        "g": {"num_classes": num_classes, **param_counts(build_ifer(num_classes))},
        "v": {"num_classes": num_classes, **param_counts(build_vfer(num_classes))},
    }


@click.command("model-summary")
@click.option(
    "--classes", "classes", default="6", show_default=True, help="6, 4 or a comma list of names"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def model_summary_cmd(classes: str, as_json: bool) -> None:
    """Parameter counts of f, g and v (the paper: g 662,534; v 208,582 + 2,944 with K=6)."""
    summary = model_summary(len(_classes(classes)))
    if as_json:
        click.echo(json.dumps(summary))
        return
    for name, row in summary.items():
        counts = ", ".join(
            f"{k} {v:,}" for k, v in row.items() if isinstance(v, int) and k != "num_classes"
        )
        click.echo(f"{name}: {counts}")


@click.command("backbone")
@click.option(
    "--from-tflite",
    "src",
    type=click.Path(path_type=Path),
    help="ImageNet MobileNetV2 .tflite to cut",
)
@click.option(
    "--tensor", type=int, default=None, help="pool tensor index (default: found automatically)"
)
@click.option(
    "--from-keras-imagenet",
    "keras_path",
    is_flag=True,
    help="convert Keras MobileNetV2 (downloads once)",
)
@click.option(
    "--precision", type=click.Choice(["int8", "float32"]), default="int8", show_default=True
)
@click.option(
    "--representative",
    type=click.Path(path_type=Path, file_okay=False),
    help="face images for int8",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="output folder"
)
def backbone_cmd(
    src: Path | None,
    tensor: int | None,
    keras_path: bool,
    precision: str,
    representative: Path | None,
    out: Path,
) -> None:
    """Write OUT/backbone.tflite: uint8 224x224 RGB in, the 1280-d pooled embedding out."""
    from training import backbone

    if bool(src) == keras_path:
        raise UserError("give exactly one of --from-tflite PATH or --from-keras-imagenet")
    if src:
        path = backbone.from_tflite(src, out, tensor)
    else:
        reps = backbone.representative_crops(representative) if representative else None
        path = backbone.from_keras_imagenet(out, precision, reps)
    click.echo(f"wrote {path}")


_file = click.Path(path_type=Path, dir_okay=False)


@click.command("export-bundle")
@click.option("--classes", "classes", help="6, 4 or a comma list, in output order")
@click.option("--backbone", "backbone_path", type=_file, help="f as .tflite")
@click.option(
    "--from-bundle",
    "source",
    type=click.Path(path_type=Path, file_okay=False),
    help="take classes, f, g and v from this (trained) bundle instead of untrained heads",
)
@click.option(
    "--teacher",
    type=_file,
    help="real-face expression model to carry as the teacher, recognised by its shapes "
    "(README: 'The teacher')",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="initializer seed")
@click.option("--force", is_flag=True, help="replace an existing bundle at OUT")
def export_bundle_cmd(
    classes: str | None,
    backbone_path: Path | None,
    source: Path | None,
    teacher: Path | None,
    out: Path,
    seed: int,
    force: bool,
) -> None:
    """Build a bundle: untrained heads, or a trained bundle's heads (--from-bundle), plus a teacher."""
    from vfer.bundle import Bundle, BundleError, write_bundle

    if source is not None:
        if classes or backbone_path:
            raise UserError("--from-bundle takes classes and backbone from that bundle")
        try:
            base = Bundle.load(source)
            bundle = write_bundle(
                out,
                classes=base.classes,
                backbone=base.file("backbone.tflite"),
                ifer_weights=base.ifer_weights(),
                vfer_weights=base.vfer_weights(),
                head_version=base.manifest.head_version,
                federation_round=base.manifest.federation_round,
                parent=base.manifest.parent,
                notes=dict(base.manifest.notes),
                ifer_tflite=base.file("ifer_head.tflite"),
                teacher=teacher,
                overwrite=force,
            )
        except BundleError as exc:
            raise UserError(str(exc)) from None
    else:
        bundle = _untrained(classes, backbone_path, teacher, out, seed, force)
    info = bundle.manifest.teacher
    extra = f"; teacher {info.kind} {bundle.manifest.files[info.file][:12]}" if info else ""
    click.echo(
        f"wrote {bundle.path} (K={bundle.num_classes}: {', '.join(bundle.classes)}; "
        f"id {bundle.bundle_id[:12]}{extra})"
    )


def _untrained(
    classes: str | None,
    backbone_path: Path | None,
    teacher: Path | None,
    out: Path,
    seed: int,
    force: bool,
) -> Any:
    import keras

    from vfer.backbone import Backbone
    from vfer.bundle import BundleError, write_bundle
    from vfer.heads import build_ifer, build_vfer, get_weights

    if not classes or backbone_path is None:
        raise UserError("give --classes and --backbone (or --from-bundle BUNDLE)")
    names = _classes(classes)
    if not backbone_path.is_file():
        raise UserError(
            f"{backbone_path}: no such backbone file (make one with `python -m training backbone`)"
        )
    Backbone.from_path(backbone_path).close()
    keras.utils.set_random_seed(seed)
    try:
        return write_bundle(
            out,
            classes=names,
            backbone=backbone_path,
            ifer_weights=get_weights(build_ifer(len(names))),
            vfer_weights=get_weights(build_vfer(len(names))),
            head_version="untrained",
            notes={"seed": str(seed)},
            teacher=teacher,
            overwrite=force,
        )
    except BundleError as exc:
        raise UserError(str(exc)) from None
