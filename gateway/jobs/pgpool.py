"""Connections to PostgreSQL for the job store: made when a call needs one, dropped the moment one fails.

    checkout  an idle connection (the most recently used; pinged first if it sat idle more than idle_check_s),
              else a new connection; at most max_size are out at once
    failure   a connection that broke (server restarted, network cut) is closed, and so is every idle one: they
              were connected to the same server and died with it
    recovery  the store's breaker (gateway/stores/guard.py) calls `drop_idle()` when PostgreSQL answers again, so the
              next call connects afresh instead of finding a dead connection first

Why not psycopg_pool: it keeps a fixed set of connection slots refilled by background tasks that back off 1 s, 2 s,
4 s... while the server is down, and a checkout checks stale connections one at a time with the same sleeps in
between. After PostgreSQL came back, each process kept failing for 10-15 s with requests waiting the full pool
timeout (5 s); this pool answers the first call after the restart with a fresh connection (measured with
bench/store_recovery.py, numbers in docs/store-faults.md). It is small because it needs to do little: no
background task, no reconnect loop, no maintenance; the breaker decides when to try again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus


class PgPool:
    def __init__(self, conninfo: str, *, max_size: int = 10, connect_timeout_s: float = 2.0,
                 setup_sql: str | None = None, idle_check_s: float = 1.0) -> None:
        self.conninfo = conninfo
        self.max_size = max_size
        # libpq counts connect_timeout in whole seconds, at least 2; the caller's own bound is usually shorter.
        self.connect_timeout = max(2, math.ceil(connect_timeout_s))
        self.setup_sql = setup_sql  # run once on each new connection (session settings)
        self.idle_check_s = idle_check_s
        self._idle: deque[tuple[Any, float]] = deque()
        self._slots = asyncio.Semaphore(max_size)
        self.closed = False
        self.connects = 0  # connections made so far (a benchmark and tests read it)

    async def _connect(self) -> Any:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                     connect_timeout=self.connect_timeout)
        self.connects += 1
        if self.setup_sql:
            await conn.execute(self.setup_sql)
        return conn

    async def _take(self) -> Any:
        while self._idle:
            conn, since = self._idle.pop()
            if conn.closed or conn.broken:
                continue
            if time.monotonic() - since > self.idle_check_s:
                try:
                    await conn.execute("")  # one round trip: is the server that made this connection still there?
                except psycopg.Error:
                    await _close(conn)
                    await self.drop_idle()
                    continue
            return conn
        return await self._connect()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for one statement or one transaction (autocommit unless `conn.transaction()`)."""
        if self.closed:
            raise psycopg.OperationalError("the job store is closed")
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            finally:
                await self._give_back(conn)

    async def _give_back(self, conn: Any) -> None:
        if conn.closed or conn.broken:
            await _close(conn)
            await self.drop_idle()  # the server went away: the idle ones are as dead as this one
        elif self.closed or conn.info.transaction_status != TransactionStatus.IDLE:
            await _close(conn)  # interrupted mid-transaction: never hand that state to the next caller
        else:
            self._idle.append((conn, time.monotonic()))

    async def drop_idle(self) -> None:
        """Close every idle connection; the next calls connect afresh."""
        idle, self._idle = list(self._idle), deque()
        await asyncio.gather(*(_close(conn) for conn, _ in idle))

    async def close(self) -> None:
        self.closed = True
        await self.drop_idle()


async def _close(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # closing a connection to a server that is gone: nothing left to do
        pass
