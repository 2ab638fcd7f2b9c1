"""The test suite's own promise: it finds or starts real Redis and PostgreSQL servers instead of skipping."""

from __future__ import annotations

import psycopg
import redis


def test_redis_is_reachable(redis_url):
    """A Redis answers PING at the URL the suite uses."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    assert client.ping() is True


def test_private_redis_can_stop_and_start_again(private_redis):
    """Outage tests get a server they can stop and bring back on the same port."""
    client = redis.Redis.from_url(private_redis.url, socket_timeout=1)
    client.set("k", "v")
    private_redis.stop()
    private_redis.start()
    assert client.ping() is True


def test_postgres_is_reachable(postgres_dsn):
    """A PostgreSQL answers queries at the DSN the suite uses."""
    with psycopg.connect(postgres_dsn, connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
