"""Overload (issue 21): a flood against a gateway with a small admission limit, over real sockets.

The gateway runs as `gateway serve` in its own process, in front of an upstream in a process of its own. With an
upstream that answers at once, the gateway's CPU is the bottleneck: one client floods with many connections, a
second client sends one request at a time meanwhile. Proven: shed requests are 503 `overloaded` with Retry-After
and never reach a policy or the vendor; health answers throughout; the second client keeps its share; the limit the
full CPU lowered comes back once the flood stops. With a slow upstream, many requests at once are not overload:
none is shed and the limit stays where it was.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT
from tests.services import free_port, stop_process

CONTRACT = {
    "openapi": "3.1.0",
    "info": {"title": "Things", "version": "1.0.0"},
    "servers": [{"url": "/v1"}],
    "x-gateway": {"api": "things", "limits": {"daily": {"quota": "1000000/day"}}},
    "security": [{"bearer": ["things:read"]}],
    "components": {"securitySchemes": {"bearer": {"type": "oauth2", "flows": {"clientCredentials": {
        "tokenUrl": "/oauth/token", "scopes": {"things:read": "read"}}}}}},
    "paths": {"/things/{id}": {"get": {
        "operationId": "getThing",
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "x-gateway": {"route": "slow.forward", "upstream_path": "/things/{id}"},
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
                      "503": {"description": "overloaded"}}}},
              "/things": {"post": {
                  "operationId": "createThing",
                  "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                  "x-gateway": {"route": "slow.forward", "upstream_path": "/things"},
                  "responses": {"200": {"description": "ok",
                                        "content": {"application/json": {"schema": {"type": "object"}}}},
                                "503": {"description": "overloaded"}}}}},
}


def start_gateway(tmp_path: Path, upstream_delay_s: float, admission: dict[str, Any]):
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.slow_upstream", str(upstream_port),
                                 str(upstream_delay_s)], cwd=ROOT)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    (tmp_path / "things.yaml").write_text(yaml.safe_dump(CONTRACT))
    config = {
        "contracts": [str(tmp_path / "things.yaml")],
        "vendors": {"slow": {"adapter": "http", "base_url": upstream_url}},
        "auth": {"builtin": {"enabled": True, "keys_dir": str(tmp_path / "keys"), "generate_missing_keys": True}},
        "limits": {"backend": "memory"},
        "jobs": {"sqlite_path": str(tmp_path / "jobs.db"), "workers": 0},
        "observability": {"logging": {"output": str(tmp_path / "gateway.log")}},
        "request": {"admission": admission},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))

    def token(client: str, scopes: str) -> str:
        return subprocess.run([sys.executable, "-m", "gateway", "token", "--config", str(path), "--client", client,
                               "--scopes", scopes], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()

    wait_ready(upstream_url + "/_seen", upstream)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/readyz", proc)
        tokens = {"flood": token("flooder", "things:read"), "other": token("steady", "things:read"),
                  "third": token("third", "things:read"), "admin": token("operator", "gateway:admin")}
        yield base, tokens, lambda: httpx.get(upstream_url + "/_seen").json(), tmp_path / "gateway.log"
    finally:
        stop_process(proc)
        stop_process(upstream)


@pytest.fixture
def overloaded_gateway(tmp_path: Path):
    # A limit the full CPU lowers quickly (short windows, 2 ms of CPU wait allowed), refusals answered at once. Half
    # of a core counts as full here, so that the test's own client, in one Python process, surely fills it.
    yield from start_gateway(tmp_path, 0.0, {"min_limit": 2, "max_limit": 50, "target_cpu_delay_ms": 2,
                                             "busy_ratio": 0.5, "probe_interval_ms": 1, "window_ms": 20,
                                             "shed_hold_ms": 0})


@pytest.fixture
def slow_vendor_gateway(tmp_path: Path):
    yield from start_gateway(tmp_path, 0.3, {"max_limit": 50, "window_ms": 20})


@pytest.fixture
def one_slot_gateway(tmp_path: Path):
    # One request at a time, each taking the vendor 0.5 s: everything else is queued or refused.
    yield from start_gateway(tmp_path, 0.5, {"min_limit": 1, "max_limit": 1})


@pytest.fixture
def patient_gateway(tmp_path: Path):
    # One request at a time, each taking the vendor 0.5 s; a queued request may wait up to 3 s for its turn.
    yield from start_gateway(tmp_path, 0.5, {"min_limit": 1, "max_limit": 1, "max_queue_wait_ms": 3000})


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)  # polling: the process is still starting
    output = proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
    pytest.fail(f"{url} did not answer: {output}")


def admission(base: str, admin_token: str) -> dict[str, Any]:
    return httpx.get(base + "/admin/ops/data", headers={"authorization": f"Bearer {admin_token}"},
                     timeout=5).json()["admission"]


async def _flood(base: str, token: str, seconds: float, connections: int) -> Counter[int]:
    """Many keep-alive connections, each sending its next request as soon as the last one is answered (a client
    that ignores Retry-After). Plain asyncio streams: an HTTP client library would be the bottleneck here."""
    host, port = base.removeprefix("http://").split(":")
    statuses: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    async def one_connection(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        request = (f"GET /v1/things/flood-{n} HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {token}\r\n\r\n").encode()
        try:
            while time.monotonic() < stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:] if b": " in line)
                body = await reader.readexactly(int(fields[b"content-length"]))
                statuses[status] += 1
                if status == 503:
                    assert fields[b"retry-after"] == b"1"
                    assert b"/overloaded" in body
        finally:
            writer.close()

    await asyncio.gather(*(one_connection(n) for n in range(connections)))
    return statuses


async def _steady(base: str, token: str, seconds: float) -> list[tuple[int, float]]:
    answers: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=base, timeout=10, headers={"authorization": f"Bearer {token}"}) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            started = time.monotonic()
            r = await client.get("/v1/things/mine")
            answers.append((r.status_code, time.monotonic() - started))
    return answers


async def _health(base: str, seconds: float) -> list[tuple[str, int]]:
    """Liveness, readiness and metrics, probed through the flood: the gateway's own endpoints are never shed."""
    statuses: list[tuple[str, int]] = []
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            for path in ("/healthz", "/readyz", "/metrics"):
                statuses.append((path, (await client.get(path)).status_code))
            await asyncio.sleep(0.05)  # a probe's own pace, as an orchestrator's would be
    return statuses


async def _watch_limit(base: str, admin_token: str, seconds: float) -> list[int]:
    seen: list[int] = []
    async with httpx.AsyncClient(base_url=base, timeout=2,
                                 headers={"authorization": f"Bearer {admin_token}"}) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            seen.append((await client.get("/admin/ops/data")).json()["admission"]["limit"])
            await asyncio.sleep(0.05)  # sampling the gauge a few times per window
    return seen


def test_a_flood_is_shed_early_and_fairly_and_the_limit_recovers(overloaded_gateway):
    """Shed requests reach neither a policy nor the vendor, health, readiness and metrics stay 200, the second client
    keeps its share, and the limit lowered under the flood is back at its maximum once the flood stops."""
    base, tokens, upstream, log = overloaded_gateway

    async def scenario() -> tuple[Counter[int], list[tuple[int, float]], list[tuple[str, int]], list[int]]:
        return await asyncio.gather(_flood(base, tokens["flood"], 2.0, 60), _steady(base, tokens["other"], 2.0),
                                    _health(base, 2.0), _watch_limit(base, tokens["admin"], 2.0))

    flood, steady, health, limits = asyncio.run(scenario())
    seen = upstream()
    assert flood[503] > 0 and flood[200] > 0, flood
    assert set(flood) <= {200, 503}, flood
    # The vendor heard exactly the admitted requests, nothing of the shed ones.
    assert seen["flooder"] == flood[200]
    # Nor did any policy run for them: the client's daily quota counted only what was admitted.
    usage = httpx.get(f"{base}/admin/limits/flooder", headers={"authorization": f"Bearer {tokens['admin']}"}).json()
    daily = next(b for b in usage["buckets"] if b["name"] == "daily")
    assert daily["limit"] - daily["remaining"] == flood[200]
    # The steady client kept its share: nearly all of its requests served while the flood's were shed.
    served = sum(1 for status, _ in steady if status == 200)
    assert served >= 0.9 * len(steady) and served == seen["steady"], (Counter(s for s, _ in steady), seen)
    assert {path for path, _ in health} == {"/healthz", "/readyz", "/metrics"}
    assert {status for _, status in health} == {200}, Counter(health)
    assert min(limits) < 50, limits  # the flood filled the CPU: the limit came down
    deadline = time.monotonic() + 5
    while admission(base, tokens["admin"])["limit"] < 50:
        assert time.monotonic() < deadline, admission(base, tokens["admin"])
        time.sleep(0.05)  # polling the gauge, which moves once per window
    state = admission(base, tokens["admin"])
    shed = flood[503] + sum(1 for status, _ in steady if status == 503)
    assert state["queued"] == 0 and sum(state["shed"].values()) == shed, (state, flood)
    lines = [line for line in log.read_text().splitlines() if '"stage":"admission"' in line]
    assert len(lines) == shed and all('"problem":"overloaded"' in line for line in lines)


def test_a_slow_vendor_is_not_overload(slow_vendor_gateway):
    """Rounds of 40 requests at once, each waiting 300 ms on the vendor, cost the gateway next to no CPU: every one is
    served, none is shed, and the limit stays at its maximum (a latency-following limit would have come down)."""
    base, tokens, upstream, _ = slow_vendor_gateway

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_connections=100),
                                     headers={"authorization": f"Bearer {tokens['other']}"}) as client:
            answers = []
            for _ in range(3):
                answers += [r.status_code for r in await asyncio.gather(
                    *(client.get(f"/v1/things/{n}") for n in range(40)))]
            return answers

    answers = asyncio.run(burst())
    assert answers == [200] * 120, Counter(answers)
    assert upstream()["steady"] == 120
    state = admission(base, tokens["admin"])
    assert state["limit"] == 50 and not state["shed"], state


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:] if b": " in line)
    return int(head[9:12]), fields, await reader.readexactly(int(fields[b"content-length"]))


async def _take_the_slot(client: httpx.AsyncClient, base: str, tokens: dict[str, str]) -> asyncio.Task[Any]:
    """The one slot of a one-slot gateway, taken by the steady client for as long as the vendor takes (0.5 s)."""
    busy = asyncio.create_task(client.get("/v1/things/busy", headers={"authorization": f"Bearer {tokens['other']}"}))
    deadline = time.monotonic() + 5
    while admission(base, tokens["admin"])["in_flight"] < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)  # polling: the slow request is on its way
    return busy


def test_refusals_at_the_socket_keep_http_intact(one_slot_gateway):
    """Requests refused before any task exists (Edge.admit_early) are still proper HTTP/1.1 answers on a kept-alive
    connection: pipelined requests each get their own 503 in order, a refused POST's body is read and dropped (the
    next request on the connection is parsed correctly), `Connection: close` is honoured, and every refusal is
    counted, logged with stage admission, and echoes the caller's X-Request-ID."""
    base, tokens, upstream, log = one_slot_gateway
    host, port = base.removeprefix("http://").split(":")

    async def scenario() -> tuple[list[tuple[int, dict[bytes, bytes], bytes]], bytes, int]:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            busy = await _take_the_slot(client, base, tokens)
            auth = f"Authorization: Bearer {tokens['flood']}\r\n"
            # The flooding client's first request queues (a client with nothing waiting always gets a place) ...
            _, first = await asyncio.open_connection(host, int(port))
            first.write(f"GET /v1/things/queued HTTP/1.1\r\nHost: gw\r\n{auth}\r\n".encode())
            await first.drain()
            # ... so that its next ones, pipelined on another connection, are refused at the socket.
            reader, writer = await asyncio.open_connection(host, int(port))
            body = b'{"name": "' + b"x" * 3000 + b'"}'
            writer.write(f"POST /v1/things HTTP/1.1\r\nHost: gw\r\n{auth}X-Request-ID: refused-post\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                         + f"GET /v1/things/2 HTTP/1.1\r\nHost: gw\r\n{auth}X-Request-ID: refused-get\r\n\r\n"
                           f"GET /v1/things/3 HTTP/1.1\r\nHost: gw\r\n{auth}X-Request-ID: refused-last\r\n"
                           f"Connection: close\r\n\r\n".encode())
            answers = [await asyncio.wait_for(_read_answer(reader), 5) for _ in range(3)]
            rest = await asyncio.wait_for(reader.read(), 5)  # the server closed the connection: EOF
            writer.close()
            first.close()
            return answers, rest, (await busy).status_code

    answers, rest, busy_status = asyncio.run(scenario())
    assert busy_status == 200
    assert [status for status, _, _ in answers] == [503, 503, 503]
    assert [fields[b"x-request-id"] for _, fields, _ in answers] == [b"refused-post", b"refused-get", b"refused-last"]
    for _, fields, body in answers:
        assert fields[b"retry-after"] == b"1" and fields[b"content-type"] == b"application/problem+json"
        problem = json.loads(body)
        assert problem["status"] == 503 and problem["type"].endswith("/overloaded"), problem
    assert answers[-1][1][b"connection"] == b"close" and rest == b""
    assert upstream() == {"steady": 1}  # the vendor heard only the one admitted request
    lines = [json.loads(line) for line in log.read_text().splitlines() if '"stage":"admission"' in line]
    refused = {line["request_id"]: line for line in lines}
    assert {"refused-post", "refused-get", "refused-last"} <= set(refused), lines
    assert refused["refused-post"]["operation"] == "createThing" and refused["refused-post"]["status"] == 503
    metrics = httpx.get(base + "/metrics").text
    shed = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("gateway_admission_shed_total{"))
    assert shed == len(lines) >= 3, metrics


def test_a_queued_request_whose_caller_left_never_reaches_the_vendor(patient_gateway):
    """A request waiting in admission's queue has no task yet; when its turn comes and its caller has hung up, the
    slot goes straight to the next request in the queue: the vendor never hears of it, and the access log says 499
    at stage admission."""
    base, tokens, upstream, log = patient_gateway
    host, port = base.removeprefix("http://").split(":")

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            busy = await _take_the_slot(client, base, tokens)
            deadline = time.monotonic() + 5
            _, gone = await asyncio.open_connection(host, int(port))
            gone.write(f"GET /v1/things/gone HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tokens['flood']}\r\n"
                       f"X-Request-ID: caller-left\r\n\r\n".encode())
            await gone.drain()
            while admission(base, tokens["admin"])["queued"] < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)  # polling: the request reaches the queue
            gone.close()  # the caller gives up while its request waits
            await gone.wait_closed()
            after = await client.get("/v1/things/after", headers={"authorization": f"Bearer {tokens['third']}"})
            return (await busy).status_code, after.status_code

    assert asyncio.run(scenario()) == (200, 200)
    assert upstream() == {"steady": 1, "third": 1}  # nothing of the request whose caller left
    lines = [json.loads(line) for line in log.read_text().splitlines() if '"caller-left"' in line]
    assert [(line["status"], line["stage"]) for line in lines] == [(499, "admission")], lines
    deadline = time.monotonic() + 5
    while (state := admission(base, tokens["admin"]))["in_flight"] or state["queued"]:  # no slot left taken
        assert time.monotonic() < deadline, state
        time.sleep(0.05)  # polling the gauges, which move once per window
