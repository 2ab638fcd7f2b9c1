"""The transactional outbox: events stored in the job store, in the same transaction as what caused them.

An event row is written in the transaction that records its cause: the outcome of the job whose success it is
(`Outcome.staged`, written by the store's `finish`), or, for a synchronous operation, the webhook delivery jobs of
the same event (`store.stage`). Either both are on disk or neither is. The relay (relay.py) then publishes each row
to JetStream and deletes it once JetStream has acknowledged it; a relay that dies between the two publishes the
row again, and JetStream drops the second copy (`Nats-Msg-Id` = the event id, within the stream's duplicate
window). The row id is the event id, so a job that runs again after its event was stored adds nothing.

This module holds the SQL of both stores (gateway/jobs/sqlite.py, gateway/jobs/postgres.py call it): one table,
`outbox` (SQLite) or `cg_outbox` (PostgreSQL), in insertion order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from gateway.jobs.model import NewJob


@dataclass(frozen=True)
class OutboxEvent:
    id: str  # the CloudEvents id, also Nats-Msg-Id
    subject: str
    body: bytes  # the CloudEvents JSON, published as is
    created_at: float = field(default_factory=time.time)


@dataclass
class Staged:
    """What a success writes besides its own record: webhook delivery jobs and events for the backbone."""

    jobs: list[NewJob] = field(default_factory=list)
    events: list[OutboxEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.events)


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL, subject TEXT NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL
);
"""

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS cg_outbox (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT UNIQUE NOT NULL, subject TEXT NOT NULL, body BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL
);
"""


def _rows(found: list[Any]) -> list[OutboxEvent]:
    return [OutboxEvent(id_, subject, bytes(body), created) for id_, subject, body, created in found]


# -- SQLite: called inside the store's transaction, on its connection -------------------------------------------

def sqlite_insert(db: sqlite3.Connection, events: list[OutboxEvent]) -> None:
    db.executemany("INSERT OR IGNORE INTO outbox (id, subject, body, created_at) VALUES (?, ?, ?, ?)",
                   [(e.id, e.subject, e.body, e.created_at) for e in events])


def sqlite_pending(db: sqlite3.Connection, limit: int) -> list[OutboxEvent]:
    return _rows(db.execute("SELECT id, subject, body, created_at FROM outbox ORDER BY seq LIMIT ?",
                            (limit,)).fetchall())


def sqlite_delete(db: sqlite3.Connection, ids: list[str]) -> None:
    db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])


def sqlite_stats(db: sqlite3.Connection) -> dict[str, float]:
    depth, oldest = db.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    return {"depth": depth, "oldest_age_s": (time.time() - oldest) if oldest else 0.0}


# -- PostgreSQL: called with a connection, inside the caller's transaction where there is one ---------------------

async def pg_insert(conn: Any, events: list[OutboxEvent]) -> None:
    if not events:
        return
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO cg_outbox (id, subject, body, created_at) VALUES (%s, %s, %s, %s) "
                              "ON CONFLICT (id) DO NOTHING",
                              [(e.id, e.subject, e.body, e.created_at) for e in events])


async def pg_pending(conn: Any, limit: int) -> list[OutboxEvent]:
    cur = await conn.execute("SELECT id, subject, body, created_at FROM cg_outbox ORDER BY seq LIMIT %s", (limit,))
    return _rows(await cur.fetchall())


async def pg_delete(conn: Any, ids: list[str]) -> None:
    await conn.execute("DELETE FROM cg_outbox WHERE id = ANY(%s)", (ids,))


async def pg_stats(conn: Any) -> dict[str, float]:
    cur = await conn.execute("SELECT count(*), min(created_at) FROM cg_outbox")
    depth, oldest = await cur.fetchone()
    return {"depth": depth, "oldest_age_s": (time.time() - oldest) if oldest else 0.0}
