"""``experiment within --privacy``: the DP variants beside the plain rule on the same seeds, the
visits of the synthetic experiments, the level parsing, and the table and curve of the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_experiments import options, tiny  # noqa: F401 (the tiny corpora fixture)
from training.experiments import run_experiment
from training.experiments.privacy import group_visits, parse_levels, split_variant, variant_names
from vfer.cli import UserError


def test_levels_put_off_first_and_refuse_nonsense() -> None:
    assert parse_levels("1,3,8,off") == (None, 1.0, 3.0, 8.0)
    assert variant_names(("paper",), parse_levels("8,off")) == ("paper", "paper+dp8")
    assert split_variant("balanced+dp0.5") == ("balanced", 0.5)
    assert split_variant("paper") == ("paper", 0.0)
    for bad in ("0", "-1", "nan", "1e9", "inf", "3,3", "three", ""):
        with pytest.raises(UserError, match="--privacy"):
            parse_levels(bad)
    with pytest.raises(UserError, match="epsilon"):
        split_variant("paper+dp0")


def test_visits_cover_every_clip_once_in_groups_of_one_to_three() -> None:
    for n in (0, 1, 7, 30):
        visits = group_visits(n, seed=5)
        flat = [i for v in visits for i in v]
        assert sorted(flat) == list(range(n))
        assert all(1 <= len(v) <= 3 for v in visits)
    assert group_visits(30, 5) == group_visits(30, 5)
    assert group_visits(30, 5) != group_visits(30, 6)


@pytest.mark.slow
def test_within_with_privacy_runs_each_epsilon_on_the_same_subjects_and_draws_the_curve(
    tiny: dict[str, Path],  # noqa: F811
) -> None:
    out = tiny["root"] / "out-privacy"
    names = variant_names(("paper",), parse_levels("2,off"))
    rep = run_experiment("within", options(tiny, out, seeds=2, variants=names))
    w = json.loads((out / "report.json").read_text())["within"]
    assert list(w["variants"]) == ["paper", "paper+dp2"] and w["reference"] == "paper"
    plain, dp = w["variants"]["paper"]["subjects"], w["variants"]["paper+dp2"]["subjects"]
    assert [r["micro_f1_before"] for r in plain] == [r["micro_f1_before"] for r in dp]
    assert all(r["privacy"] is None for r in plain)
    used = [r for r in dp if r["personalized"]]
    assert used, "no subject kept a clip: the tiny corpus cannot test the DP fine-tune"
    for r in used:
        p: dict[str, Any] = r["privacy"]
        assert p["epsilon"] <= 2.0 and p["epsilon"] == pytest.approx(2.0, rel=0.01)
        assert (
            p["noise_multiplier"] > 0 and p["steps"] >= 1 and 1 <= p["visits_used"] <= p["visits"]
        )
        assert r["gate_passed"] is None  # the gate is not judged under DP
    assert (out / "gain_vs_epsilon_within.png").is_file()
    md = (out / "report.md").read_text()
    assert "gain against epsilon per night" in md and "| off |" in md and "| 2 |" in md
    from training.cli_train import summary_lines

    assert any(line.startswith("within [paper+dp2], 2 seeds") for line in summary_lines(rep))


def test_the_cli_refuses_a_bad_privacy_list() -> None:
    from click.testing import CliRunner

    from training.cli_train import experiment_cmd

    res = CliRunner().invoke(
        experiment_cmd, ["within", "--corpus", "synthetic", "--out", "x", "--privacy", "0,off"]
    )
    assert res.exit_code == 2 and "--privacy" in res.output and "'0'" in res.output
