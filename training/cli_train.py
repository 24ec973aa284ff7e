"""Commands `preprocess`, `train` and `experiment` of `python -m training`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from vfer.classes import parse_classes
from vfer.cli import UserError, setup_logging
from vfer.metrics import macro_f1_text

CORPUS_CHOICES = ("synthetic", "crema-d", "msp-improv", "affectnet", "manifest")
#: g's own corpus (the paper: AffectNet); "same": v's corpus
IFER_CHOICES = ("synthetic-images", "affectnet", "manifest", "same")
#: the paper's default class set per corpus (--classes overrides)
DEFAULT_CLASSES = {
    "crema-d": "6",
    "affectnet": "6",
    "msp-improv": "4",
    "synthetic": "4",
    "manifest": "4",
}


def _ifer_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--ifer-root", type=_path, help="g's corpus folder (or manifest.csv)")(f)
    f = click.option(
        "--ifer-corpus",
        type=click.Choice(IFER_CHOICES),
        help="g's own corpus, as the paper (AffectNet); default: synthetic-images with "
        "--corpus synthetic, else the same corpus as v",
    )(f)
    return f


_path = click.Path(path_type=Path)


def _classes(corpus: str, value: str | None) -> tuple[str, ...]:
    try:
        return parse_classes(value or DEFAULT_CLASSES[corpus])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--classes") from None


def _models_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--face-model", type=_path, help="MediaPipe face_detection_short_range.tflite"
    )(f)
    f = click.option(
        "--backbone", type=_path, help="f as .tflite (default: cut from the shared model)"
    )(f)
    return f


def _load(corpus: str, root: Path | None, classes: tuple[str, ...], seed: int) -> object:
    from training.corpora import load_corpus

    if root is None:
        raise UserError(f"--corpus {corpus} needs --root PATH")
    if not root.exists():
        raise UserError(f"{root}: no such corpus folder")
    return load_corpus(corpus, root, classes, seed=seed)


@click.command("preprocess")
@click.option("--corpus", type=click.Choice(CORPUS_CHOICES), required=True)
@click.option("--root", type=_path, required=True, help="corpus folder (or manifest.csv)")
@click.option("--cache", type=_path, required=True, help="embedding cache folder")
@click.option("--classes", default=None, help="4, 6 or a comma list (default: the corpus's)")
@click.option("--seed", type=int, default=0, show_default=True)
@_models_options
def preprocess_cmd(
    corpus: str,
    root: Path,
    cache: Path,
    classes: str | None,
    seed: int,
    backbone: Path | None,
    face_model: Path | None,
) -> None:
    """Face-crop every frame and run f once per frame into the cache (resumable)."""
    from training.experiments.setup import resolve_models
    from training.preprocess import EmbeddingCache, ensure, real_pipeline

    loaded = _load(corpus, root, _classes(corpus, classes), seed)
    bb, fm = resolve_models(backbone, face_model, cache)
    store = EmbeddingCache.for_models(cache, bb, fm)
    stats = ensure(store, [r.path for r in loaded], real_pipeline(bb, fm))  # type: ignore[attr-defined]
    click.echo(json.dumps(stats.summary()))
    if stats.failed:
        raise UserError(
            f"{len(stats.failed)} sources could not be decoded, first: {stats.failed[0]}"
        )


@click.command("train")
@click.option("--corpus", type=click.Choice(CORPUS_CHOICES), required=True)
@click.option("--root", type=_path, required=True, help="corpus folder (or manifest.csv)")
@click.option("--cache", type=_path, required=True, help="embedding cache folder")
@click.option("--out", type=_path, required=True, help="bundle folder to write")
@click.option("--classes", default=None, help="4, 6 or a comma list (default: the corpus's)")
@click.option("--quick", is_flag=True, help="a short profile (minutes on 2 cores)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path, dir_okay=False),
    help="real-face expression model to carry in the bundle as the teacher, recognised by "
    "its shapes (README: 'The teacher')",
)
@_ifer_options
@_models_options
def train_cmd(
    corpus: str,
    root: Path,
    cache: Path,
    out: Path,
    classes: str | None,
    quick: bool,
    seed: int,
    teacher: Path | None,
    ifer_corpus: str | None,
    ifer_root: Path | None,
    backbone: Path | None,
    face_model: Path | None,
) -> None:
    """Train g (60 epochs) and v (20) on the train split; write a bundle (head version central-r0).

    With --ifer-corpus g learns from that corpus (the paper: AffectNet) and v from --corpus.
    """
    from training.experiments.setup import resolve_models
    from training.train import FULL, QUICK, train_central
    from vfer.bundle import BundleError, check_teacher

    setup_logging("INFO")
    names = _classes(corpus, classes)
    if teacher is not None:
        try:
            check_teacher(teacher, names)
        except BundleError as exc:
            raise UserError(str(exc)) from None
    loaded = _load(corpus, root, names, seed)
    g_loaded = None
    if ifer_corpus not in (None, "same"):
        if ifer_root is None:
            raise UserError(f"--ifer-corpus {ifer_corpus} needs --ifer-root PATH")
        g_loaded = _load(str(ifer_corpus), ifer_root, names, seed)
    bb, fm = resolve_models(backbone, face_model, cache)
    t0 = time.perf_counter()
    bundle = train_central(
        loaded,  # type: ignore[arg-type]
        cache,
        out,
        QUICK if quick else FULL,
        backbone=bb,
        face_model=fm,
        seed=seed,
        teacher=teacher,
        ifer_corpus=g_loaded,  # type: ignore[arg-type]
    )
    click.echo(
        f"wrote {bundle.path} ({bundle.manifest.head_version}, K={bundle.num_classes}) "
        f"in {time.perf_counter() - t0:.0f} s; loss log {out.name}.train_log.jsonl beside it"
    )


@click.command("experiment")
@click.argument(
    "name",
    type=click.Choice(["table1", "within", "cross", "fedavg", "all", "teacher-sweep"]),
)
@click.option("--corpus", type=click.Choice(CORPUS_CHOICES), required=True)
@click.option("--root", type=_path, help="corpus folder; synthetic without it is generated")
@click.option("--out", type=_path, required=True, help="report folder")
@click.option("--quick", is_flag=True, help="a short profile (minutes on 2 cores)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--classes", type=click.Choice(["4", "6"]), default=None, help="default: the corpus's"
)
@click.option(
    "--cache", type=_path, help="work folder for corpora, embeddings, models (default OUT/work)"
)
@click.option("--target", type=click.Choice(CORPUS_CHOICES), help="cross: the corpus B")
@click.option("--target-root", type=_path, help="cross: corpus B's folder")
@click.option("--rounds", type=click.IntRange(1, 100), help="fedavg rounds (default 2)")
@click.option(
    "--seeds",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="run with seeds SEED..SEED+N-1 on the same corpora and pool the per-subject change",
)
@click.option(
    "--variants",
    default="paper",
    show_default=True,
    help="personalization rules to compare on the same seeds, comma list of "
    "paper, balanced, l2sp (the first is the reference)",
)
@click.option(
    "--privacy",
    default=None,
    help="also run each rule with DP-SGD at these epsilons per night, a comma list such as "
    "1,3,8,off (off: the rule without DP); docs/privacy.md",
)
@click.option(
    "--data-seed",
    type=int,
    default=None,
    help="the seed the corpora are rendered with (default: --seed), so that --seed 5 --seeds 5 "
    "--data-seed 0 continues a --seeds 5 run on the same people",
)
@click.option(
    "--gate-signals",
    is_flag=True,
    help="measure the gate's candidate signals on every head (slower; docs/personalization.md)",
)
@_ifer_options
@_models_options
def experiment_cmd(
    name: str,
    corpus: str,
    root: Path | None,
    out: Path,
    quick: bool,
    seed: int,
    classes: str | None,
    cache: Path | None,
    target: str | None,
    target_root: Path | None,
    rounds: int | None,
    seeds: int,
    variants: str,
    privacy: str | None,
    data_seed: int | None,
    gate_signals: bool,
    ifer_corpus: str | None,
    ifer_root: Path | None,
    backbone: Path | None,
    face_model: Path | None,
) -> None:
    """Run a paper experiment; writes OUT/report.json, OUT/report.md and OUT/*.png."""
    from training.experiments import VARIANTS, ExperimentOptions, run_experiment

    rules = tuple(v.strip() for v in variants.split(",") if v.strip())
    bad = [v for v in rules if v not in VARIANTS]
    if bad or not rules or len(set(rules)) != len(rules):
        raise click.BadParameter(
            f"{variants!r}: a comma list of distinct rules from {', '.join(VARIANTS)}",
            param_hint="--variants",
        )
    if privacy is not None:
        from training.experiments.privacy import parse_levels, variant_names

        try:
            rules = variant_names(rules, parse_levels(privacy))
        except UserError as exc:
            raise click.BadParameter(str(exc), param_hint="--privacy") from None

    setup_logging("INFO")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # finetune_v's retracing notices
    if root is None and corpus != "synthetic":
        raise UserError(f"--corpus {corpus} needs --root PATH (only synthetic is generated)")
    if ifer_corpus in ("affectnet", "manifest") and ifer_root is None:
        raise UserError(f"--ifer-corpus {ifer_corpus} needs --ifer-root PATH")
    for given in (root, target_root, ifer_root):
        if given is not None and not given.exists():
            raise UserError(f"{given}: no such corpus folder")
    if target_root is not None and target is None:
        target = corpus
    options = ExperimentOptions(
        corpus=corpus,
        out=out,
        root=root,
        quick=quick,
        seed=seed,
        classes=_classes(corpus, classes),
        cache=cache,
        backbone=backbone,
        face_model=face_model,
        target=target,
        target_root=target_root,
        rounds=rounds,
        ifer_corpus=ifer_corpus,
        ifer_root=ifer_root,
        seeds=seeds,
        variants=rules,
        gate_signals=gate_signals,
        data_seed=data_seed,
    )
    report = run_experiment(name, options)
    click.echo(
        f"wrote {out / 'report.json'} and {out / 'report.md'} in {report['meta']['seconds']:.0f} s"
    )
    for line in summary_lines(report):
        click.echo(line)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The console's summary of a report: one seed's or several seeds' pooled."""
    from training.experiments.stats import GainSummary

    lines = []
    if "seeds" in report["meta"]:
        for key in ("within", "cross", "fedavg"):
            sec = report.get(key)
            for name, v in (sec or {}).get("variants", {}).items():
                ci = v.get("micro_f1_change_ci")
                if ci:
                    lines.append(
                        f"{key} [{name}], {len(v['seeds'])} seeds: "
                        + GainSummary(**ci).line("micro-F1 change per subject")
                    )
    for p in (report.get("teacher-sweep") or {}).get("points", []):
        ci = p.get("micro_f1_change_ci")
        if ci and p.get("teacher_accuracy") is not None:
            lines.append(
                f"teacher-sweep: g on {p['identities']} identities, teacher accuracy "
                f"{p['teacher_accuracy']:.3f}: " + GainSummary(**ci).line("micro-F1 change")
            )
    if "seeds" in report["meta"]:
        return lines
    for key in ("table1", "within", "cross", "fedavg"):
        sec = report.get(key)
        if not sec or "skipped" in sec:
            continue
        if key == "table1":
            lines.append(
                f"table1: IFER {macro_f1_text(sec)} (chance {sec['chance_macro_f1']:.3f}), "
                f"linear probe {sec['probe']['macro']['f1']:.3f}; accuracy g "
                f"{sec['accuracy']:.3f}, probe {sec['probe']['accuracy']:.3f}"
            )
        else:
            lines.append(
                f"{key}: micro-F1 {sec['before']['micro']['f1']:.3f} -> {sec['after']['micro']['f1']:.3f}, "
                f"mean per-subject change {sec['mean_subject_micro_f1_change']:+.4f} ({sec['sign']})"
            )
            t = sec.get("teacher_on_subjects") or {}
            if t.get("accuracy") is not None:
                lines.append(
                    f"{key}: teacher g on the personalized people: accuracy {t['accuracy']:.3f}, "
                    f"{macro_f1_text(t)} ({t['clips']} clips)"
                )
    return lines


@click.command("london-manifest")
@click.option(
    "--faces",
    type=_path,
    default=Path("../shared/data/london_face_set/faces.csv"),
    show_default=True,
    help="the London set's faces.csv",
)
@click.option("--out", type=_path, required=True, help="manifest CSV to write (london.csv)")
def london_manifest_cmd(faces: Path, out: Path) -> None:
    """Write a manifest (path,subject,label,gender) of the London set: neutral and happiness."""
    from training.corpora.london import write_london_manifest

    try:
        n = write_london_manifest(faces, out)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"wrote {out}: {n} photos")


@click.command("distill")
@click.option(
    "--teacher",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="real-face expression model, recognised by its shapes (README: 'The teacher')",
)
@click.option("--videos", type=_path, required=True, help="folder of unlabelled videos/photos")
@click.option("--cache", type=_path, required=True, help="embedding cache folder")
@click.option("--out", type=_path, required=True, help="bundle folder to write")
@click.option("--classes", default="4", show_default=True, help="4, 6 or a comma list")
@click.option("--p-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--subject-from",
    type=click.Choice(["source", "folder"]),
    default="source",
    show_default=True,
    help="one subject per source, or per parent folder",
)
@click.option("--quick", is_flag=True, help="a short profile (minutes on 2 cores)")
@click.option("--seed", type=int, default=0, show_default=True)
@_models_options
def distill_cmd(
    teacher: Path,
    videos: Path,
    cache: Path,
    out: Path,
    classes: str,
    p_threshold: float,
    subject_from: str,
    quick: bool,
    seed: int,
    backbone: Path | None,
    face_model: Path | None,
) -> None:
    """Train g and v from unlabelled faces with the teacher's clip labels (Eq. 1)."""
    from training.distill import label_sources
    from training.experiments.setup import resolve_models
    from training.train import FULL, QUICK, train_central
    from vfer.bundle import BundleError, check_teacher

    setup_logging("INFO")
    names = _classes("manifest", classes)
    try:
        check_teacher(teacher, names)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    bb, fm = resolve_models(backbone, face_model, cache)
    try:
        labelled = label_sources(
            videos,
            teacher,
            fm,
            names,
            p_threshold=p_threshold,
            subject_from=subject_from,  # type: ignore[arg-type]
        )
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    corpus = labelled.corpus
    click.echo(f"teacher labels: {json.dumps(corpus.counts)}")
    if len({r.subject for r in corpus.records}) < 2 or len({r.label for r in corpus.records}) < 2:
        raise UserError(
            "the teacher labelled too little to train on (need 2 subjects and 2 classes): "
            f"{json.dumps(corpus.counts)}"
        )
    bundle = train_central(
        corpus, cache, out, QUICK if quick else FULL, backbone=bb, face_model=fm, seed=seed,
        teacher=teacher,
    )  # fmt: skip
    click.echo(f"wrote {bundle.path} (K={bundle.num_classes}) from {len(corpus.records)} sources")


COMMANDS = (preprocess_cmd, train_cmd, experiment_cmd, london_manifest_cmd, distill_cmd)


def register(group: click.Group) -> None:
    """Add `preprocess`, `train` and `experiment` to the training CLI."""
    for command in COMMANDS:
        group.add_command(command)
