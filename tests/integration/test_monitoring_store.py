"""Monitoring state lives in the job store's database: shared by every gateway process and kept across restarts,
on SQLite (one host) and PostgreSQL (any number of hosts). Two stores here are two gateway processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from gateway.monitoring.exceptions import ExceptionQueue
from gateway.monitoring.store import MonitoringStore
from tests.conftest import UNREACHABLE, demo_settings

URLS = UNREACHABLE


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        yield demo_settings(URLS, **{"jobs.sqlite_path": str(tmp_path / "jobs.db")})
        return
    admin = request.getfixturevalue("postgres_dsn")
    name = "cg_mon_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield demo_settings(URLS, **{"jobs.backend": "postgres",
                                 "jobs.postgres_dsn": psycopg.conninfo.make_conninfo(admin, dbname=name)})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def test_two_processes_share_counts_leases_and_exceptions_and_a_restart_keeps_them(settings):
    async def scenario() -> None:
        one, two = MonitoringStore(settings), MonitoringStore(settings)
        await asyncio.gather(one.start(), two.start())  # both create the tables at once: no error
        # Counts add up across processes, per series and slot.
        await asyncio.gather(one.add_counts([("m|req|x", 7, 3.0), ("h|up", 1, 1.0)]),
                             two.add_counts([("m|req|x", 7, 2.0), ("m|req|x", 8, 1.0)]))
        assert await one.sum_counts("m|req|x", 7, 7) == 5.0 and await two.sum_counts("m|req|x", 0, 9) == 6.0
        assert await one.counts_like("m|req|", 0, 9) == {"m|req|x": 6.0}
        # One leader at a time; the other takes over only once the lease expired or was released.
        assert await one.lease("monitoring:leader", "one", 30) and not await two.lease("monitoring:leader", "two", 30)
        assert await one.lease("monitoring:leader", "one", 30)  # renewing its own
        await one.release("monitoring:leader", "one")
        assert await two.lease("monitoring:leader", "two", 0.2) and not await one.lease("monitoring:leader", "one", 5)
        await asyncio.sleep(0.3)
        assert await one.lease("monitoring:leader", "one", 5)
        # An exception recorded by one process is the same item when the other sees it again.
        q1, q2 = ExceptionQueue(None, one), ExceptionQueue(None, two)  # type: ignore[arg-type]
        first, new = await q1.record("reconciliation", "rule", "left:ord_1", "reconcile:rule:left:ord_1", "t", "a",
                                     {"left": {"id": "ord_1"}}, {"rule": "rule"}, time.time())
        again, new_again = await q2.record("reconciliation", "rule", "left:ord_1", "reconcile:rule:left:ord_1", "t",
                                           "a", {"left": {"id": "ord_1"}}, {"rule": "rule"}, time.time())
        assert new and not new_again and again == first
        assert await q2.open_for("reconciliation", "rule") == {"left:ord_1": first}
        await asyncio.gather(one.close(), two.close())

        restarted = MonitoringStore(settings)
        await restarted.start()
        rows = await restarted.fetch("SELECT occurrences, state FROM cg_mon_exceptions WHERE id = ?", first)
        assert [tuple(r) for r in rows] == [(2, "open")]
        assert await restarted.sum_counts("m|req|x", 0, 9) == 6.0
        await restarted.close()

    asyncio.run(scenario())
