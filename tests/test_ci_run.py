""".ci/run's stages: each timed, the heavy ones beside `make test`, a skip said and never a pass,
and a failure anywhere failing the run. The real script runs in a copy of its folder, with
`make` and deploy/heavy-deps.sh replaced by stand-ins that log what they were asked and fail on
request (the real stages are what CI itself runs)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_MAKE = """#!/usr/bin/env bash
echo "make $*" >>"$CALLS"
case " $* " in *" ${FAIL_MAKE:-none} "*) echo "make: $* failed"; exit 3;; esac
"""

FAKE_HEAVY_DEPS = """#!/usr/bin/env bash
echo "heavy-deps $1" >>"$CALLS"
[ "$1" = "${NO_DEPS:-none}" ] && { echo "heavy-deps: $1 cannot be made ready"; exit 2; }
exit 0
"""


@pytest.fixture()
def ci(tmp_path: Path):
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "heavy-deps.sh").write_text(FAKE_HEAVY_DEPS)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(FAKE_MAKE)
    make.chmod(make.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.log"

    def run(**env: str) -> tuple[int, str, list[str]]:
        calls.write_text("")
        full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls)}
        full.pop("FEDVFER_CI_HEAVY", None)
        proc = subprocess.run(
            ["bash", str(tmp_path / ".ci" / "run")],
            env=full | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.returncode, proc.stdout + proc.stderr, calls.read_text().splitlines()

    return run


def root_with_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def test_every_stage_runs_and_is_timed(ci) -> None:
    if not root_with_apt():
        pytest.skip("the heavy stages run only as root with apt-get")
    rc, out, calls = ci()
    assert rc == 0, out
    assert "make venv system-deps" in calls
    assert "make test" in calls
    assert "make docker-demo" in calls
    assert "make docker-images" in calls
    assert any(c.startswith("make pi-check PI_RELEASES=bookworm") for c in calls)
    for stage in ["venv and system packages", "make test", "make docker-images",
                  "make docker-demo", "make pi-check (bookworm)"]:  # fmt: skip
        assert f"==> stage: {stage} passed in " in out, stage
    assert "==> total: " in out
    # the heavy builds start before the suite; the demo runs after it
    assert calls.index("make test") < calls.index("make docker-demo")


def test_a_failed_suite_fails_the_run_and_the_rest_still_reports(ci) -> None:
    rc, out, _calls = ci(FAIL_MAKE="test")
    assert rc == 1
    assert "==> stage: make test FAILED (exit" in out
    assert "==> failed: make test" in out


def test_the_demo_does_not_run_on_images_that_failed_to_build(ci) -> None:
    if not root_with_apt():
        pytest.skip("the heavy stages run only as root with apt-get")
    rc, out, calls = ci(FAIL_MAKE="docker-images")
    assert rc == 1
    assert "make docker-demo" not in calls
    assert "make docker-demo not run (its images failed to build)" in out
    assert "==> failed: make docker-images" in out


def test_a_stage_that_cannot_run_is_skipped_saying_why_and_never_passes(ci) -> None:
    if not root_with_apt():
        pytest.skip("the heavy stages run only as root with apt-get")
    rc, out, calls = ci(NO_DEPS="docker")
    assert rc == 0, out
    assert "make docker-demo skipped (no Docker engine could be installed or started)" in out
    assert "make docker-demo passed" not in out
    assert "make docker-images" not in calls
    assert "==> stage: make pi-check (bookworm) passed in " in out


def test_heavy_stages_off(ci) -> None:
    rc, out, calls = ci(FEDVFER_CI_HEAVY="0")
    assert rc == 0, out
    assert "skipped (FEDVFER_CI_HEAVY=0)" in out
    assert not any("pi-check" in c or "docker" in c for c in calls)


def test_nothing_runs_without_the_venv(ci) -> None:
    rc, out, calls = ci(FAIL_MAKE="venv")
    assert rc == 1
    assert calls == ["make venv system-deps"]
    assert "==> failed: venv" in out
