from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import paths
from tests.support.mosquitto import Broker, mosquitto_binary, start_mosquitto


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"test data {path} is absent (../shared beside the repo, or set FEDVFER_SHARED)"
        )
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return require(paths.SHARED)


@pytest.fixture(scope="session")
def backbone_src() -> Path:
    return require(paths.BACKBONE_INT8)


@pytest.fixture(scope="session")
def face_model() -> Path:
    return require(paths.FACE_MODEL)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A plain anonymous mosquitto on a free loopback port, stopped by pid afterwards."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not installed (make system-deps installs it)")
    broker = start_mosquitto(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()
