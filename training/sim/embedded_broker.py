"""An MQTT broker inside this process (amqtt), for the demo and tests where no mosquitto exists.

amqtt 0.12 speaks MQTT 3.1.1 only: clients must connect with ``mqtt_version: "3.1.1"`` or
``"auto"`` (see :mod:`vfer.mqtt`), and there are no ``$share`` subscriptions, so the
aggregator runs a single worker against it. It keeps everything in memory (no persistence)
and is meant for one machine on loopback, never for a fleet::

    handle = start_embedded_broker("127.0.0.1", 0)   # 0: a free port
    ... connect to handle.url ...
    handle.stop()

The broker runs on its own asyncio loop in a daemon thread; :meth:`EmbeddedBroker.stop`
shuts it down and joins the thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt's config: one plain TCP listener, anonymous clients, no topic filter, no packet log."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


@dataclass
class EmbeddedBroker:
    """A running in-process broker: ``url`` to connect to, ``stop()`` to end it."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _stop: asyncio.Event = field(repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("embedded broker on %s:%s did not stop in %.0f s", *self.addr, timeout)

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded_broker(host: str = "127.0.0.1", port: int = 0) -> EmbeddedBroker:
    """Start amqtt on ``host:port`` (0: a free port) and return once it accepts connections."""
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # amqtt is in the 'train' extra (the demo's)
        raise RuntimeError("the embedded broker needs amqtt: pip install 'amqtt==0.12.*'") from exc
    port = port or _free_port(host)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, asyncio.Event] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        broker = Broker(broker_config(host, port), loop=loop)
        try:
            await broker.start()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        await stop.wait()
        await broker.shutdown()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # reported to start_embedded_broker or logged
            if not ready.is_set():
                failure.append(exc)
                ready.set()
            else:
                log.exception("embedded broker on %s:%s failed", host, port)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name=f"amqtt-{port}", daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT_S):
        raise RuntimeError(f"the embedded broker did not start on {host}:{port}")
    if failure:
        thread.join(5)
        raise RuntimeError(f"the embedded broker could not start on {host}:{port}: {failure[0]}")
    log.info("embedded MQTT 3.1.1 broker (amqtt) listening on %s:%s", host, port)
    return EmbeddedBroker(host, port, loop, thread, holder["stop"])
