"""Opening a SQLite file that several processes share (the job store, the monitoring store)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A connection in WAL mode with durable commits; the busy timeout is `timeout_s`.

    Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked" at once (without
    waiting on the busy timeout) when two processes switch the same new file together; the switch is retried within
    `timeout_s`, so processes that start at the same moment all open the store.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    try:
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)  # a blocking open, run in a thread by both stores
                delay = min(delay * 2, 0.1)
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db
