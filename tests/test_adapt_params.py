"""AdaptParams come from one place; the adapt CLI and the personalizer do not import each other."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from edge_node.config import AdaptationConfig
from edge_node.personalization.params import AdaptParams
from vfer.messages import Personalization


def test_config_then_round_then_flags() -> None:
    cfg = AdaptationConfig(p=7, p_threshold=0.3, epochs=3, lr=0.01, min_clips=5)
    assert AdaptParams.build(cfg) == AdaptParams(
        p=7, p_threshold=0.3, epochs=3, lr=0.01, min_clips=5
    )
    rnd = Personalization(p=20, p_threshold=0.6, epochs=1, lr=0.002)
    assert AdaptParams.build(cfg, rnd) == AdaptParams(
        p=20, p_threshold=0.6, epochs=1, lr=0.002, min_clips=5
    )  # the round sets what it carries; min_clips stays the node's
    assert AdaptParams.build(cfg, rnd, p=2, lr=None, min_clips=1) == AdaptParams(
        p=2, p_threshold=0.6, epochs=1, lr=0.002, min_clips=1
    )


@given(
    p=st.integers(0, 10_000),
    thr=st.floats(0, 1),
    epochs=st.integers(1, 100),
    lr=st.floats(1e-9, 1),
    min_clips=st.integers(1, 1000),
    balance=st.one_of(st.just(0.0), st.floats(1, 100)),
    l2sp=st.floats(0, 100),
)
def test_cli_args_round_trip_through_the_adapt_command(
    p: int, thr: float, epochs: int, lr: float, min_clips: int, balance: float, l2sp: float
) -> None:
    """The child process gets exactly the parameters the personalizer built."""
    from click.testing import CliRunner

    from edge_node.personalization import cli as cli_adapt

    params = AdaptParams(
        p=p, p_threshold=thr, epochs=epochs, lr=lr, min_clips=min_clips, balance=balance, l2sp=l2sp
    )
    seen: list[AdaptParams] = []
    original = cli_adapt.AdaptParams.build

    def spy(*args: object, **kw: object) -> AdaptParams:
        built = original(*args, **kw)  # type: ignore[arg-type]
        seen.append(built)
        raise SystemExit(0)

    cli_adapt.AdaptParams.build = spy  # type: ignore[method-assign]
    try:
        CliRunner().invoke(
            cli_adapt.adapt_cmd, ["--db", "x.db", "--bundle", "b", *params.cli_args()]
        )
    finally:
        cli_adapt.AdaptParams.build = original  # type: ignore[method-assign]
    assert seen == [params]


def test_privacy_and_the_visit_gap_reach_the_child() -> None:
    """adaptation.privacy and clips.gap_s travel to the child exactly; 'off' turns DP off."""
    from click.testing import CliRunner

    from edge_node.personalization import cli as cli_adapt
    from vfer.privacy.options import PrivacyOptions

    private = PrivacyOptions(enabled=True, epsilon_per_night=2.5, clip=0.3, window_nights=40)
    sent = [AdaptParams(privacy=private, gap_s=2.5), AdaptParams(gap_s=0.5)]
    seen: list[AdaptParams] = []
    original = cli_adapt.AdaptParams.build

    def spy(*args: object, **kw: object) -> AdaptParams:
        seen.append(original(*args, **kw))  # type: ignore[arg-type]
        raise SystemExit(0)

    cli_adapt.AdaptParams.build = spy  # type: ignore[method-assign]
    try:
        for params in sent:
            args = ["--db", "x.db", "--bundle", "b", *params.cli_args()]
            CliRunner().invoke(cli_adapt.adapt_cmd, args)
        CliRunner().invoke(cli_adapt.adapt_cmd, ["--db", "x.db", "--privacy", "off"])
    finally:
        cli_adapt.AdaptParams.build = original  # type: ignore[method-assign]
    assert seen[:2] == sent and seen[2].privacy is None
    bad = CliRunner().invoke(cli_adapt.adapt_cmd, ["--db", "x.db", "--privacy", '{"clip": 0}'])
    assert bad.exit_code != 0 and "clip" in bad.output


def test_the_adapt_cli_and_the_personalizer_do_not_import_each_other() -> None:
    code = (
        "import sys, edge_node.personalization.cli;"
        "assert 'edge_node.personalization.loop' not in sys.modules, 'the CLI imports the loop'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    code = "import sys, edge_node.personalization.loop; assert 'edge_node.personalization.cli' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_options_beside_the_papers_rule_come_from_the_config_and_reach_the_child() -> None:
    cfg = AdaptationConfig(selection="balanced", balance_ratio=3.0, l2sp=0.1)
    params = AdaptParams.build(cfg)
    assert (params.balance, params.l2sp) == (3.0, 0.1)
    assert AdaptParams.build(AdaptationConfig()).balance == 2.0  # class-balanced by default
    # the paper's rule is one line away
    assert AdaptParams.build(AdaptationConfig(selection="paper")).balance == 0.0
    args = params.cli_args()
    assert args[args.index("--balance") + 1] == "3.0"
    assert args[args.index("--l2sp") + 1] == "0.1"


def test_options_outside_their_ranges_are_refused_with_the_field_named() -> None:
    import pytest
    from pydantic import ValidationError

    for bad in ({"balance_ratio": 0.5}, {"l2sp": -1.0}, {"l2sp": 1e9}, {"selection": "greedy"}):
        with pytest.raises(ValidationError) as err:
            AdaptationConfig(**bad)  # type: ignore[arg-type]
        assert next(iter(bad)) in str(err.value)


def test_the_adapt_command_refuses_a_balance_out_of_range() -> None:
    from click.testing import CliRunner

    from edge_node.personalization import cli as cli_adapt

    for bad in ("0.5", "nan", "101"):
        out = CliRunner().invoke(cli_adapt.adapt_cmd, ["--db", "x.db", "--balance", bad])
        assert out.exit_code == 2 and "--balance" in out.output, out.output
