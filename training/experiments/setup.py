"""What every experiment needs: options, profiles, the corpora (generated when synthetic), the cache,
the central model, and predictions of g and v from cached embeddings.

The synthetic pair used by ``cross``: corpus **A** is rendered with ``--seed`` at 320x240;
corpus **B** with seed ``seed + 1000`` (other people, rooms, expression styles) by a different
"camera": 240x180 at a lower frame rate (12 fps instead of 20; quick: 8 instead of 10). Both come from the same generator, so B is a milder shift than
CREMA-D -> MSP-IMPROV, but a real one: no person, room or frame size of B is seen in training.

Two corpora, as the paper: g (the teacher) learns from its own image corpus and v from the video
corpus. With ``--corpus synthetic`` g's corpus defaults to ``synthetic-images``
(:mod:`training.synthetic.stills`: 300 identities nobody else has); ``--ifer-corpus affectnet
--ifer-root PATH`` (or ``manifest``) takes a real one, ``--ifer-corpus same`` the video corpus.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.corpora import Corpus, load_corpus
from training.preprocess import EmbeddingCache, ensure, real_pipeline
from training.synthetic.stills import StillsConfig
from training.train import FULL, QUICK, TrainProfile, train_central
from vfer.bundle import Bundle
from vfer.classes import EMOTIONS_4
from vfer.cli import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthSizes:
    subjects: int
    clips_per_class: int
    test_subjects: int
    dev_subjects: int
    min_frames: int
    max_frames: int
    fps: float
    width: int = 320
    height: int = 240


@dataclass(frozen=True)
class ExperimentProfile:
    """Everything the protocol fixes. The personalization values are the paper's Sec. 3.3."""

    train: TrainProfile
    synth_a: SynthSizes
    synth_b: SynthSizes
    #: the synthetic image corpus g learns from (identities, photos per class and identity);
    #: 400 identities leave 300 in its train split (10% dev, 15% test)
    stills: tuple[int, int] = (400, 2)
    p: int = 15  # clips per class kept by the selection rule (CREMA-D-like default)
    p_threshold: float = 0.5
    ft_epochs: int = 2
    ft_lr: float = 1e-3
    ft_batch: int = 8
    rounds: int = 2
    adapt_fraction: float = (
        0.5  # of each test subject's clips (per class) used, unlabelled, to adapt
    )
    #: the options beside the paper's rule (:data:`VARIANTS`); 0 and 0.0 are the paper's
    balance: float = 0.0
    l2sp: float = 0.0
    #: DP-SGD at this epsilon per night (``--privacy``, :mod:`.privacy`); 0.0: off, the paper's
    privacy_epsilon: float = 0.0
    #: compute the gate's candidate signals for every head (``--gate-signals``, :mod:`.signals`)
    gate_signals: bool = False


#: The personalization rules the experiments compare on the same seeds, splits and central model.
#: ``paper`` (Eq. 1, top P per class, p_threshold, 2 epochs, plain cross-entropy) is the reference
#: row; each other one changes one thing, with a value fixed before any run (never tuned on a result):
#: ``balanced``: no class keeps more than twice the smallest kept class (the issue's floor);
#: ``l2sp``: an L2 pull of 1.0 towards the central weights (docs/personalization.md says why 1.0).
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "balanced": {"balance": 2.0},
    "l2sp": {"l2sp": 1.0},
}


def variant_profile(profile: ExperimentProfile, name: str) -> ExperimentProfile:
    """The profile of a rule, or of ``RULE+dpEPS``: that rule with DP-SGD at EPS per night."""
    from training.experiments.privacy import split_variant

    rule, epsilon = split_variant(name)
    if rule not in VARIANTS:
        raise UserError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return replace(profile, **VARIANTS[rule], privacy_epsilon=epsilon)


PROFILES = {
    "full": ExperimentProfile(
        train=FULL,
        # 15 clips per class: each of the 10 test subjects adapts on 30 clips and is scored on 30 more
        synth_a=SynthSizes(28, 15, 10, 3, 50, 90, 20.0),
        synth_b=SynthSizes(8, 15, 8, 0, 40, 72, 12.0, 240, 180),
        stills=(400, 3),
    ),
    "quick": ExperimentProfile(
        train=QUICK,
        synth_a=SynthSizes(20, 4, 3, 2, 20, 28, 10.0),
        synth_b=SynthSizes(3, 4, 3, 0, 20, 28, 8.0, 240, 180),
        stills=(400, 1),
    ),
}


@dataclass(frozen=True)
class ExperimentOptions:
    corpus: str
    out: Path
    root: Path | None = None
    quick: bool = False
    seed: int = 0
    classes: tuple[str, ...] = EMOTIONS_4
    cache: Path | None = None
    backbone: Path | None = None
    face_model: Path | None = None
    #: g's own corpus (the paper: AffectNet); None: synthetic-images with --corpus synthetic,
    #: else the same corpus as v ("same" forces that)
    ifer_corpus: str | None = None
    ifer_root: Path | None = None
    target: str | None = None  # cross: the corpus personalized and tested on
    target_root: Path | None = None
    rounds: int | None = None
    profile_override: ExperimentProfile | None = None  # tests: tinier than quick
    progress: bool = True
    #: run with seeds seed .. seed + seeds - 1 (central training, splits, fine-tuning); the
    #: corpora stay those of ``data_seed``
    seeds: int = 1
    #: the seed the corpora are rendered (and real corpora split) with; None: ``seed``
    data_seed: int | None = None
    #: the personalization rules to compare (:data:`VARIANTS`); the first is the reference
    variants: tuple[str, ...] = ("paper",)
    gate_signals: bool = False  # measure the gate's candidate signals on every head

    @property
    def g_corpus(self) -> str | None:
        """The corpus g trains on when it is not v's, else None."""
        name = self.ifer_corpus
        if name is None:
            return "synthetic-images" if self.corpus == "synthetic" else None
        return None if name == "same" else name

    @property
    def corpus_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def profile(self) -> ExperimentProfile:
        base = self.profile_override or PROFILES["quick" if self.quick else "full"]
        base = replace(base, gate_signals=True) if self.gate_signals else base
        return replace(base, rounds=self.rounds) if self.rounds else base


def shared_models_dir() -> Path | None:
    """$FEDVFER_MODELS, else ../shared/models beside the working directory or the repository."""
    env = os.environ.get("FEDVFER_MODELS")
    here = Path(__file__).resolve().parents[2]
    for c in (
        [Path(env)]
        if env
        else [Path.cwd().parent / "shared" / "models", here.parent / "shared" / "models"]
    ):
        if (c / "face_detection_short_range.tflite").is_file():
            return c
    return None


def resolve_models(
    backbone: Path | None, face_model: Path | None, workdir: Path
) -> tuple[Path, Path]:
    """The backbone and face-detector files: given, or found in the shared model folder."""
    models = shared_models_dir()
    if face_model is None:
        if models is None:
            raise UserError(
                "no face detector: pass --face-model or set FEDVFER_MODELS (README: 'Models')"
            )
        face_model = models / "face_detection_short_range.tflite"
    if backbone is None:
        cut = workdir / "backbone.tflite"
        if not cut.is_file():
            src = models / "tf2_mobilenet_v2_1.0_224_ptq.tflite" if models else None
            if src is None or not src.is_file():
                raise UserError(
                    "no backbone: pass --backbone (make one with `python -m training backbone`)"
                )
            from training.backbone import from_tflite

            workdir.mkdir(parents=True, exist_ok=True)
            from_tflite(src, workdir)
        backbone = cut
    for p in (backbone, face_model):
        if not Path(p).is_file():
            raise UserError(f"{p}: no such model file")
    return Path(backbone), Path(face_model)


def synthetic_corpus(where: Path, sizes: SynthSizes, classes: tuple[str, ...], seed: int) -> Path:
    """Generate (once) a synthetic corpus for these sizes and seed; returns its folder."""
    from training.synthetic.generate import SynthConfig, generate
    from training.synthetic.render import RENDER_VERSION

    cfg = SynthConfig(
        subjects=sizes.subjects,
        clips_per_class=sizes.clips_per_class,
        classes=classes,
        seed=seed,
        width=sizes.width,
        height=sizes.height,
        fps=sizes.fps,
        min_frames=sizes.min_frames,
        max_frames=sizes.max_frames,
        dev_subjects=sizes.dev_subjects,
        test_subjects=sizes.test_subjects,
    )
    tag = f"{len(classes)}c-s{seed}-{sizes.subjects}x{sizes.clips_per_class}-{sizes.width}x{sizes.height}-{sizes.fps:g}fps-{sizes.min_frames}_{sizes.max_frames}-r{RENDER_VERSION}"
    folder = where / f"synthetic-{tag}"
    if not (folder / "manifest.csv").is_file():
        log.info("generating the synthetic corpus %s", folder)
        generate(cfg, folder, workers=min(2, os.cpu_count() or 1))
    return folder


def stills_corpus(where: Path, sizes: tuple[int, int], classes: tuple[str, ...], seed: int) -> Path:
    """Generate (once) the synthetic image corpus for these sizes and seed; returns its folder."""
    from training.synthetic.stills import generate_stills

    cfg = StillsConfig(identities=sizes[0], per_class=sizes[1], classes=classes, seed=seed)
    folder = where / f"synthetic-images-{cfg.tag()}"
    if not (folder / "manifest.csv").is_file():
        log.info("generating the synthetic image corpus %s", folder)
        generate_stills(cfg, folder, workers=min(2, os.cpu_count() or 1))
    return folder


class Heads:
    """g and v as Keras models (built once per K) predicting from cached embeddings."""

    def __init__(self) -> None:
        self._g: dict[int, Any] = {}
        self._v: dict[int, Any] = {}

    def ifer(self, weights: dict[str, np.ndarray], frames: np.ndarray) -> np.ndarray:
        from vfer.heads import build_ifer, num_classes_of, set_weights

        k = num_classes_of(weights, "g")
        model = self._g.setdefault(k, build_ifer(k))
        set_weights(model, weights)
        return np.asarray(model.predict(frames, batch_size=1024, verbose=0), dtype=np.float64)

    def vfer(self, weights: dict[str, np.ndarray], clips: list[np.ndarray]) -> np.ndarray:
        from vfer.heads import build_vfer, num_classes_of, set_weights
        from vfer.personalize import pad_clips

        k = num_classes_of(weights, "v")
        model = self._v.setdefault(k, build_vfer(k))
        set_weights(model, weights)
        return np.asarray(model.predict(pad_clips(clips), batch_size=64, verbose=0), np.float64)


@dataclass
class Central:
    """A trained central model and the corpus it came from."""

    corpus: Corpus
    bundle: Bundle
    ifer: dict[str, np.ndarray]
    vfer: dict[str, np.ndarray]
    train_log: list[dict[str, Any]] = field(default_factory=list)
    ifer_corpus: Corpus | None = None  # g's own corpus, when it is not v's

    @property
    def g_corpus(self) -> Corpus:
        return self.ifer_corpus or self.corpus


class Context:
    """One run's shared state: models, cache, corpora and central models (each trained once)."""

    def __init__(self, options: ExperimentOptions) -> None:
        import keras

        self.options = options
        self.profile = options.profile
        self.out = options.out
        self.work = options.cache or options.out / "work"
        self.backbone, self.face_model = resolve_models(
            options.backbone, options.face_model, self.work
        )
        self.cache = EmbeddingCache.for_models(
            self.work / "embeddings", self.backbone, self.face_model
        )
        self.heads = Heads()
        self._centrals: dict[tuple[str, tuple[str, ...]], Central] = {}
        self.preprocess_stats: dict[str, dict[str, object]] = {}
        keras.utils.set_random_seed(options.seed)

    def corpus(self, which: str, classes: tuple[str, ...]) -> Corpus:
        """``"source"`` (``--corpus``), ``"target"`` (``cross``'s corpus B) or ``"ifer"`` (g's own
        corpus), embedded in the cache."""
        o = self.options
        if which == "ifer":
            name, root = o.g_corpus or o.corpus, o.ifer_root
        elif which == "source":
            name, root = o.corpus, o.root
        else:
            name, root = o.target or o.corpus, o.target_root
        if root is None and name == "synthetic-images":
            root = stills_corpus(
                self.work / "corpora", self.profile.stills, _synth_classes(classes), o.corpus_seed
            )
        if root is None:
            if name != "synthetic":
                flag = {"source": "--root", "ifer": "--ifer-root"}.get(which, "--target-root")
                raise UserError(f"--corpus {name} needs {flag} PATH (only synthetic is generated)")
            sizes = self.profile.synth_a if which == "source" else self.profile.synth_b
            seed = o.corpus_seed if which == "source" else o.corpus_seed + 1000
            root = synthetic_corpus(self.work / "corpora", sizes, _synth_classes(classes), seed)
        corpus = load_corpus(name, root, classes, seed=o.corpus_seed)
        if not corpus.records:
            raise UserError(f"{name} at {root}: no clips of the classes {', '.join(classes)}")
        stats = ensure(
            self.cache,
            [r.path for r in corpus.records],
            real_pipeline(self.backbone, self.face_model),
            progress=o.progress,
            description=f"embedding {name} frames",
        )
        self.preprocess_stats[f"{which}:{name}"] = stats.summary()
        if stats.failed:
            bad = {s.split(": ", 1)[0] for s in stats.failed}
            corpus = replace(corpus, records=[r for r in corpus.records if str(r.path) not in bad])
        return corpus

    def central(self, classes: tuple[str, ...]) -> Central:
        """The central g and v trained on the source corpus's train split (once per class set)."""
        key = (self.options.corpus, classes)
        if key not in self._centrals:
            corpus = self.corpus("source", classes)
            g_corpus = self.corpus("ifer", classes) if self.options.g_corpus else None
            tag = f"-g-{g_corpus.name}" if g_corpus is not None else ""
            where = self.work / "models" / f"central-{len(classes)}c-s{self.options.seed}{tag}"
            bundle = train_central(
                corpus,
                self.work / "embeddings",
                where,
                self.profile.train,
                backbone=self.backbone,
                face_model=self.face_model,
                seed=self.options.seed,
                progress=self.options.progress,
                ifer_corpus=g_corpus,
            )
            log_path = where.with_name(where.name + ".train_log.jsonl")
            rows = (
                [_json_row(x) for x in log_path.read_text().splitlines()]
                if log_path.is_file()
                else []
            )
            self._centrals[key] = Central(
                corpus, bundle, bundle.ifer_weights(), bundle.vfer_weights(), rows, g_corpus
            )
        return self._centrals[key]


def _synth_classes(classes: tuple[str, ...]) -> tuple[str, ...]:
    from vfer.classes import EMOTIONS_6

    if set(classes) <= set(EMOTIONS_4):
        return EMOTIONS_4
    if set(classes) <= set(EMOTIONS_6):
        return EMOTIONS_6
    raise UserError(f"the synthetic corpus has the classes of {EMOTIONS_6}, not {classes}")


def _json_row(text: str) -> dict[str, Any]:
    import json

    row: dict[str, Any] = json.loads(text)
    return row
