"""The transactional outbox and its relay against a real nats-server (tests/natssupport.py) and both job stores.

An event is stored in the transaction of the outcome that caused it, or not at all; a relay killed between the
store and the publish, or between the publish and the delete, leaves every event on the backbone exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from gateway.events.outbox import OutboxEvent, Staged
from gateway.events.service import EventBus
from gateway.jobs.model import NewJob, Outcome
from gateway.jobs.postgres import PostgresJobStore
from gateway.jobs.sqlite import SqliteJobStore
from gateway.settings import EventSettings
from tests.natssupport import nats_url, poll, read_subject, within


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteJobStore(tmp_path / "jobs.db", timeout_s=5)
        await s.start()
        yield s
        await s.close()
        return
    admin = request.getfixturevalue("postgres_dsn")
    name = "cg_events_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    s = PostgresJobStore(psycopg.conninfo.make_conninfo(admin, dbname=name), timeout_s=5)
    await s.start()
    yield s
    await s.close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def settings(**overrides: Any) -> EventSettings:
    tag = uuid.uuid4().hex[:8]
    values = {"enabled": True, "url": nats_url(), "subject_prefix": f"t{tag}", "stream_prefix": f"T{tag.upper()}",
              "relay_poll_s": 0.05, "publish_timeout_s": 2.0, "triggers": [{"subject": f"t{tag}.test.>",
                                                                            "source": "test"}],
              "trigger_stream": f"T{tag.upper()}_TEST"}
    values.update(overrides)
    return EventSettings.model_validate(values)


def event(cfg: EventSettings, n: int) -> OutboxEvent:
    """An event on the settings' test subject (the trigger stream holds it: no contract needed)."""
    eid = f"evt_{uuid.uuid4().hex[:24]}"
    body = {"specversion": "1.0", "id": eid, "source": "/test", "type": "thing.happened", "data": {"n": n}}
    return OutboxEvent(eid, f"{cfg.subject_prefix}.test.thing.v1", orjson.dumps(body))


async def running_job(store: Any, owner: str = "w1") -> Any:
    job = NewJob("operation", "orders.v2.createOrder", {"params": {}}, vendor="woocommerce")
    await store.enqueue(job)
    [claimed] = await store.claim(owner, 30, 1)
    return claimed


async def test_an_event_is_stored_with_the_outcome_that_caused_it_or_not_at_all(store: Any) -> None:
    cfg = settings()
    job = await running_job(store)
    ev = event(cfg, 1)
    delivery = NewJob("webhook_out", "partner-1", {"event": {"id": ev.id}}, dedupe_key=f"out:partner-1:{ev.id}")
    # Someone else's lease (ours expired): the outcome is not recorded, and neither are its event and delivery.
    lost = Outcome("succeeded", {"at": None}, result={"status": 201}, staged=Staged([delivery], [ev]))
    assert await store.finish(job.id, "another-worker", lost) is False
    assert await store.outbox_pending(10) == []
    assert (await store.get(job.id)).state == "running"
    # Our lease: the outcome, the delivery job and the event, together.
    assert await store.finish(job.id, "w1", lost) is True
    assert (await store.get(job.id)).state == "succeeded"
    assert [e.id for e in await store.outbox_pending(10)] == [ev.id]
    assert (await store.stats())["depth"] == 1  # the webhook delivery job
    # The same event staged again (a job that ran twice) adds nothing.
    await store.stage(Staged([delivery], [ev]))
    assert [e.id for e in await store.outbox_pending(10)] == [ev.id]
    assert (await store.stats())["depth"] == 1


class CrashAfterPublish(Exception):
    """Stands for the relay's process dying after JetStream acknowledged, before the rows were deleted."""


async def test_a_relay_killed_between_store_and_publish_or_before_the_delete_publishes_each_event_once(
        store: Any) -> None:
    cfg = settings()
    first = [event(cfg, n) for n in range(5)]
    await store.stage(Staged([], first))  # stored; no relay running yet (it died before publishing)

    # A relay that dies after JetStream acknowledged the batch and before it deleted the rows.
    dying = EventBus(cfg, store)
    real_done = store.outbox_done

    async def crash(ids: list[str]) -> None:
        raise CrashAfterPublish(f"killed before deleting {len(ids)} rows")

    store.outbox_done = crash
    try:
        assert await within("the first relay's publish", dying.relay.step()) == 5  # acknowledged by JetStream
        await within("the first relay's delete (it never happens)", dying.relay.flush())
    finally:
        store.outbox_done = real_done
        await within("closing the first relay's connection", dying.stop())
    assert len(await store.outbox_pending(100)) == 5  # still there: published, never deleted

    # More events arrive, then a new relay starts: it publishes all ten rows; JetStream drops the five repeats.
    second = [event(cfg, n) for n in range(5, 10)]
    await store.stage(Staged([], second))
    bus = EventBus(cfg, store)
    await bus.start()
    try:
        await poll("the outbox to drain", lambda: _empty(store))
    finally:
        await within("the relay to stop", bus.stop())
    got = await read_subject(cfg.url, f"{cfg.subject_prefix}.test.>", expect=10)
    assert [e["id"] for e in got] == [e.id for e in first + second]  # once each, in the order stored
    assert [e["data"]["n"] for e in got] == list(range(10))


async def _empty(store: Any) -> bool:
    return not await store.outbox_pending(1)


async def test_events_wait_in_the_outbox_while_nats_is_unreachable_and_drain_after(store: Any) -> None:
    from tests.natssupport import NatsProcess

    broker = NatsProcess().start()
    try:
        await _outage(store, broker)
    finally:
        broker.stop()


OUTAGE_S = 30.0  # how long the broker is down (the figure)
RATE = 100  # events per second stored meanwhile


async def _outage(store: Any, broker: Any) -> None:
    cfg = settings(url=broker.url, publish_timeout_s=0.5)
    bus = EventBus(cfg, store)
    await bus.start()
    stored: list[OutboxEvent] = []
    loop = asyncio.get_running_loop()

    async def produce(seconds: float) -> None:
        """Events at RATE per second for `seconds`, each stored and handed to the relay as a request would."""
        started = loop.time()
        for i in range(int(seconds * RATE)):
            ev = event(cfg, len(stored))
            await store.stage(Staged([], [ev]))
            stored.append(ev)
            bus.notify([ev])
            ahead = started + (i + 1) / RATE - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)  # the load's fixed rate, not a wait for anything

    try:
        await within("the first events", produce(1.0))
        await poll("the first events to be published", lambda: _empty(store))
        broker.stop()
        await within("events during the outage", produce(OUTAGE_S), timeout_s=OUTAGE_S * 3)
        depth = (await store.outbox_stats())["depth"]
        assert depth >= OUTAGE_S * RATE * 0.9, f"the outbox should hold what could not be published, holds {depth}"
        broker.start()
        await within("events after the outage", produce(1.0))
        await poll("the outbox to drain after the outage", lambda: _empty(store), timeout_s=60)
    finally:
        await within("the relay to stop", bus.stop())
    total = int(RATE * (OUTAGE_S + 2))
    got = await read_subject(cfg.url, f"{cfg.subject_prefix}.test.>", expect=total, timeout_s=60)
    ids = [e["id"] for e in got]
    assert len(ids) == len(set(ids)) == total, "nothing lost, nothing doubled"
    position = {e.id: n for n, e in enumerate(stored)}
    order = [position[i] for i in ids]
    runs, start = [], 0
    for k in range(1, len(order) + 1):
        if k == len(order) or order[k] != order[k - 1] + 1:
            runs.append((order[start], order[k - 1]))
            start = k
    assert order == sorted(order), f"in the order stored, not in runs {runs[:20]}"
