"""The experiments: the per-subject split (pure), each experiment on a tiny synthetic corpus, the
report keys, repeatability, and the CLI's `experiment all --quick` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import paths
from training.corpora import Record
from training.experiments import ExperimentOptions, run_experiment, subject_splits
from training.experiments.protocol import sign_of, split_subject
from training.experiments.setup import ExperimentProfile, SynthSizes, synthetic_corpus
from training.train import TrainProfile
from vfer.classes import EMOTIONS_4

TINY_A = SynthSizes(5, 2, 2, 1, 8, 10, 10.0)
TINY_B = SynthSizes(2, 2, 2, 0, 8, 10, 8.0, 240, 180)
TINY = ExperimentProfile(
    train=TrainProfile(g_epochs=3, v_epochs=2), synth_a=TINY_A, synth_b=TINY_B, stills=(12, 1)
)
METRIC_KEYS = {"precision", "recall", "f1"}


def records(n_per_class: int, subject: str = "s1") -> list[Record]:
    return [
        Record(Path(f"{subject}_{c}_{i}.mp4"), subject, c, "test")
        for c in EMOTIONS_4
        for i in range(n_per_class)
    ]


def test_split_is_stratified_disjoint_and_seeded() -> None:
    recs = records(6)
    adapt, held = split_subject(recs, 0.5, seed=0)
    assert len(adapt) == len(held) == 12
    assert set(adapt).isdisjoint(held) and set(adapt) | set(held) == set(recs)
    for c in EMOTIONS_4:
        assert sum(r.label == c for r in adapt) == 3
    assert split_subject(recs, 0.5, seed=0) == (adapt, held)
    assert split_subject(recs, 0.5, seed=1)[0] != adapt
    # a class with two clips gives one to each side; with one clip it is only evaluated
    two, one = split_subject(records(2), 0.5, 0), split_subject(records(1), 0.5, 0)
    assert len(two[0]) == len(two[1]) == 4
    assert one[0] == [] and set(one[1]) == set(records(1))


def test_subject_splits_one_per_subject() -> None:
    recs = records(2, "a") + records(2, "b")
    splits = subject_splits(recs, 0.5, seed=3)
    assert [s.subject for s in splits] == ["a", "b"]
    assert all({r.subject for r in s.adapt + s.evaluate} == {s.subject} for s in splits)


def test_sign_is_reported_as_measured() -> None:
    assert sign_of(0.01) == "gain" and sign_of(-0.01) == "loss" and sign_of(1e-12) == "no change"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not paths.FACE_MODEL.exists() or not paths.BACKBONE_INT8.exists():
        pytest.skip("shared models absent")
    root = tmp_path_factory.mktemp("exp")
    return {
        "a": synthetic_corpus(root / "a", TINY_A, EMOTIONS_4, 7),
        "b": synthetic_corpus(root / "b", TINY_B, EMOTIONS_4, 8),
        "work": root / "work",
        "root": root,
    }


def options(tiny: dict[str, Path], out: Path, **kw: Any) -> ExperimentOptions:
    base = ExperimentOptions(
        corpus="synthetic",
        out=out,
        root=tiny["a"],
        target="synthetic",
        target_root=tiny["b"],
        cache=tiny["work"],
        classes=EMOTIONS_4,
        profile_override=TINY,
        progress=False,
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def report_all(tiny: dict[str, Path]) -> dict[str, Any]:
    return run_experiment("all", options(tiny, tiny["root"] / "out-all"))


def check_scores(s: dict[str, Any]) -> None:
    assert set(s["per_class"]) == set(EMOTIONS_4)
    for row in s["per_class"].values():
        assert set(row) >= METRIC_KEYS and all(0 <= row[k] <= 1 for k in METRIC_KEYS)
    for avg in ("macro", "micro"):
        assert set(s[avg]) == METRIC_KEYS
    assert s["micro"]["f1"] == pytest.approx(s["accuracy"])


@pytest.mark.slow
def test_all_writes_every_section(report_all: dict[str, Any], tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "out-all"
    on_disk = json.loads((out / "report.json").read_text())
    assert {"table1", "within", "cross", "fedavg"} <= set(on_disk)
    check_scores(on_disk["table1"])
    # two corpora by default: g is scored on the image corpus's test people (2 of 12, 4 photos each)
    t1 = on_disk["table1"]
    assert t1["corpus"] == "synthetic-images" and t1["vfer_corpus"] == "synthetic"
    assert t1["subjects"] and t1["test_clips"] == 2 * 4
    check_scores(t1["probe"])
    assert t1["g_minus_probe"]["macro_f1"] == pytest.approx(
        t1["macro"]["f1"] - t1["probe"]["macro"]["f1"]
    )
    summary = on_disk["summary"]
    assert summary["g"]["macro_f1"] == t1["macro"]["f1"] and "accuracy" in summary["probe"]
    teacher = summary["teacher_on_within_subjects"]
    assert teacher["clips"] == 2 * 4 and 0 <= teacher["accuracy"] <= 1
    notes = on_disk["training"]["notes"][0]
    assert notes["ifer_corpus"] == "synthetic-images" and notes["vfer_corpus"] == "synthetic"
    assert "g from `synthetic-images`" in (out / "report.md").read_text()
    for key in ("within", "cross", "fedavg"):
        sec = on_disk[key]
        check_scores(sec["before"])
        check_scores(sec["after"])
        assert len(sec["subjects"]) == 2
        changes = [r["micro_f1_change"] for r in sec["subjects"]]
        assert sec["mean_subject_micro_f1_change"] == pytest.approx(np.mean(changes))
        assert sec["sign"] == sign_of(sec["mean_subject_micro_f1_change"])
    w = on_disk["within"]
    for row in w["subjects"]:
        assert row["adapt_clips"] == 4 and row["eval_clips"] == 4  # 1 of 2 clips per class each
        assert row["micro_f1_change"] == pytest.approx(
            row["micro_f1_after"] - row["micro_f1_before"]
        )
        assert 0 <= row["selected"] <= 4
        assert row["gate_passed"] in (True, False, None)
    ci = w["micro_f1_change_ci"]
    assert ci["n"] == 2 and ci["ci_low"] <= ci["mean"] <= ci["ci_high"]
    assert ci["mean"] == pytest.approx(w["mean_subject_micro_f1_change"])
    gate = w["gate"]
    assert gate["judged"] == sum(r["gate_passed"] is not None for r in w["subjects"])
    assert gate["blocked"] == gate["blocked_would_lower"] + gate["blocked_would_raise"] + sum(
        r["gate_passed"] is False and r["micro_f1_change"] == 0 for r in w["subjects"]
    )
    assert on_disk["cross"]["target"] == "synthetic" and on_disk["cross"]["source"] == "synthetic"
    fed = on_disk["fedavg"]
    assert [r["round"] for r in fed["rounds"]] == [0, 1, 2]
    assert fed["before"]["micro"] == fed["rounds"][0]["micro"]
    assert fed["after"]["micro"] == fed["rounds"][-1]["micro"]
    pngs = {p.name for p in out.glob("*.png")}
    assert {
        "fig3_within_subject_change.png",
        "table1_ifer_confusion.png",
        "training_loss.png",
    } <= pngs
    assert "## Table 1" in (out / "report.md").read_text()
    assert len(on_disk["training"]["log"]) == 3 + 2


@pytest.mark.slow
def test_single_experiments_repeat_and_reuse_the_model(
    report_all: dict[str, Any], tiny: dict[str, Path]
) -> None:
    again = run_experiment("within", options(tiny, tiny["root"] / "out-within"))
    assert set(again) >= {"within", "meta"} and "table1" not in again
    # the central model is reused (same fingerprint) and personalization is deterministic
    assert again["training"]["bundles"] == report_all["training"]["bundles"]
    assert again["within"]["subjects"] == report_all["within"]["subjects"]
    one = run_experiment("fedavg", options(tiny, tiny["root"] / "out-fed", rounds=1))
    assert [r["round"] for r in one["fedavg"]["rounds"]] == [0, 1]
    assert one["fedavg"]["rounds"][1] == report_all["fedavg"]["rounds"][1]


@pytest.mark.slow
def test_cli_experiment_all_quick(report_all: dict[str, Any], tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "out-cli"
    env = {**os.environ, "PYTHONPATH": str(paths.REPO), "FEDVFER_MODELS": str(paths.MODELS)}
    cmd = [sys.executable, "-m", "training", "experiment", "all", "--corpus", "synthetic"]
    cmd += ["--root", str(tiny["a"]), "--target-root", str(tiny["b"]), "--cache", str(tiny["work"])]
    cmd += ["--out", str(out), "--quick", "--seed", "1", "--ifer-corpus", "same"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=paths.REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "table1: IFER macro-F1" in proc.stdout and "linear probe" in proc.stdout
    assert "teacher g on the personalized people" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert {"table1", "within", "cross", "fedavg"} <= set(report)
    assert report["meta"]["profile"] == "quick" and report["meta"]["seed"] == 1
    assert len(report["training"]["log"]) == 20 + 12
    # another seed, other figures
    a = (tiny["root"] / "out-all" / "training_loss.png").read_bytes()
    assert (out / "training_loss.png").read_bytes() != a
    # a bad corpus path is one line, not a traceback
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "experiment",
            "within",
            "--corpus",
            "crema-d",
            "--out",
            str(out / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=paths.REPO,
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "--root" in bad.stderr


def affectnet_tree(root: Path) -> Path:
    """A tiny AffectNet in its official layout, its images real faces (the London set)."""
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    lists, images = root / "Manually_Annotated_file_lists", root / "Manually_Annotated_Images"
    lists.mkdir(parents=True)
    ids = sorted(
        {line.split(",")[1] for line in (paths.LONDON / "faces.csv").read_text().splitlines()[1:]}
    )
    for name, people in (("training", ids[:20]), ("validation", ids[20:24])):
        lines = [header]
        for n in people:
            for code, folder, shot in ((0, "neutral", "03"), (1, "smiling", "08")):
                rel = f"{code}/{n}_{shot}.jpg"
                (images / rel).parent.mkdir(parents=True, exist_ok=True)
                (images / rel).symlink_to(paths.LONDON / folder / f"{n}_{shot}.jpg")
                lines.append(f'{rel},0,0,512,512,"",{code},0,0\n')
        (lists / f"{name}.csv").write_text("".join(lines))
    return root


@pytest.mark.slow
def test_two_corpora_plumbing_with_an_official_affectnet_tree(tiny: dict[str, Path]) -> None:
    if not (paths.LONDON / "faces.csv").is_file():
        pytest.skip("London set absent")
    tree = affectnet_tree(tiny["root"] / "AffectNet")
    env = {**os.environ, "PYTHONPATH": str(paths.REPO), "FEDVFER_MODELS": str(paths.MODELS)}
    out = tiny["root"] / "out-affectnet"
    cmd = [sys.executable, "-m", "training", "experiment", "table1", "--corpus", "synthetic"]
    cmd += ["--root", str(tiny["a"]), "--ifer-corpus", "affectnet", "--ifer-root", str(tree)]
    cmd += ["--cache", str(tiny["work"]), "--out", str(out), "--quick"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=paths.REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    t1 = report["table1"]
    # g is scored on AffectNet's test split (its validation list: 4 people x 2 photos)
    assert t1["corpus"] == "affectnet" and t1["vfer_corpus"] == "synthetic"
    assert t1["n"] == 8 and t1["probe"]["n"] == 8
    assert report["training"]["notes"][0]["ifer_corpus"] == "affectnet"
    missing = subprocess.run(
        [*cmd[:8], str(tiny["a"]), "--ifer-corpus", "affectnet", "--out", str(out / "x")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=paths.REPO,
    )
    assert missing.returncode == 1 and "--ifer-corpus affectnet needs --ifer-root" in missing.stderr


@pytest.mark.slow
def test_within_over_seeds_pools_the_change_per_subject_for_each_rule(
    tiny: dict[str, Path],
) -> None:
    out = tiny["root"] / "out-seeds"
    rep = run_experiment(
        "within",
        options(tiny, out, seeds=2, variants=("paper", "balanced", "l2sp"), gate_signals=True),
    )
    assert rep["meta"]["seeds"] == [0, 1] and rep["meta"]["data_seed"] == 0
    on_disk = json.loads((out / "report.json").read_text())
    w = on_disk["within"]
    assert w["reference"] == "paper" and list(w["variants"]) == ["paper", "balanced", "l2sp"]
    for name, v in w["variants"].items():
        runs = [json.loads((out / f"seed-{s}" / "report.json").read_text()) for s in (0, 1)]
        rows = [r for run in runs for r in run["within"]["variants"][name]["subjects"]]
        assert len(v["subjects"]) == len(rows) == 2 * 2  # 2 subjects x 2 seeds
        # the interval is over subjects, of each subject's mean change over the seeds
        means = [
            np.mean([r["micro_f1_change"] for r in rows if r["subject"] == s])
            for s in sorted({r["subject"] for r in rows})
        ]
        ci = v["micro_f1_change_ci"]
        assert ci["n"] == 2 and ci["mean"] == pytest.approx(np.mean(means))
        assert ci["ci_low"] <= ci["mean"] <= ci["ci_high"]
        assert v["micro_f1_change_per_seed"] == pytest.approx(
            [run["within"]["variants"][name]["mean_subject_micro_f1_change"] for run in runs]
        )
        assert v["micro_f1_change_runs"]["n"] == 4
        assert all(0 <= r["teacher_accuracy"] <= 1 for r in v["subjects"])
    # the same people, splits and central model for every rule of one seed
    seed0 = json.loads((out / "seed-0" / "report.json").read_text())["within"]["variants"]
    assert [r["micro_f1_before"] for r in seed0["paper"]["subjects"]] == [
        r["micro_f1_before"] for r in seed0["l2sp"]["subjects"]
    ]
    assert (out / "gain_vs_teacher_within.png").is_file()
    assert (out / "seed-1" / "gain_vs_teacher_within.png").is_file()
    md = (out / "report.md").read_text()
    assert "| balanced |" in md and "95% CI" in md
    from training.cli_train import summary_lines

    lines = summary_lines(rep)
    assert len(lines) == 3 and lines[0].startswith("within [paper], 2 seeds: mean")
    check_gate_signals(out)


def check_gate_signals(out: Path) -> None:
    """--gate-signals: every head's signals recorded, and gate-eval scores them on a held-out
    seed, from the pooled report or from the folder (the seeds finished so far)."""
    from click.testing import CliRunner

    from training.cli import cli
    from vfer.gate_signals import SIGNALS

    rows = json.loads((out / "report.json").read_text())["within"]["variants"]["paper"]["subjects"]
    assert rows and all(set(r["signals"]) == set(SIGNALS) for r in rows if r["personalized"])
    for target in (out, out / "report.json"):
        result = CliRunner().invoke(
            cli, ["gate-eval", str(target), "--dev-seeds", "1", "--out", str(out / "gate.json")]
        )
        assert result.exit_code == 0, result.output
        assert "| combined |" in result.output and "held-out seeds [1]" in result.output
    scored = json.loads((out / "gate.json").read_text())
    assert scored["dev_seeds"] == [0] and set(scored["signals"]) == set(SIGNALS)
    refused = CliRunner().invoke(cli, ["gate-eval", str(out), "--dev-seeds", "2"])
    assert refused.exit_code != 0 and "leaves no held-out seed" in str(refused.exception)


@pytest.mark.slow
def test_teacher_sweep_retrains_g_and_draws_the_curve(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "out-sweep"
    rep = run_experiment("teacher-sweep", options(tiny, out))
    sw = rep["teacher-sweep"]
    assert sw["identities_available"] >= 1 and sw["points"]
    for p in sw["points"]:
        assert 1 <= p["identities"] <= sw["identities_available"]
        assert 0 <= p["teacher_accuracy"] <= 1
        assert p["micro_f1_change_ci"]["n"] == 2
    assert (out / "teacher_sweep.png").is_file()
    assert "Teacher-quality curve" in (out / "report.md").read_text()
    from training.cli_train import summary_lines

    assert any(line.startswith("teacher-sweep: g on") for line in summary_lines(rep))


def test_sweep_sizes_are_capped_by_the_corpus() -> None:
    from training.experiments.sweep import sizes_for

    assert sizes_for(300) == [10, 30, 100, 300]
    assert sizes_for(225) == [10, 30, 100, 225]
    assert sizes_for(9) == [9]
    with pytest.raises(ValueError):
        sizes_for(0)


def test_unknown_rules_and_seed_counts_are_refused() -> None:
    from click.testing import CliRunner

    from training.cli_train import experiment_cmd

    for args in (["--variants", "paper,greedy"], ["--variants", "paper,paper"], ["--seeds", "0"]):
        res = CliRunner().invoke(
            experiment_cmd, ["within", "--corpus", "synthetic", "--out", "x", *args]
        )
        assert res.exit_code == 2, res.output
        assert args[0] in res.output
