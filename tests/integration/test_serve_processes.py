"""`gateway serve` processes killed with SIGKILL: a `--workers N` child's death is an error line with its pid and
signal and a count in /metrics; an Idempotency-Key held by a process that died is usable again within seconds, and
the retry finds the order the dead process had asked WooCommerce for instead of making a second one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import psutil
import pytest

from tests.conftest import ROOT
from tests.jobsupport import ORDER, clear_faults, config_file, fault, sandbox_stats, wait_for
from tests.services import free_port, stop_process


class Serve:
    """`gateway serve` in a process of its own; what it writes (JSON log lines, per observability.logging) is kept."""

    def __init__(self, tmp_path, overrides: dict, workers: int = 1) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = config_file(tmp_path, {"server.port": self.port, **overrides})
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                                      "--workers", str(workers)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "GATEWAY_LOG_LEVEL": "INFO"})
        self.out: list[str] = []
        self.reader = threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True)  # type: ignore
        self.reader.start()
        wait_for("the gateway to answer", self._ready, timeout_s=60)

    def _ready(self) -> bool:
        try:
            return httpx.get(self.base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def token(self) -> dict[str, str]:
        r = httpx.post(self.base + "/oauth/token", data={"grant_type": "client_credentials"},
                       auth=("demo-partner", "demo-partner-secret"))
        return {"authorization": f"Bearer {r.json()['access_token']}"}

    def stop(self) -> None:
        stop_process(self.proc, reader=self.reader)


@pytest.fixture
def serve(tmp_path):
    started: list[Serve] = []

    def start(overrides: dict, workers: int = 1) -> Serve:
        server = Serve(tmp_path, overrides, workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_worker_process_killed_under_serve_workers_is_an_error_line_and_a_count(serve, redis_url, sandboxes):
    """SIGKILL to one of two worker processes: the supervisor logs it at ERROR with the pid and SIGKILL, counts it,
    replaces the process, and the gateway keeps answering."""
    gateway = serve({"redis_url": redis_url, "limits.backend": "redis", "idempotency.backend": "redis",
                     **{f"vendors.{n}.base_url": u for n, u in sandboxes.urls.items()}}, workers=2)
    children = wait_for("two worker processes", lambda: (lambda c: c if len(c) == 2 else None)(
        workers_of(gateway)))
    victim = children[0]
    os.kill(victim, signal.SIGKILL)
    line = wait_for("the death to be logged", lambda: next(
        (e for e in map(_json, gateway.out) if f"worker process {victim} killed by SIGKILL" in e.get("msg", "")),
        None), timeout_s=20)
    assert line["level"] == "error" and line["logger"] == "gateway.serve" and "a new one replaces it" in line["msg"]
    wait_for("a replacement", lambda: len(workers_of(gateway)) == 2 and victim not in workers_of(gateway),
             timeout_s=30)
    wait_for("the death to be counted", lambda: 'gateway_process_deaths_total{signal="SIGKILL"} 1.0' in
             httpx.get(gateway.base + "/metrics").text, timeout_s=10)
    assert httpx.get(gateway.base + "/readyz").status_code == 200


def test_a_key_whose_process_died_is_usable_within_seconds_and_the_order_is_not_made_twice(
        serve, redis_url, sandboxes, demo_gateway):
    """A holds the key while WooCommerce takes 2 s; A is killed. B answers 409 while A's lock lasts (at most
    idempotency.lock_ttl_s, 5 s), then runs the retry, which finds the order A had asked for: one order."""
    woo = sandboxes.urls["woocommerce"]
    common = {"redis_url": redis_url, "idempotency.backend": "redis",
              **{f"vendors.{n}.base_url": u for n, u in sandboxes.urls.items()}}
    _, b = demo_gateway(**common)  # resets the sandboxes
    a = serve(common)
    fault(woo, {"method": "POST", "path": "/wp-json/wc/v3/orders", "latency_ms": 2000, "times": 1})
    key = {"idempotency-key": str(uuid.uuid4())}
    auth = a.token()
    threading.Thread(target=lambda: _ignore(lambda: httpx.post(a.base + "/v2/orders", json=ORDER,
                                                               headers={**auth, **key}, timeout=30)),
                     daemon=True).start()
    wait_for("A's create to reach WooCommerce",
             lambda: sandbox_stats(woo)["requests"].get("POST /wp-json/wc/v3/orders") == 1)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    killed = time.monotonic()
    assert b.post("/v2/orders", json=ORDER, headers=key).status_code == 409  # A's lock has not run out yet
    answer = wait_for("the key to be usable again", lambda: (lambda r: r if r.status_code != 409 else None)(
        b.post("/v2/orders", json=ORDER, headers=key)), timeout_s=15, every_s=0.2)
    assert time.monotonic() - killed < 5 + 1.5
    assert answer.status_code == 201, answer.text
    assert sandbox_stats(woo)["effects"]["orders_created"] == 1  # B found A's order by its marker
    assert answer.json()["id"] == "ord_1"
    assert b.post("/v2/orders", json=ORDER, headers=key).json() == answer.json()  # and it is the stored answer
    clear_faults(woo)


def workers_of(gateway: Serve) -> list[int]:
    """The pids of the supervisor's worker processes (not multiprocessing's resource tracker)."""
    return [c.pid for c in psutil.Process(gateway.proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]


def _json(line: str) -> dict:
    try:
        return json.loads(line)
    except ValueError:
        return {}


def _ignore(fn) -> None:
    try:
        fn()
    except httpx.HTTPError:
        pass  # A was killed mid-request: its caller sees the connection drop
