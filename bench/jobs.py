"""Asynchronous work: how many jobs per second the stores move, and what a 202 costs next to a synchronous call.

Run: .venv/bin/python bench/jobs.py [--jobs 2000] [--concurrency 8] [--postgres DSN]

1. Store + workers, enqueue to done, with a no-op handler (the vendor costs nothing): SQLite (WAL, one process)
   and PostgreSQL (SKIP LOCKED; one worker process and two). Prints enqueues/s and jobs/s and, for PostgreSQL,
   commits and WAL flushes (fsyncs) per job: what durability costs, counted, so it does not depend on how busy
   the machine is the way the rates do.
2. The gateway (demo config, sandbox vendors in this process) answering POST /v2/orders synchronously and with
   `Prefer: respond-async`: p50/p99 over sequential calls, so the difference is the added cost of the 202 path
   (a durable write) against the vendor round trip it replaces.
PostgreSQL: --postgres DSN, else a private server of this run's own (tests/services.py PostgresProcess, fsync on),
so that other work on the machine's PostgreSQL neither slows it nor shows up in its counters.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.jobs.model import Job, NewJob, Outcome, RetrySchedule  # noqa: E402
from gateway.jobs.postgres import PostgresJobStore  # noqa: E402
from gateway.jobs.runner import JobRunner  # noqa: E402
from gateway.jobs.sqlite import SqliteJobStore  # noqa: E402


async def noop(job: Job) -> Outcome:
    return Outcome("succeeded", {"at": None, "ms": 0, "status": 200}, result={"status": 200})


async def through(make_store, jobs: int, concurrency: int, runners: int) -> tuple[float, float]:
    """(enqueues per second, jobs per second from first enqueue to last done)."""
    stores = [make_store() for _ in range(runners)]
    for s in stores:
        await s.start()
    started = time.perf_counter()
    for i in range(jobs):
        await stores[0].enqueue(NewJob("bench", "noop", {"i": i}, ordering_key=None,
                                       schedule=RetrySchedule(3, 0.1, 1.0)))
    enqueued = time.perf_counter() - started
    workers = []
    for s in stores:
        runner = JobRunner(None, s, concurrency, lease_s=30, poll_s=0.05, vendor_concurrency=concurrency)  # type: ignore[arg-type]
        runner.handlers["bench"] = noop
        runner.start()
        workers.append(runner)
    while (await stores[0].stats())["depth"] > 0:
        await asyncio.sleep(0.02)
    done = time.perf_counter() - started
    for runner in workers:
        await runner.stop()
    for s in stores:
        await s.close()
    return jobs / enqueued, jobs / done


def pg_counters(dsn: str) -> tuple[int, int]:
    """(commits in this database, WAL fsyncs of the whole server) so far."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        commits = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                               ).fetchone()[0]
        try:  # PostgreSQL 18 counts WAL I/O in pg_stat_io; 14-17 in pg_stat_wal
            fsyncs = conn.execute("SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'").fetchone()[0]
        except psycopg.errors.UndefinedColumn:
            fsyncs = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0]
    return int(commits), int(fsyncs)


def fresh_pg_database(dsn: str) -> str:
    import psycopg

    name = "cg_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def latency_202_vs_sync(calls: int, pg_dsn: str) -> None:
    import httpx

    from gateway.app import create_app
    from sandboxes.base import SandboxThread
    from tests.conftest import ServerThread, bearer, demo_settings
    from tests.jobsupport import ORDER

    sandboxes = SandboxThread().start()
    rows = []
    for name, headers, expect, store in (
            ("synchronous (vendor round trip)", {}, 201, {}),
            ("202, stored in SQLite", {"prefer": "respond-async"}, 202, {}),
            ("202, stored in PostgreSQL", {"prefer": "respond-async"}, 202,
             {"jobs.backend": "postgres", "jobs.postgres_dsn": pg_dsn})):
        app = create_app(demo_settings(sandboxes.urls, **{"jobs.workers": 0, **store,
                                                          "limits.plans.partner-plus.writes": {"rate": "1000/second"}}))
        server = ServerThread(app).start()
        client = httpx.Client(base_url=server.url, headers=bearer(app), timeout=30)
        times = []
        for i in range(calls + 20):
            t = time.perf_counter()
            r = client.post("/v2/orders", json=ORDER, headers=headers)
            if i >= 20:  # warm-up excluded
                times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == expect, r.text
        times.sort()
        rows.append((name, statistics.median(times), times[int(len(times) * 0.99) - 1]))
        server.stop()
    print(f"\n{'POST /v2/orders, sequential':42} {'p50 ms':>8} {'p99 ms':>8}")
    for name, p50, p99 in rows:
        print(f"{name:42} {p50:8.2f} {p99:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--postgres", help="a PostgreSQL DSN (default: as the tests find one)")
    args = parser.parse_args()
    server = None
    if args.postgres:
        dsn = args.postgres
    else:
        from tests.services import PostgresProcess

        server = PostgresProcess().start()
        dsn = server.dsn
    try:
        folder = Path(tempfile.mkdtemp(prefix="cg-bench-jobs-"))
        print(f"{args.jobs} no-op jobs, {args.concurrency} at a time per worker")
        print(f"{'store':40} {'enqueue/s':>10} {'jobs/s':>10} {'commits/job':>12} {'fsyncs/job':>11}")
        cases = [("SQLite (WAL), 1 worker", lambda: (lambda p: (lambda: SqliteJobStore(p)))(folder / "a.db"), 1,
                  None)]
        pg1, pg2 = fresh_pg_database(dsn), fresh_pg_database(dsn)
        cases += [("PostgreSQL, 1 worker", lambda: (lambda: PostgresJobStore(pg1)), 1, pg1),
                  ("PostgreSQL, 2 workers (SKIP LOCKED)", lambda: (lambda: PostgresJobStore(pg2)), 2, pg2)]
        for name, factory, runners, db in cases:  # each worker is a JobRunner on its own connection(s), one process
            before = pg_counters(db) if db else (0, 0)
            enq, rate = asyncio.run(through(factory(), args.jobs, args.concurrency, runners))
            counts = ""
            if db:
                time.sleep(1.0)  # backends report their I/O counters when they end or within a second
                after = pg_counters(db)
                counts = f" {(after[0] - before[0]) / args.jobs:12.2f} {(after[1] - before[1]) / args.jobs:11.2f}"
            print(f"{name:40} {enq:10.0f} {rate:10.0f}{counts}")
        latency_202_vs_sync(args.calls, fresh_pg_database(dsn))
    finally:
        if server is not None:
            server.stop("fast")


if __name__ == "__main__":
    main()
