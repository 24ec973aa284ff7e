"""A real MQTT 3.1.1 broker (amqtt) inside the test process, for the 3.1.1 fallback tests.

The starter itself is product code (the demo uses it): :mod:`training.sim.embedded_broker`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from training.sim.embedded_broker import EmbeddedBroker, start_embedded_broker

__all__ = ["EmbeddedBroker", "amqtt_broker", "start_embedded_broker"]


@pytest.fixture
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    """amqtt on a free loopback port, in a thread of this process; stopped afterwards."""
    broker = start_embedded_broker("127.0.0.1", 0)
    try:
        yield broker
    finally:
        broker.stop()
