"""The embedded job store: one SQLite file in WAL mode on local disk, for one gateway process and its workers.

Every write (accepting work, a claim, an outcome, a replay, a discard) is committed with `synchronous=FULL` before
the caller hears back, so a 202 is only ever sent for work that is on disk, and no crash, power cut included, can
forget that an attempt started: the next attempt of that job knows it is not the first (model.py). Lease extensions
commit with `synchronous=NORMAL` (a lost one only makes a lease expire early). SQLite calls run in a worker thread,
one at a time, so the event loop never waits on the disk; each call is bounded by `timeout_s` (SQLite's busy
timeout too) and goes through the store's breaker (gateway/stores/guard.py), like the PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.events import outbox
from gateway.events.outbox import OutboxEvent, Staged
from gateway.stores.guard import StoreGuard
from gateway.stores.sqlite import connect as sqlite_connect

from .model import ACTIVE, LOST, DeadLetterFilter, Job, NewJob, Outcome, StoreDown, abandoned_attempt, replayed_entry

log = logging.getLogger("gateway.jobs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  kind TEXT NOT NULL, name TEXT NOT NULL, payload TEXT NOT NULL,
  client_id TEXT, vendor TEXT, ordering_key TEXT, dedupe_key TEXT UNIQUE, request_id TEXT,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
  base_s REAL NOT NULL, cap_s REAL NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, run_after REAL NOT NULL, expires_at REAL NOT NULL,
  lease_owner TEXT, lease_until REAL, started_at REAL,
  result TEXT, problem TEXT, history TEXT NOT NULL DEFAULT '[]', discard_reason TEXT
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(state, run_after);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs(ordering_key, seq);
"""

COLUMNS = ("id, kind, name, payload, client_id, vendor, ordering_key, request_id, state, attempts, max_attempts, "
           "created_at, updated_at, run_after, expires_at, result, problem, history, base_s, cap_s, discard_reason")


def _load(value: Any) -> Any:
    """JSON columns: text in SQLite, already decoded by psycopg from PostgreSQL's jsonb."""
    return value if value is None or isinstance(value, (dict, list)) else json.loads(value)


def row_to_job(row: tuple[Any, ...]) -> Job:
    (id_, kind, name, payload, client_id, vendor, key, request_id, state, attempts, max_attempts, created,
     updated, run_after, expires, result, problem, history, base_s, cap_s, reason) = row
    load = _load
    return Job(id_, kind, name, load(payload), client_id, vendor, key, request_id, state, attempts, max_attempts,
               created, updated, run_after, expires, load(result), load(problem), load(history) or [], base_s,
               cap_s, reason)


# Columns added after the first release, for files created before them.
MIGRATIONS = {"started_at": "ALTER TABLE jobs ADD COLUMN started_at REAL"}

CLAIMABLE = """
((state IN ('pending', 'retrying') AND run_after <= :now) OR (state = 'running' AND lease_until < :now))
AND (ordering_key IS NULL OR NOT EXISTS (
  SELECT 1 FROM jobs e WHERE e.ordering_key = jobs.ordering_key AND e.seq < jobs.seq
  AND e.state IN ('pending', 'retrying', 'running')))
"""


class SqliteJobStore:
    def __init__(self, path: Path, *, timeout_s: float = 1.0, probe_interval_s: float = 0.25) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.db: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()
        self._synchronous = "FULL"
        self.guard = StoreGuard("job store", timeout_s=timeout_s, probe_interval_s=probe_interval_s,
                                probe=self._probe, error=StoreDown)

    def _open(self) -> sqlite3.Connection:
        # The busy timeout is the caller's bound: a file locked by another process is a 503, not a long wait.
        db = sqlite_connect(self.path, self.timeout_s)
        try:
            db.executescript(SCHEMA + outbox.SQLITE_SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for column, ddl in MIGRATIONS.items():
                if column not in have:
                    db.execute(ddl)
        except BaseException:
            db.close()
            raise
        return db

    async def _open_once(self) -> None:
        if self.db is None:
            try:
                self.db = await asyncio.to_thread(self._open)
            except (sqlite3.Error, OSError) as exc:
                raise StoreDown(f"{self.path}: {exc}") from exc

    async def start(self) -> None:
        """Open (and create) the file; if it cannot be opened the store starts down and keeps trying."""
        try:
            await self.guard.call(self._open_once, timeout_s=max(self.timeout_s, 10.0))
        except StoreDown as exc:
            log.error("the job store (SQLite) cannot be opened: %s; starting without it: what needs it answers 503 "
                      "and /readyz says not ready until it opens", exc)

    async def _probe(self) -> None:
        await self._open_once()
        await self._locked(lambda db: db.execute("SELECT 1").fetchone(), durable=False)

    async def check(self) -> dict[str, Any]:
        return {"backend": "sqlite", **await self.guard.check()}

    async def close(self) -> None:
        await self.guard.close()
        if self.db is not None:
            db, self.db = self.db, None
            await asyncio.to_thread(db.close)

    async def _run(self, fn: Any, *args: Any, durable: bool = True) -> Any:
        return await self.guard.call(lambda: self._locked(fn, *args, durable=durable))

    async def _locked(self, fn: Any, *args: Any, durable: bool = True) -> Any:
        if self.db is None:
            raise StoreDown("the job store is not open")
        async with self.lock:
            work = asyncio.ensure_future(asyncio.to_thread(self._call, fn, "FULL" if durable else "NORMAL", *args))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # The thread is still inside its transaction on the shared connection: keep the lock until it is
                # done, or the next caller would start a transaction on top of it (or roll it back).
                await asyncio.wait([work])
                raise
            except (sqlite3.OperationalError, OSError) as exc:
                raise StoreDown(str(exc)) from exc

    def _call(self, fn: Any, synchronous: str, *args: Any) -> Any:
        assert self.db is not None
        if synchronous != self._synchronous:
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        return fn(self.db, *args)

    async def enqueue(self, job: NewJob) -> Job:
        def run(db: sqlite3.Connection) -> Job:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = _insert(db, job, time.time())
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return row_to_job(row)

        return await self._run(run)

    async def stage(self, staged: Staged) -> None:
        """Jobs (deduplicated by their keys) and outbox events, in one transaction."""
        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                _write_staged(db, staged, time.time())
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(run)

    async def outbox_pending(self, limit: int) -> list[OutboxEvent]:
        return await self._run(lambda db: outbox.sqlite_pending(db, limit), durable=False)

    async def outbox_done(self, ids: list[str]) -> None:
        # NORMAL: a lost delete only publishes the event again, which JetStream drops as a duplicate.
        await self._run(lambda db: outbox.sqlite_delete(db, ids), durable=False)

    async def outbox_stats(self) -> dict[str, float]:
        return await self._run(outbox.sqlite_stats, durable=False)

    async def claim(self, owner: str, lease_s: float, limit: int, vendors: set[str] | None = None) -> list[Job]:
        def run(db: sqlite3.Connection) -> list[Job]:
            now = time.time()
            vendor_clause = ""
            params: dict[str, Any] = {"now": now, "limit": limit}
            if vendors is not None:
                if not vendors:
                    return []
                names = [f":v{i}" for i in range(len(vendors))]
                vendor_clause = f" AND (vendor IS NULL OR vendor IN ({', '.join(names)}))"
                params.update({f"v{i}": v for i, v in enumerate(sorted(vendors))})
            db.execute("BEGIN IMMEDIATE")
            try:
                # Abandoned jobs with no attempts left are not run again: they become dead letters.
                for seq, attempts, started, updated, lease_until, worker in db.execute(
                        "SELECT seq, attempts, started_at, updated_at, lease_until, lease_owner FROM jobs WHERE "
                        "state = 'running' AND lease_until < ? AND attempts >= max_attempts", (now,)).fetchall():
                    lost = abandoned_attempt(attempts, started or updated, lease_until, worker)
                    db.execute("UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL, "
                               "updated_at = ?, problem = ?, history = json_insert(history, '$[#]', json(?)) "
                               "WHERE seq = ?", (now, json.dumps(LOST), json.dumps(lost), seq))
                found = db.execute(f"SELECT seq, state, attempts, started_at, updated_at, lease_until, lease_owner "
                                   f"FROM jobs WHERE {CLAIMABLE}{vendor_clause} ORDER BY seq LIMIT :limit",
                                   params).fetchall()
                rows = []
                for seq, state, attempts, started, updated, lease_until, worker in found:
                    if state == "running":  # its worker died: its attempt goes into the history as abandoned
                        lost = abandoned_attempt(attempts, started or updated, lease_until, worker)
                        db.execute("UPDATE jobs SET history = json_insert(history, '$[#]', json(?)) WHERE seq = ?",
                                   (json.dumps(lost), seq))
                    db.execute("UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, "
                               "attempts = attempts + 1, updated_at = ?, started_at = ? WHERE seq = ?",
                               (owner, now + lease_s, now, now, seq))
                    rows.append(db.execute(f"SELECT {COLUMNS} FROM jobs WHERE seq = ?", (seq,)).fetchone())
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [row_to_job(r) for r in rows]

        return await self._run(run)

    async def extend(self, job_id: str, owner: str, lease_s: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                             (time.time() + lease_s, job_id, owner))
            return cur.rowcount == 1

        return bool(await self._run(run, durable=False))

    async def finish(self, job_id: str, owner: str, outcome: Outcome) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT history, expires_at FROM jobs WHERE id = ? AND lease_owner = ? "
                                 "AND state = 'running'", (job_id, owner)).fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return False  # our lease expired and someone else has the job now: their outcome counts
                history = json.loads(row[0]) + [outcome.attempt]
                state, run_after = outcome.state, now
                if state == "retry":
                    state, run_after = "retrying", now + outcome.retry_in_s
                    if run_after > row[1]:
                        state = "dead"  # too old to keep trying
                if outcome.staged:
                    _write_staged(db, outcome.staged, now)
                db.execute("UPDATE jobs SET state = ?, run_after = ?, updated_at = ?, lease_owner = NULL, "
                           "lease_until = NULL, history = ?, result = ?, problem = ? WHERE id = ?",
                           (state, run_after, now, json.dumps(history),
                            json.dumps(outcome.result) if outcome.result is not None else None,
                            json.dumps(outcome.problem) if outcome.problem is not None else None, job_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return True

        return bool(await self._run(run))

    async def get(self, job_id: str) -> Job | None:
        def run(db: sqlite3.Connection) -> Job | None:
            row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return row_to_job(row) if row else None

        return await self._run(run)

    async def dead_letters(self, flt: DeadLetterFilter) -> list[Job]:
        def run(db: sqlite3.Connection) -> list[Job]:
            where: list[str] = ["state = 'dead'"]
            params: list[str | float] = []
            for column, value in (("vendor", flt.vendor), ("name", flt.operation)):
                if value:
                    where.append(f"{column} = ?")
                    params.append(value)
            if flt.since is not None:
                where.append("updated_at >= ?")
                params.append(flt.since)
            if flt.until is not None:
                where.append("updated_at <= ?")
                params.append(flt.until)
            if flt.error:
                where.append("(problem LIKE ? OR history LIKE ?)")
                params += [f"%{flt.error}%"] * 2
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
                              (*params, flt.limit)).fetchall()
            return [row_to_job(r) for r in rows]

        return await self._run(run)

    async def replay(self, job_id: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            now = time.time()
            # A replay gets a fresh budget of attempts and age; its history is kept.
            cur = db.execute("UPDATE jobs SET state = 'pending', run_after = ?, updated_at = ?, attempts = 0, "
                             "expires_at = ? + (expires_at - created_at), problem = NULL, "
                             "history = json_insert(history, '$[#]', json(?)) WHERE id = ? AND state = 'dead'",
                             (now, now, now, json.dumps(replayed_entry(now)), job_id))
            return cur.rowcount == 1

        return bool(await self._run(run))

    async def discard(self, job_id: str, reason: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE jobs SET state = 'discarded', discard_reason = ?, updated_at = ? WHERE id = ? "
                             "AND state = 'dead'", (reason, time.time(), job_id))
            return cur.rowcount == 1

        return bool(await self._run(run))

    async def stats(self) -> dict[str, float]:
        def run(db: sqlite3.Connection) -> dict[str, float]:
            active = "', '".join(ACTIVE)
            depth, oldest = db.execute(f"SELECT count(*), min(created_at) FROM jobs WHERE state IN ('{active}')"
                                       ).fetchone()
            dead = db.execute("SELECT count(*) FROM jobs WHERE state = 'dead'").fetchone()[0]
            return {"depth": depth, "oldest_age_s": (time.time() - oldest) if oldest else 0.0, "dead": dead}

        return await self._run(run)


def _insert(db: sqlite3.Connection, job: NewJob, now: float) -> tuple[Any, ...]:
    """Store a job inside the caller's transaction; the first job's row if its dedupe key is taken."""
    if job.dedupe_key is not None:
        row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE dedupe_key = ?", (job.dedupe_key,)).fetchone()
        if row is not None:
            return row
    s = job.schedule
    db.execute(
        "INSERT INTO jobs (id, kind, name, payload, client_id, vendor, ordering_key, dedupe_key, "
        "request_id, state, max_attempts, base_s, cap_s, created_at, updated_at, run_after, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
        (job.id, job.kind, job.name, json.dumps(job.payload), job.client_id, job.vendor, job.ordering_key,
         job.dedupe_key, job.request_id, s.max_attempts, s.base_s, s.cap_s, now, now, now, now + s.max_age_s))
    return db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job.id,)).fetchone()


def _write_staged(db: sqlite3.Connection, staged: Staged, now: float) -> None:
    for job in staged.jobs:
        _insert(db, job, now)
    outbox.sqlite_insert(db, staged.events)
