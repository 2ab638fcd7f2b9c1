"""The rate limiter's Redis connection (stores/redis_pipe.py) against real Redis servers: pipelined replies reach their
own callers, errors are Redis's own, passwords and databases work, a hung or restarted Redis fails fast and the
next call connects again, and the limiter survives Redis forgetting its script."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid

import pytest
import redis

from gateway.settings import SettingsError, load_settings
from gateway.stores.limiter import RedisLimiter, parse_rate
from gateway.stores.redis_pipe import RedisReplyError, RedisUnavailable, RespConnection, parse_url
from tests.services import RedisProcess


async def test_two_hundred_concurrent_calls_on_one_connection_each_get_their_own_reply(redis_url):
    conn = RespConnection(redis_url, timeout_s=2)
    try:
        values = [f"v{n}-{uuid.uuid4().hex}" for n in range(200)]
        replies = await asyncio.gather(*(conn.call("ECHO", v) for v in values))
        assert replies == [v.encode() for v in values]
    finally:
        await conn.close()


async def test_a_caller_who_gives_up_does_not_shift_the_replies_of_the_others(redis_url):
    conn = RespConnection(redis_url, timeout_s=2)
    try:
        await conn.call("PING")  # connected
        calls = [asyncio.create_task(conn.call("ECHO", f"r{n}")) for n in range(3)]
        await asyncio.sleep(0)  # the three commands are queued (sent at the end of this step)
        calls[1].cancel()
        assert await calls[0] == b"r0" and await calls[2] == b"r2"
        assert await conn.call("ECHO", "after") == b"after"
    finally:
        await conn.close()


async def test_an_error_is_redis_own_and_the_connection_stays_usable(redis_url):
    conn = RespConnection(redis_url, timeout_s=2)
    key = f"test:resp:{uuid.uuid4().hex}"
    try:
        await conn.call("SET", key, "text", "PX", 5000)
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await conn.call("LPUSH", key, "x")
        assert await conn.call("GET", key) == b"text"
    finally:
        await conn.close()


async def test_password_user_and_database_from_the_url():
    server = RedisProcess(args=("--requirepass", "s3cret-pw")).start()
    try:
        conn = RespConnection(f"redis://:s3cret-pw@127.0.0.1:{server.port}/3", timeout_s=2)
        assert await conn.call("SET", "k", "in-db-3") == b"OK"
        await conn.close()
        assert redis.Redis(port=server.port, password="s3cret-pw", db=3).get("k") == b"in-db-3"
        wrong = RespConnection(f"redis://:wrong-pw@127.0.0.1:{server.port}/0", timeout_s=2)
        with pytest.raises(RedisUnavailable) as refused:
            await wrong.call("PING")
        assert "WRONGPASS" in str(refused.value) and "wrong-pw" not in str(refused.value)
    finally:
        server.stop()


async def test_a_hung_redis_fails_the_call_within_its_timeout_and_the_next_call_connects_again(redis_url):
    conn = RespConnection(redis_url, timeout_s=0.1)
    admin = redis.Redis.from_url(redis_url)
    try:
        assert await conn.call("PING") == b"PONG"
        admin.execute_command("CLIENT", "PAUSE", 400, "ALL")  # Redis answers nobody for 0.4 s
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="no answer"):
            await conn.call("PING")
        assert time.monotonic() - started < 0.3
        admin.execute_command("CLIENT", "UNPAUSE")
        assert await conn.call("PING") == b"PONG"  # a new connection: the old one's reply order was unknown
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        await conn.close()


async def test_a_restarted_redis_is_unavailable_while_down_and_used_again_once_back(private_redis):
    conn = RespConnection(private_redis.url, timeout_s=0.2)
    try:
        assert await conn.call("PING") == b"PONG"
        private_redis.stop()
        with pytest.raises(RedisUnavailable):
            await conn.call("PING")
        private_redis.start()
        assert await conn.call("PING") == b"PONG"
    finally:
        await conn.close()


async def test_the_limiter_decides_on_after_redis_forgets_its_script(redis_url):
    limiter = RedisLimiter(redis_url, prefix=f"test:rl:{uuid.uuid4().hex}:", timeout_s=2)
    buckets = (parse_rate("burst", "1/hour", 2),)
    try:
        assert (await limiter.hit("c:a", buckets)).allowed
        redis.Redis.from_url(redis_url).script_flush()
        assert (await limiter.hit("c:a", buckets)).allowed  # NOSCRIPT: run with EVAL, which loads it again
        refused = await limiter.hit("c:a", buckets)
        assert not refused.allowed and refused.denied_by == "burst"
    finally:
        await limiter.close()


async def test_a_connection_closed_while_it_is_being_opened_is_not_left_open(redis_url):
    conn = RespConnection(redis_url, timeout_s=2)
    call = asyncio.create_task(conn.call("PING"))
    await asyncio.sleep(0)  # the call is connecting
    await conn.close()
    with pytest.raises(RedisUnavailable):
        await call
    assert conn.protocol is None
    with pytest.raises(RedisUnavailable, match="closed"):
        await conn.call("PING")


def test_urls_are_read_as_redis_py_reads_them_and_options_it_would_ignore_are_refused():
    address = parse_url("rediss://app:p%40ss@redis.internal:6380/2?ssl_cert_reqs=none&socket_timeout=5")
    assert (address.host, address.port, address.db, address.username, address.password, address.tls) == \
        ("redis.internal", 6380, 2, "app", "p@ss", True)
    assert address.ssl_context().verify_mode == ssl.CERT_NONE
    assert "p@ss" not in repr(address)
    assert parse_url("unix:///run/redis.sock?db=4").unix_path == "/run/redis.sock"
    with pytest.raises(ValueError, match="redis://"):
        parse_url("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="ssl_verify") as refused:
        parse_url("redis://:secret-pw@h/0?ssl_verify=1")
    assert "secret-pw" not in str(refused.value)


def test_the_settings_refuse_a_redis_url_the_limiter_cannot_honour():
    with pytest.raises(SettingsError, match="not supported"):
        load_settings(None, {"limits": {"backend": "redis"}, "redis_url": "redis://h/0?ssl_verify=1"})
