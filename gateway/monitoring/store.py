"""Where monitoring keeps its state: the job store's database, so it survives restarts and is shared by every
gateway and `gateway worker` process that shares the jobs (one SQLite file on a host, or PostgreSQL anywhere).

Tables (all prefixed `cg_mon_`, next to the jobs table, created if missing):

    exceptions  reconciliation mismatches and failed synthetic runs, with both sides' snapshots (dead letters stay
                in the jobs table and are read from there)
    counts      additive per-minute and per-hour counts (series, slot): every process adds its own deltas
    baselines   the EWMA of each volume series per hour of the week
    alerts      every alert's state: firing or resolved, when it was last notified (dedupe across processes)
    silences    label matchers with an end time
    runs        reconciliation and synthetic runs: state, window, summary, and the checkpoint a paused run resumes
    state       small named values and leases (which process runs the evaluations and the schedules)

One connection of its own (SQLite, WAL, calls in a worker thread one at a time, as the job store does) or a small
pool of its own (PostgreSQL, gateway/jobs/pgpool.py, connecting when a statement needs it, so the gateway starts while
PostgreSQL is down and monitoring catches up when it answers): the job store is not touched. SQL is written once
with `?` placeholders and standard `ON CONFLICT` upserts, which both databases speak.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.stores.sqlite import connect as sqlite_connect

if TYPE_CHECKING:
    from gateway.settings import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS cg_mon_exceptions (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL, item_key TEXT NOT NULL,
  dedupe_key TEXT NOT NULL UNIQUE, state TEXT NOT NULL, title TEXT NOT NULL, suggested_action TEXT NOT NULL,
  snapshot TEXT NOT NULL, context TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL, last_seen_at DOUBLE PRECISION NOT NULL, occurrences INTEGER NOT NULL,
  resolved_at DOUBLE PRECISION, resolution TEXT, requeues INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS cg_mon_exceptions_state ON cg_mon_exceptions (state, created_at);
CREATE TABLE IF NOT EXISTS cg_mon_counts (
  series TEXT NOT NULL, slot BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, PRIMARY KEY (series, slot));
CREATE TABLE IF NOT EXISTS cg_mon_baselines (
  series TEXT NOT NULL, bucket INTEGER NOT NULL, mean DOUBLE PRECISION NOT NULL, samples INTEGER NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (series, bucket));
CREATE TABLE IF NOT EXISTS cg_mon_alerts (
  fingerprint TEXT PRIMARY KEY, family TEXT NOT NULL, name TEXT NOT NULL, severity TEXT NOT NULL,
  labels TEXT NOT NULL, annotations TEXT NOT NULL, links TEXT NOT NULL, state TEXT NOT NULL,
  starts_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, ends_at DOUBLE PRECISION,
  notified_state TEXT, notified_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS cg_mon_silences (
  id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at DOUBLE PRECISION NOT NULL,
  ends_at DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL, comment TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cg_mon_runs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
  started_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
  window_since DOUBLE PRECISION, window_until DOUBLE PRECISION, checkpoint TEXT, summary TEXT);
CREATE INDEX IF NOT EXISTS cg_mon_runs_name ON cg_mon_runs (kind, name, started_at);
CREATE TABLE IF NOT EXISTS cg_mon_state (
  name TEXT PRIMARY KEY, value TEXT NOT NULL, owner TEXT, until DOUBLE PRECISION);
"""


class MonitoringStore:
    """A thin async layer over the shared database: statements with `?` placeholders, transactions, leases."""

    def __init__(self, settings: Settings) -> None:
        jobs = settings.jobs
        self.dialect = jobs.backend
        self.path: Path | None = None
        self.dsn: str | None = None
        if jobs.backend == "postgres":
            assert jobs.postgres_dsn is not None
            self.dsn = jobs.postgres_dsn.get_secret_value()
        else:
            self.path = jobs.sqlite_path if jobs.sqlite_path.is_absolute() else settings.base_dir / jobs.sqlite_path
        self.jobs_table = "cg_jobs" if jobs.backend == "postgres" else "jobs"
        self._db: sqlite3.Connection | None = None
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._schema_ready = False

    async def start(self) -> None:
        if self.dialect == "postgres":
            # No connection yet: the gateway starts (unready) while PostgreSQL is down; the tables are created by
            # the first statement that reaches it (see _pg), and every tick tries again.
            from gateway.jobs.pgpool import PgPool

            assert self.dsn is not None
            self._pool = PgPool(self.dsn, max_size=4, connect_timeout_s=3)
            return

        def open_db() -> sqlite3.Connection:
            assert self.path is not None
            db = sqlite_connect(self.path, timeout_s=10)
            db.executescript(SCHEMA)
            return db

        self._db = await asyncio.to_thread(open_db)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
            self._schema_ready = False
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def run(self, statements: list[tuple[str, tuple[Any, ...]]], fetch: bool = False) -> list[tuple[Any, ...]]:
        """Execute `statements` in one transaction; the rows of the last one if `fetch`."""
        if self.dialect == "postgres":
            return await self._pg(statements, fetch)
        if self._db is None:
            raise RuntimeError("the monitoring store is not open")

        def work(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            if len(statements) > 1:
                db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    cur = db.execute(sql, params)
                    if fetch:
                        rows = cur.fetchall()
                if len(statements) > 1:
                    db.execute("COMMIT")
            except BaseException:
                if len(statements) > 1:
                    db.execute("ROLLBACK")
                raise
            return rows

        async with self._lock:
            job = asyncio.ensure_future(asyncio.to_thread(work, self._db))
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                await asyncio.wait([job])  # the thread is inside a transaction on the shared connection
                raise

    async def _pg(self, statements: list[tuple[str, tuple[Any, ...]]], fetch: bool) -> list[tuple[Any, ...]]:
        if self._pool is None:
            raise RuntimeError("the monitoring store is not open")
        if not self._schema_ready:
            await self._create_schema()
        rows: list[tuple[Any, ...]] = []
        async with self._pool.connection() as conn, conn.transaction():
            for sql, params in statements:
                cur = await conn.execute(sql.replace("?", "%s"), params)
                if fetch and cur.description is not None:
                    rows = await cur.fetchall()
        return rows

    async def _create_schema(self) -> None:
        async with self._lock:
            if self._schema_ready:
                return
            async with self._pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_lock(4711019)")  # two processes creating tables at once
                try:
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        await conn.execute(statement)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(4711019)")
            self._schema_ready = True

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self.run([(sql, params)], fetch=True)

    async def execute(self, sql: str, *params: Any) -> None:
        await self.run([(sql, params)])

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Hold the named lease for `ttl_s` (taking it if free or expired, renewing it if ours): True if ours."""
        now = time.time()
        rows = await self.run([
            ("INSERT INTO cg_mon_state (name, value, owner, until) VALUES (?, '', ?, ?) ON CONFLICT (name) DO UPDATE "
             "SET owner = excluded.owner, until = excluded.until WHERE cg_mon_state.until < ? "
             "OR cg_mon_state.owner = excluded.owner", (name, owner, now + ttl_s, now)),
            ("SELECT owner FROM cg_mon_state WHERE name = ?", (name,)),
        ], fetch=True)
        return bool(rows) and rows[0][0] == owner

    async def release(self, name: str, owner: str) -> None:
        await self.execute("UPDATE cg_mon_state SET until = 0 WHERE name = ? AND owner = ?", name, owner)

    async def get_value(self, name: str) -> str | None:
        rows = await self.fetch("SELECT value FROM cg_mon_state WHERE name = ?", name)
        return rows[0][0] if rows else None

    async def set_value(self, name: str, value: str) -> None:
        await self.execute("INSERT INTO cg_mon_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                           "SET value = excluded.value", name, value)

    async def add_counts(self, rows: list[tuple[str, int, float]]) -> None:
        """Add each (series, slot, value) to what other processes already added."""
        if rows:
            await self.run([("INSERT INTO cg_mon_counts (series, slot, value) VALUES (?, ?, ?) ON CONFLICT "
                             "(series, slot) DO UPDATE SET value = cg_mon_counts.value + excluded.value", r)
                            for r in rows])

    async def sum_counts(self, series: str, first: int, last: int) -> float:
        rows = await self.fetch("SELECT COALESCE(SUM(value), 0) FROM cg_mon_counts WHERE series = ? AND slot >= ? "
                                "AND slot <= ?", series, first, last)
        return float(rows[0][0] or 0)

    async def counts_like(self, prefix: str, first: int, last: int) -> dict[str, float]:
        """Sums per series whose name starts with `prefix`, over slots first..last."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.fetch("SELECT series, SUM(value) FROM cg_mon_counts WHERE series LIKE ? ESCAPE '\\' "
                                "AND slot >= ? AND slot <= ? GROUP BY series", pattern, first, last)
        return {name: float(value) for name, value in rows}
