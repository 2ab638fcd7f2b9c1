"""The shared job store: PostgreSQL, used by any number of gateway and `gateway worker` processes on any hosts.

Claiming is one statement: `SELECT ... FOR UPDATE SKIP LOCKED` inside an UPDATE, so concurrent workers never wait
on each other's rows and never take the same job; a job whose worker died is claimable again once its lease has
expired (at least once; the idempotency key sent to the vendor makes the effect happen once). Jobs sharing an
ordering key are claimable one at a time, in order. Why not a queue library: procrastinate and pgqueuer both claim
with SKIP LOCKED too, but neither keeps a per-attempt history or per-key ordering in the shape the operation status
resource and the dead-letter tools need, and both would own the schema; this file is the whole claim protocol.
Connections come from a pool that checks them on checkout, so a restarted PostgreSQL is reconnected to by itself.
Accepting work commits durably; workers' bookkeeping (claim, lease, outcome) commits with `synchronous_commit=off`
(a server crash can forget the last outcomes, so those jobs run again: at least once, as promised).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .model import ACTIVE, LOST, DeadLetterFilter, Job, NewJob, Outcome, StoreDown, lost_attempt
from .sqlite import COLUMNS, row_to_job

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
  lease_owner TEXT, lease_until DOUBLE PRECISION,
  result JSONB, problem JSONB, history JSONB NOT NULL DEFAULT '[]'::jsonb, discard_reason TEXT
);
CREATE INDEX IF NOT EXISTS cg_jobs_claim ON cg_jobs (state, run_after);
CREATE INDEX IF NOT EXISTS cg_jobs_order ON cg_jobs (ordering_key, seq) WHERE ordering_key IS NOT NULL;
"""

CLAIM = f"""
WITH lost AS (  -- abandoned with no attempts left (it kills whatever runs it): a dead letter, not a loop
  SELECT seq FROM cg_jobs WHERE state = 'running' AND lease_until < %(now)s AND attempts >= max_attempts
  FOR UPDATE SKIP LOCKED),
buried AS (
  UPDATE cg_jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL, updated_at = %(now)s,
    problem = %(lost)s, history = cg_jobs.history || %(lost_attempt)s::jsonb
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
  attempts = cg_jobs.attempts + 1, updated_at = %(now)s
FROM next WHERE cg_jobs.seq = next.seq
RETURNING {", ".join("cg_jobs." + c.strip() for c in COLUMNS.split(","))}
"""


class PostgresJobStore:
    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self.min_size, self.max_size = min_size, max_size
        self.pool: Any = None

    async def start(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(self.dsn, min_size=self.min_size, max_size=self.max_size, open=False,
                                        check=AsyncConnectionPool.check_connection, timeout=5,
                                        kwargs={"autocommit": True, "connect_timeout": 3})
        await self.pool.open(wait=True, timeout=10)
        await self._exec(SCHEMA)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _exec(self, sql: str, params: Any = None, *, fetch: str = "none", relaxed: bool = False) -> Any:
        """One statement; `relaxed`: in a transaction committed without waiting for the WAL flush (bookkeeping)."""
        import psycopg
        import psycopg_pool

        if self.pool is None:
            raise StoreDown("the job store is not open")
        try:
            async with self.pool.connection() as conn:
                if relaxed:
                    async with conn.transaction():
                        await conn.execute("SET LOCAL synchronous_commit TO OFF")
                        cur = await conn.execute(sql, params)
                        return await _fetch(cur, fetch)
                cur = await conn.execute(sql, params)
                return await _fetch(cur, fetch)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreDown(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    async def enqueue(self, job: NewJob) -> Job:
        now = time.time()
        s = job.schedule
        row = await self._exec(
            f"INSERT INTO cg_jobs (id, kind, name, payload, client_id, vendor, ordering_key, dedupe_key, request_id, "
            f"state, max_attempts, base_s, cap_s, created_at, updated_at, run_after, expires_at) VALUES "
            f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (dedupe_key) DO NOTHING RETURNING {COLUMNS}",
            (job.id, job.kind, job.name, json.dumps(job.payload), job.client_id, job.vendor, job.ordering_key,
             job.dedupe_key, job.request_id, s.max_attempts, s.base_s, s.cap_s, now, now, now, now + s.max_age_s),
            fetch="one")
        if row is None:  # the dedupe key exists: the first job is the answer
            row = await self._exec(f"SELECT {COLUMNS} FROM cg_jobs WHERE dedupe_key = %s", (job.dedupe_key,),
                                   fetch="one")
        return row_to_job(row)

    async def claim(self, owner: str, lease_s: float, limit: int, vendors: set[str] | None = None) -> list[Job]:
        now = time.time()
        rows = await self._exec(CLAIM, {"now": now, "owner": owner, "lease": now + lease_s, "limit": limit,
                                        "lost": json.dumps(LOST), "lost_attempt": json.dumps([lost_attempt(now)]),
                                        "vendors": sorted(vendors) if vendors is not None else None},
                                fetch="all", relaxed=True)
        return [row_to_job(r) for r in rows]

    async def extend(self, job_id: str, owner: str, lease_s: float) -> bool:
        n = await self._exec("UPDATE cg_jobs SET lease_until = %s WHERE id = %s AND lease_owner = %s "
                             "AND state = 'running'", (time.time() + lease_s, job_id, owner), fetch="rowcount",
                             relaxed=True)
        return n == 1

    async def finish(self, job_id: str, owner: str, outcome: Outcome) -> None:
        now = time.time()
        state = "retrying" if outcome.state == "retry" else outcome.state
        # Retries past the job's age limit become dead letters, decided in the same statement.
        await self._exec(
            "UPDATE cg_jobs SET state = CASE WHEN %(state)s = 'retrying' AND %(after)s > expires_at THEN 'dead' "
            "ELSE %(state)s END, run_after = %(after)s, updated_at = %(now)s, lease_owner = NULL, "
            "lease_until = NULL, history = history || %(attempt)s::jsonb, result = %(result)s, "
            "problem = %(problem)s WHERE id = %(id)s AND lease_owner = %(owner)s AND state = 'running'",
            {"state": state, "after": now + outcome.retry_in_s, "now": now, "attempt": json.dumps([outcome.attempt]),
             "result": json.dumps(outcome.result) if outcome.result is not None else None,
             "problem": json.dumps(outcome.problem) if outcome.problem is not None else None,
             "id": job_id, "owner": owner}, relaxed=True)

    async def get(self, job_id: str) -> Job | None:
        row = await self._exec(f"SELECT {COLUMNS} FROM cg_jobs WHERE id = %s", (job_id,), fetch="one")
        return row_to_job(row) if row else None

    async def dead_letters(self, flt: DeadLetterFilter) -> list[Job]:
        where, params = ["state = 'dead'"], []
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
                             "expires_at = %s + (expires_at - created_at), problem = NULL WHERE id = %s "
                             "AND state = 'dead'", (now, now, now, job_id), fetch="rowcount")
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


async def _fetch(cur: Any, fetch: str) -> Any:
    if fetch == "one":
        return await cur.fetchone()
    if fetch == "all":
        return await cur.fetchall()
    if fetch == "rowcount":
        return cur.rowcount
    return None
