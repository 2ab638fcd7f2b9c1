"""Store faults from the outside, as an operator meets them: a `gateway worker` killed with SIGKILL and PostgreSQL
stopped immediately, each while 300 asynchronous orders and 100 payments go through; `gateway serve` started while
PostgreSQL is down. Nothing doubled at the vendors, no job lost, every attempt in the history, 503s within the
bound during the outage, and the first request after PostgreSQL is back succeeds within about a second.

PostgreSQL here is a private server (tests/services.py PostgresProcess) that these tests stop; never the machine's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from gateway.app import create_app
from tests.conftest import ROOT, ServerThread, bearer, demo_settings
from tests.jobsupport import (
    ASYNC,
    FAST,
    ORDER,
    PAYMENT,
    Worker,
    clear_faults,
    config_file,
    contracts_with,
    fault,
    sandbox_stats,
    wait_for,
)
from tests.services import PostgresProcess, free_port, stop_process

BOUND_S = 1.0  # stores.timeout_s, the default
ORDERS, PAYMENTS = 300, 100
WOO_AUTH = ("ck_sandbox000000000000", "cs_sandbox000000000000")


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PostgresProcess]:
    """fsync off, for speed: an immediate stop (SIGQUIT) loses what PostgreSQL had not yet written to the OS (a
    commit made with synchronous_commit off), not what the OS holds, so a commit the gateway waited for survives it
    either way and one it did not wait for may not: the difference these tests are about."""
    pg = PostgresProcess(fsync=False).start()
    yield pg
    pg.stop("fast")


@pytest.fixture
def db(private_pg: PostgresProcess) -> str:
    """A database of this test's own on the private server."""
    if private_pg.proc is None:
        private_pg.start()
    name = "cg_faults_" + uuid.uuid4().hex[:10]
    with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return psycopg.conninfo.make_conninfo(private_pg.dsn, dbname=name)


@pytest.fixture
def env(sandboxes, db, tmp_path):
    """Gateways (in this process) and `gateway worker` processes on one job store, fast retries, no write limits."""
    for url in sandboxes.urls.values():
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    contracts = str(contracts_with(tmp_path, {"orders.v2/createOrder": {"async": FAST, "limits": None},
                                              "payments.v1/createPayment": {"async": FAST, "limits": None}}))
    base = {"jobs.backend": "postgres", "jobs.postgres_dsn": db, "jobs.lease_s": 2, "jobs.poll_s": 0.1,
            "jobs.vendor_concurrency": 8, "contracts": [contracts],
            **{f"vendors.{name}.base_url": url for name, url in sandboxes.urls.items()}}
    servers: list[ServerThread] = []
    workers: list[Worker] = []
    clients: list[httpx.Client] = []

    class Env:
        dsn = db
        overrides = base

        def gateway(self, **extra: Any) -> tuple[Any, httpx.Client]:
            app = create_app(demo_settings(sandboxes.urls, **{**base, **extra}))
            server = ServerThread(app).start()
            servers.append(server)
            clients.append(httpx.Client(base_url=server.url, timeout=30, headers=bearer(app)))
            return app, clients[-1]

        def workers(self, count: int, concurrency: int = 8) -> list[Worker]:
            """`count` worker processes, started side by side."""
            started = [Worker(config_file(tmp_path, base), concurrency, wait=False) for _ in range(count)]
            workers.extend(started)
            for worker in started:
                worker.wait_ready()
            return started

    yield Env()
    for client in clients:
        client.close()
    for worker in workers:
        worker.stop()
    for server in servers:
        server.stop()
    for url in sandboxes.urls.values():
        clear_faults(url)


class Submitter(threading.Thread):
    """Sends ORDERS async orders and PAYMENTS async payments, four at a time, each with its own Idempotency-Key,
    and retries a 503 with the same key as a well-behaved client does, until it is accepted."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.accepted: dict[str, str] = {}  # job id -> operation
        self.refusals: list[httpx.Response] = []
        self.local = threading.local()
        self.clients: list[httpx.Client] = []  # closed when the last order is accepted

    def _send(self, path: str, body: dict[str, Any], name: str) -> None:
        if not hasattr(self.local, "client"):  # one connection per sending thread
            self.local.client = httpx.Client(base_url=self.client.base_url, headers=self.client.headers, timeout=30)
            self.clients.append(self.local.client)
        key = str(uuid.uuid4())
        for _ in range(600):
            r = self.local.client.post(path, json=body, headers={**ASYNC, "idempotency-key": key})
            if r.status_code == 202:
                self.accepted[r.json()["id"]] = name
                return
            self.refusals.append(r)
            time.sleep(0.1)
        raise AssertionError(f"{path} never accepted")

    def run(self) -> None:
        work: list[tuple[str, dict[str, Any], str]] = []
        for n in range(ORDERS):  # a payment after every third order
            work.append(("/v2/orders", {**ORDER, "note": f"order {n}"}, "orders"))
            if n % 3 == 0 and n // 3 < PAYMENTS:
                work.append(("/v1/payments", {**PAYMENT, "order_id": f"ord_{n + 1}"}, "payments"))
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda w: self._send(*w), work))
        finally:
            for client in self.clients:
                client.close()

    def done(self) -> int:
        return len(self.accepted)


def jobs(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT id, name, state, attempts, history, result FROM cg_jobs ORDER BY seq")
        return [dict(zip(("id", "name", "state", "attempts", "history", "result"), row, strict=True)) for row in cur]


def vendor_orders(woo: str) -> list[dict[str, Any]]:
    """Every order the WooCommerce sandbox holds, read through its API."""
    found, page = [], 1
    while True:
        r = httpx.get(woo + "/wp-json/wc/v3/orders", params={"per_page": 100, "page": page}, auth=WOO_AUTH)
        found += r.json()
        if page >= int(r.headers["x-wp-totalpages"]):
            return found
        page += 1


def assert_once_each_and_every_attempt_kept(dsn: str, urls: dict[str, str], accepted: dict[str, str]) -> list:
    """No 202 lost, every job succeeded, one order per order job and one payment per payment job at the vendors,
    and each job's history holds its attempts 1..n in order."""
    rows = jobs(dsn)
    assert set(accepted) <= {r["id"] for r in rows}, "a 202 was sent for a job that is not stored"
    assert [r["id"] for r in rows if r["state"] != "succeeded"] == []
    order_jobs = [r for r in rows if r["name"] == "orders.v2.createOrder"]
    payment_jobs = [r for r in rows if r["name"] == "payments.v1.createPayment"]
    assert len(order_jobs) == ORDERS and len(payment_jobs) == PAYMENTS
    orders = vendor_orders(urls["woocommerce"])
    markers = [next(m["value"] for m in o["meta_data"] if m["key"] == "_cg_idempotency_key") for o in orders]
    assert len(orders) == len(set(markers)) == ORDERS, "an order was created twice at WooCommerce"
    assert sorted(r["result"]["body"]["id"] for r in order_jobs) == sorted(f"ord_{o['id']}" for o in orders)
    assert sandbox_stats(urls["stripe"])["effects"]["payment_intents_created"] == PAYMENTS
    for r in rows:
        numbered = [h["attempt"] for h in r["history"] if "attempt" in h]
        assert numbered == list(range(1, r["attempts"] + 1)), (r["id"], r["history"])
    return rows


def in_flight(woo: str) -> int:
    stats = sandbox_stats(woo)
    return stats["requests"].get("POST /wp-json/wc/v3/orders", 0) - stats["effects"].get("orders_created", 0)


def slow_vendors(urls: dict[str, str]) -> None:
    """Each create takes 100 ms at the vendor: there is always work in flight to be caught by a fault."""
    fault(urls["woocommerce"], {"method": "POST", "path": "/wp-json/wc/v3/orders", "latency_ms": 100})
    fault(urls["stripe"], {"method": "POST", "path": "/v1/payment_intents", "latency_ms": 100})


def test_a_worker_killed_with_jobs_in_flight_doubles_nothing_and_loses_no_attempt(env, sandboxes):
    """kill -9 of one of two workers mid-run: its jobs run again after the lease, WooCommerce's orders are found
    by their marker instead of made twice, Stripe dedupes by key, and the history says `abandoned`."""
    _, client = env.gateway(**{"jobs.workers": 0})  # this gateway only accepts; the workers run the jobs
    slow_vendors(sandboxes.urls)
    victim, survivor = env.workers(2)
    owner = victim.owner
    submitter = Submitter(client)
    submitter.start()
    wait_for("orders in flight at WooCommerce", lambda: sandbox_stats(sandboxes.urls["woocommerce"])["effects"]
             .get("orders_created", 0) >= 40 and in_flight(sandboxes.urls["woocommerce"]) >= 4)
    victim.kill()  # returns once the process is gone: what it still held, it held when it died
    with psycopg.connect(env.dsn) as conn:
        held = conn.execute("SELECT count(*) FROM cg_jobs WHERE lease_owner = %s AND state = 'running'",
                            (owner,)).fetchone()[0]
    assert held > 0, "the killed worker had no job in flight: the test proved nothing"
    submitter.join(120)
    wait_for("every job to finish", lambda: all(r["state"] == "succeeded" for r in jobs(env.dsn)) and
             len(jobs(env.dsn)) == ORDERS + PAYMENTS, timeout_s=120, every_s=0.25)
    rows = assert_once_each_and_every_attempt_kept(env.dsn, sandboxes.urls, submitter.accepted)
    abandoned = [h for r in rows for h in r["history"] if h.get("outcome") == "abandoned"]
    assert len(abandoned) >= held and all(h["worker"] == owner and h["lease_expired_at"] for h in abandoned)
    assert survivor.ran() > 0


def test_an_immediate_postgres_stop_under_load_is_fast_503s_then_recovery_within_a_second(env, sandboxes,
                                                                                         private_pg):
    """PostgreSQL crashes (SIGQUIT) with 300 orders and 100 payments going through: status reads and intake are
    503 within the bound, /readyz says which store is down, the first read after the restart succeeds within about
    a second, and in the end nothing was doubled, lost or hidden from the history."""
    _, client = env.gateway(**{"jobs.workers": 4})
    slow_vendors(sandboxes.urls)
    env.workers(1)
    submitter = Submitter(client)
    submitter.start()
    wait_for("100 accepted and orders in flight",
             lambda: submitter.done() >= 100 and in_flight(sandboxes.urls["woocommerce"]) >= 2)
    some_job = next(iter(submitter.accepted))
    private_pg.stop("immediate")
    try:
        down_until = time.monotonic() + 2.0
        reads = 0
        while time.monotonic() < down_until:
            started = time.monotonic()
            r = client.get(f"/v1/operations/{some_job}")
            took = time.monotonic() - started
            assert r.status_code == 503 and r.json()["type"].endswith("/dependency-unavailable"), r.text
            assert int(r.headers["retry-after"]) >= 1 and took < BOUND_S + 0.3, took
            reads += 1
            time.sleep(0.05)  # a client polling its operation, within its rate limit
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["jobs"]["state"] == "down"
        assert ready.json()["checks"]["jobs"]["ok"] is False
        assert reads >= 5
    finally:
        private_pg.start()
    back = time.monotonic()
    wait_for("a status read to succeed", lambda: client.get(f"/v1/operations/{some_job}").status_code == 200,
             timeout_s=5, every_s=0.02)
    assert time.monotonic() - back < 1.5
    submitter.join(180)
    assert submitter.done() == ORDERS + PAYMENTS
    assert all(r.status_code == 503 for r in submitter.refusals)  # refused honestly, never a 500
    wait_for("every job to finish", lambda: all(r["state"] == "succeeded" for r in jobs(env.dsn)),
             timeout_s=120, every_s=0.25)
    assert_once_each_and_every_attempt_kept(env.dsn, sandboxes.urls, submitter.accepted)
    assert client.get("/readyz").json()["checks"]["jobs"]["state"] == "up"


def token(base: str) -> dict[str, str]:
    r = httpx.post(base + "/oauth/token", data={"grant_type": "client_credentials"},
                   auth=("demo-partner", "demo-partner-secret"))
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def test_serve_started_without_postgres_starts_unready_serves_what_it_can_and_recovers(sandboxes, db, private_pg,
                                                                                       tmp_path):
    """`gateway serve` while PostgreSQL is down: no traceback, /readyz 503 naming the job store, synchronous calls
    served, async intake and status a fast 503; PostgreSQL starts and the gateway is ready within about a second."""
    for url in sandboxes.urls.values():
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    port = free_port()
    config = config_file(tmp_path, {"jobs.backend": "postgres", "jobs.postgres_dsn": db, "server.port": port,
                                    **{f"vendors.{n}.base_url": u for n, u in sandboxes.urls.items()}})
    private_pg.stop("immediate")
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GATEWAY_LOG_LEVEL": "INFO"})
    try:
        wait_for("the gateway to answer", lambda: _answers(base + "/healthz"), timeout_s=60)
        ready = httpx.get(base + "/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert ready.json()["checks"]["jobs"] == {**ready.json()["checks"]["jobs"], "ok": False, "state": "down",
                                                  "backend": "postgres"}
        auth = token(base)
        assert httpx.post(base + "/v2/orders", json=ORDER, headers=auth).status_code == 201  # synchronous: served
        started = time.monotonic()
        refused = httpx.post(base + "/v2/orders", json=ORDER, headers={**auth, **ASYNC})
        assert refused.status_code == 503 and time.monotonic() - started < BOUND_S + 0.3
        assert httpx.get(base + "/v1/operations/job_" + "0" * 24, headers=auth).status_code == 503
        private_pg.start()
        back = time.monotonic()
        wait_for("/readyz to say ready", lambda: httpx.get(base + "/readyz").status_code == 200, timeout_s=5,
                 every_s=0.02)
        assert time.monotonic() - back < 1.5
        accepted = httpx.post(base + "/v2/orders", json=ORDER, headers={**auth, **ASYNC})
        assert accepted.status_code == 202  # the schema was created when PostgreSQL first answered
    finally:
        out, err = stop_process(proc)
    assert "Traceback" not in out + err and "job store (PostgreSQL) cannot be reached at start-up" in out + err


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_dlq_from_the_command_line_with_the_store_down_is_one_clear_line(tmp_path):
    """No traceback for an operator: the store cannot be reached, said once, exit status 1."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    config = config_file(tmp_path, {"jobs.backend": "postgres", "jobs.postgres_dsn": dsn})
    out = subprocess.run([sys.executable, "-m", "gateway", "dlq", "list", "--config", str(config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("the job store cannot be reached: ") and "127.0.0.1" in line
