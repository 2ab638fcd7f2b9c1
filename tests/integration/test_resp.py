"""The rate limiter's Redis connection (gateway/resp.py) against real Redis servers: pipelined replies reach their
own callers, errors are Redis's own, passwords and databases work, a hung or restarted Redis fails fast and the
next call connects again, and the limiter survives Redis forgetting its script."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from gateway.ratelimit import RedisLimiter, parse_rate
from gateway.resp import RedisReplyError, RedisUnavailable, RespConnection
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
        await asyncio.sleep(0)  # the three commands are written
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


def test_only_redis_urls_are_accepted():
    with pytest.raises(ValueError, match="redis://"):
        RespConnection("http://127.0.0.1:6379", timeout_s=1)
