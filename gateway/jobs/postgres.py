"""The shared job store: PostgreSQL, used by any number of gateway and `gateway worker` processes on any hosts.

Claiming is one statement: `SELECT ... FOR UPDATE SKIP LOCKED` inside an UPDATE, so concurrent workers never wait
on each other's rows and never take the same job; a job whose worker died is claimable again once its lease has
expired, and that claim writes the dead worker's attempt into the history as `abandoned` (with the time its lease
ran out). Jobs sharing an ordering key are claimable one at a time, in order. Why not a queue library: procrastinate
and pgqueuer both claim with SKIP LOCKED too, but neither keeps a per-attempt history or per-key ordering in the
shape the operation status resource and the dead-letter tools need, and both would own the schema; this file is
the whole claim protocol.

Durability: every write (accepting work, a claim, a lease extension, an outcome, a replay) is one statement in its
own transaction, committed with `synchronous_commit = on` before the caller hears back: an immediate stop or crash of
PostgreSQL cannot forget that an attempt started, so a job is never run again as if it were its first attempt
(docs/store-faults.md has the cost, measured with bench/jobs.py). Work that needs several statements in one
transaction (an outbox row next to a job, say) runs through `self._run(fn)` with `async with conn.transaction()`.

Faults: each call is bounded by `timeout_s` and goes through the store's breaker (gateway/stores/guard.py);
connections come from pgpool.py, which drops dead ones at once and connects on demand, so the store is usable again
within a probe interval of PostgreSQL answering. If PostgreSQL cannot be reached at start-up the store starts down
and creates its schema when the probe first reaches it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from gateway.events import outbox
from gateway.events.outbox import OutboxEvent, Staged
from gateway.stores.guard import StoreGuard

from .model import ACTIVE, LOST, DeadLetterFilter, Job, NewJob, Outcome, StoreDown, replayed_entry
from .pgpool import PgPool
from .sqlite import COLUMNS, row_to_job

log = logging.getLogger("gateway.jobs")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS cg_jobs (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT UNIQUE NOT NULL,
  kind TEXT NOT NULL, name TEXT NOT NULL, payload JSONB NOT NULL,
  client_id TEXT, vendor TEXT, ordering_key TEXT, dedupe_key TEXT UNIQUE, request_id TEXT,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
  base_s DOUBLE PRECISION NOT NULL, cap_s DOUBLE PRECISION NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
  run_after DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
  lease_owner TEXT, lease_until DOUBLE PRECISION, started_at DOUBLE PRECISION,
  result JSONB, problem JSONB, history JSONB NOT NULL DEFAULT '[]'::jsonb, discard_reason TEXT
);
CREATE INDEX IF NOT EXISTS cg_jobs_claim ON cg_jobs (state, run_after);
CREATE INDEX IF NOT EXISTS cg_jobs_order ON cg_jobs (ordering_key, seq) WHERE ordering_key IS NOT NULL;
"""
# Columns added after the first release, for tables created before them (checked first: ALTER takes a lock).
MIGRATIONS = {"started_at": "ALTER TABLE cg_jobs ADD COLUMN IF NOT EXISTS started_at DOUBLE PRECISION"}


def _iso(column: str) -> str:
    """SQL for model.iso(): epoch seconds as 2024-05-01T12:00:00.123Z."""
    return f"""to_char(to_timestamp({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


# model.abandoned_attempt() in SQL: the attempt of a worker whose lease ran out before it reported an outcome.
ABANDONED = f"""jsonb_build_array(jsonb_build_object(
  'attempt', cg_jobs.attempts, 'outcome', 'abandoned', 'at', {_iso("coalesce(cg_jobs.started_at, cg_jobs.updated_at)")},
  'ms', NULL, 'status', NULL, 'lease_expired_at', {_iso("cg_jobs.lease_until")}, 'worker', cg_jobs.lease_owner,
  'error', 'worker lost: the lease expired with no outcome'))"""

CLAIM = f"""
WITH lost AS (  -- abandoned with no attempts left (it kills whatever runs it): a dead letter, not a loop
  SELECT seq FROM cg_jobs WHERE state = 'running' AND lease_until < %(now)s AND attempts >= max_attempts
  FOR UPDATE SKIP LOCKED),
buried AS (
  UPDATE cg_jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL, updated_at = %(now)s,
    problem = %(lost)s, history = cg_jobs.history || {ABANDONED}
  FROM lost WHERE cg_jobs.seq = lost.seq
  RETURNING cg_jobs.seq),
next AS (
  SELECT seq FROM cg_jobs j
  WHERE ((j.state IN ('pending', 'retrying') AND j.run_after <= %(now)s)
         OR (j.state = 'running' AND j.lease_until < %(now)s AND j.attempts < j.max_attempts))
    AND (%(vendors)s::text[] IS NULL OR j.vendor IS NULL OR j.vendor = ANY(%(vendors)s::text[]))
    AND (j.ordering_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM cg_jobs e WHERE e.ordering_key = j.ordering_key AND e.seq < j.seq
        AND e.state IN ('pending', 'retrying', 'running')))
  ORDER BY j.seq
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED)
UPDATE cg_jobs SET state = 'running', lease_owner = %(owner)s, lease_until = %(lease)s,
  attempts = cg_jobs.attempts + 1, updated_at = %(now)s, started_at = %(now)s,
  history = CASE WHEN cg_jobs.state = 'running' THEN cg_jobs.history || {ABANDONED} ELSE cg_jobs.history END
FROM next WHERE cg_jobs.seq = next.seq
RETURNING {", ".join("cg_jobs." + c.strip() for c in COLUMNS.split(","))}
"""

INSERT_JOB = (f"INSERT INTO cg_jobs (id, kind, name, payload, client_id, vendor, ordering_key, dedupe_key, "
              f"request_id, state, max_attempts, base_s, cap_s, created_at, updated_at, run_after, expires_at) "
              f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s) "
              f"ON CONFLICT (dedupe_key) DO NOTHING RETURNING {COLUMNS}")


def _job_params(job: NewJob, now: float) -> tuple[Any, ...]:
    s = job.schedule
    return (job.id, job.kind, job.name, json.dumps(job.payload), job.client_id, job.vendor, job.ordering_key,
            job.dedupe_key, job.request_id, s.max_attempts, s.base_s, s.cap_s, now, now, now, now + s.max_age_s)


async def _write_staged(conn: Any, staged: Staged, now: float) -> None:
    """Inside the caller's transaction: the staged jobs (a taken dedupe key adds nothing) and events."""
    for job in staged.jobs:
        await conn.execute(INSERT_JOB, _job_params(job, now))
    await outbox.pg_insert(conn, staged.events)


# What means "PostgreSQL cannot be reached" (as opposed to a bug in a statement): a 503, and the breaker opens.
UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


class PostgresJobStore:
    def __init__(self, dsn: str, max_size: int = 10, *, timeout_s: float = 1.0,
                 probe_interval_s: float = 0.25) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.pool: PgPool | None = None
        self.schema_ready = False
        self.guard = StoreGuard("job store", timeout_s=timeout_s, probe_interval_s=probe_interval_s,
                                probe=self._probe, error=StoreDown, on_up=self._on_up)

    def _session_sql(self) -> str:
        """Each connection's settings: durable commits (whatever the server's default), and no statement outliving
        the caller's bound (the server stops it and rolls it back: nothing half-done). SET rather than the startup
        `options` parameter, which connection poolers such as PgBouncer refuse."""
        return f"SET synchronous_commit = on; SET statement_timeout = {int(self.timeout_s * 1000)}"

    async def start(self) -> None:
        """Open the store. If PostgreSQL cannot be reached, the store starts down (every call a fast 503) and the
        breaker's probe creates the schema as soon as PostgreSQL answers: this never raises for an outage."""
        self.pool = PgPool(self.dsn, max_size=self.max_size, connect_timeout_s=self.timeout_s,
                           setup_sql=self._session_sql())
        try:
            await self.guard.call(self._migrate, timeout_s=max(self.timeout_s, 10.0))
        except StoreDown as exc:
            log.error("the job store (PostgreSQL) cannot be reached at start-up: %s; starting without it: what "
                      "needs it answers 503 and /readyz says not ready until it answers", exc)

    async def close(self) -> None:
        await self.guard.close()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def check(self) -> dict[str, Any]:
        return {"backend": "postgres", **await self.guard.check()}

    async def _probe(self) -> None:
        """Is PostgreSQL there? A connection of its own, not the pool's (whose idle ones may be dead)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=2)
            try:
                await conn.execute("SELECT 1")
            finally:
                await conn.close()
        except UNREACHABLE as exc:
            raise StoreDown(_first_line(exc)) from exc

    async def _on_up(self) -> None:
        if self.pool is not None:
            await self.pool.drop_idle()  # connected to the server that went away: dead, every one of them
        if not self.schema_ready:
            await self._migrate()

    async def _migrate(self) -> None:
        async def run(conn: Any) -> None:
            await conn.execute("SET statement_timeout = 0")  # a first start on a big table may take a while
            try:
                await conn.execute(SCHEMA + outbox.PG_SCHEMA)
                cur = await conn.execute("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'cg_jobs' AND table_schema = current_schema()")
                have = {r[0] for r in await cur.fetchall()}
                for column, ddl in MIGRATIONS.items():
                    if column not in have:
                        await conn.execute(ddl)
            finally:
                await conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")
            self.schema_ready = True

        await self._on_conn(run)

    async def _on_conn(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """`fn(conn)` on a pooled connection; an unreachable server becomes StoreDown."""
        if self.pool is None:
            raise StoreDown("the job store is not open")
        try:
            async with self.pool.connection() as conn:
                return await fn(conn)
        except UNREACHABLE as exc:
            raise StoreDown(_first_line(exc)) from exc

    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """One unit of work, bounded and through the breaker. `fn` runs in autocommit (each statement its own
        durable transaction) unless it opens `conn.transaction()` itself."""
        async def work() -> T:
            if not self.schema_ready:  # PostgreSQL was unreachable at start-up and this is the first call to reach it
                await self._migrate()
            return await self._on_conn(fn)

        return await self.guard.call(work)

    async def _exec(self, sql: str, params: Any = None, *, fetch: str = "none") -> Any:
        async def run(conn: Any) -> Any:
            cur = await conn.execute(sql, params)
            if fetch == "one":
                return await cur.fetchone()
            if fetch == "all":
                return await cur.fetchall()
            return cur.rowcount if fetch == "rowcount" else None

        return await self._run(run)

    async def enqueue(self, job: NewJob) -> Job:
        row = await self._exec(INSERT_JOB, _job_params(job, time.time()), fetch="one")
        if row is None:  # the dedupe key exists: the first job is the answer
            row = await self._exec(f"SELECT {COLUMNS} FROM cg_jobs WHERE dedupe_key = %s", (job.dedupe_key,),
                                   fetch="one")
        return row_to_job(row)

    async def stage(self, staged: Staged) -> None:
        """Jobs (deduplicated by their keys) and outbox events, in one transaction."""
        async def run(conn: Any) -> None:
            async with conn.transaction():
                await _write_staged(conn, staged, time.time())

        await self._run(run)

    async def outbox_pending(self, limit: int) -> list[OutboxEvent]:
        return await self._run(lambda conn: outbox.pg_pending(conn, limit))

    async def outbox_done(self, ids: list[str]) -> None:
        await self._run(lambda conn: outbox.pg_delete(conn, ids))

    async def outbox_stats(self) -> dict[str, float]:
        return await self._run(outbox.pg_stats)

    async def claim(self, owner: str, lease_s: float, limit: int, vendors: set[str] | None = None) -> list[Job]:
        now = time.time()
        rows = await self._exec(CLAIM, {"now": now, "owner": owner, "lease": now + lease_s, "limit": limit,
                                        "lost": json.dumps(LOST),
                                        "vendors": sorted(vendors) if vendors is not None else None},
                                fetch="all")
        return [row_to_job(r) for r in rows]

    async def extend(self, job_id: str, owner: str, lease_s: float) -> bool:
        n = await self._exec("UPDATE cg_jobs SET lease_until = %s WHERE id = %s AND lease_owner = %s "
                             "AND state = 'running'", (time.time() + lease_s, job_id, owner), fetch="rowcount")
        return n == 1

    async def finish(self, job_id: str, owner: str, outcome: Outcome) -> bool:
        """Record how an attempt ended; False when the lease was no longer ours (the job was claimed again)."""
        now = time.time()
        state = "retrying" if outcome.state == "retry" else outcome.state
        # Retries past the job's age limit become dead letters, decided in the same statement.
        sql = ("UPDATE cg_jobs SET state = CASE WHEN %(state)s = 'retrying' AND %(after)s > expires_at THEN 'dead' "
               "ELSE %(state)s END, run_after = %(after)s, updated_at = %(now)s, lease_owner = NULL, "
               "lease_until = NULL, history = history || %(attempt)s::jsonb, result = %(result)s, "
               "problem = %(problem)s WHERE id = %(id)s AND lease_owner = %(owner)s AND state = 'running'")
        params = {"state": state, "after": now + outcome.retry_in_s, "now": now,
                  "attempt": json.dumps([outcome.attempt]),
                  "result": json.dumps(outcome.result) if outcome.result is not None else None,
                  "problem": json.dumps(outcome.problem) if outcome.problem is not None else None,
                  "id": job_id, "owner": owner}
        staged = outcome.staged
        if not staged:
            return bool(await self._exec(sql, params, fetch="rowcount") == 1)

        async def run(conn: Any) -> bool:
            async with conn.transaction():  # the outcome and what it caused (webhook jobs, events), or neither
                cur = await conn.execute(sql, params)
                if cur.rowcount != 1:
                    return False
                await _write_staged(conn, staged, now)
                return True

        return await self._run(run)

    async def get(self, job_id: str) -> Job | None:
        row = await self._exec(f"SELECT {COLUMNS} FROM cg_jobs WHERE id = %s", (job_id,), fetch="one")
        return row_to_job(row) if row else None

    async def dead_letters(self, flt: DeadLetterFilter) -> list[Job]:
        where: list[str] = ["state = 'dead'"]
        params: list[str | float] = []
        for column, value in (("vendor", flt.vendor), ("name", flt.operation)):
            if value:
                where.append(f"{column} = %s")
                params.append(value)
        if flt.since is not None:
            where.append("updated_at >= %s")
            params.append(flt.since)
        if flt.until is not None:
            where.append("updated_at <= %s")
            params.append(flt.until)
        if flt.error:
            where.append("(problem::text ILIKE %s OR history::text ILIKE %s)")
            params += [f"%{flt.error}%"] * 2
        rows = await self._exec(f"SELECT {COLUMNS} FROM cg_jobs WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s",
                                (*params, flt.limit), fetch="all")
        return [row_to_job(r) for r in rows]

    async def replay(self, job_id: str) -> bool:
        now = time.time()
        n = await self._exec("UPDATE cg_jobs SET state = 'pending', run_after = %s, updated_at = %s, attempts = 0, "
                             "expires_at = %s + (expires_at - created_at), problem = NULL, "
                             "history = history || %s::jsonb WHERE id = %s AND state = 'dead'",
                             (now, now, now, json.dumps([replayed_entry(now)]), job_id), fetch="rowcount")
        return n == 1

    async def discard(self, job_id: str, reason: str) -> bool:
        n = await self._exec("UPDATE cg_jobs SET state = 'discarded', discard_reason = %s, updated_at = %s "
                             "WHERE id = %s AND state = 'dead'", (reason, time.time(), job_id), fetch="rowcount")
        return n == 1

    async def stats(self) -> dict[str, float]:
        row = await self._exec("SELECT count(*) FILTER (WHERE state = ANY(%s)), "
                               "min(created_at) FILTER (WHERE state = ANY(%s)), "
                               "count(*) FILTER (WHERE state = 'dead') FROM cg_jobs",
                               (list(ACTIVE), list(ACTIVE)), fetch="one")
        depth, oldest, dead = row
        return {"depth": depth, "oldest_age_s": (time.time() - oldest) if oldest else 0.0, "dead": dead}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
