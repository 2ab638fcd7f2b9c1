"""Asynchronous work on the shared store: real PostgreSQL, `gateway worker` processes, SIGKILL, cut connections.

Each test gets a database of its own on the machine's PostgreSQL (or one tests/services.py starts).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from gateway.app import create_app
from gateway.jobs.model import DeadLetterFilter, NewJob, RetrySchedule
from gateway.jobs.postgres import PostgresJobStore
from tests.conftest import ServerThread, bearer, demo_settings
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
    jobs_in,
    sandbox_stats,
    settle,
    wait_for,
)


@pytest.fixture
def pg_db(postgres_dsn) -> Iterator[str]:
    """A fresh database for this test; dropped afterwards."""
    name = "cg_jobs_" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn, dbname=name)
    yield dsn
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def cut_connections(admin_dsn: str, db: str) -> int:
    """Kill every server process connected to `db` (what a PostgreSQL restart or failover does to clients)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (db,)).fetchall()
    return len(rows)


@pytest.fixture
def env(sandboxes, pg_db, tmp_path):
    """Start gateways and workers on one PostgreSQL job store, in front of freshly reset sandboxes."""
    for url in sandboxes.urls.values():
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    servers: list[ServerThread] = []
    workers: list[Worker] = []
    clients: list[httpx.Client] = []
    base = {"jobs.backend": "postgres", "jobs.postgres_dsn": pg_db, "jobs.lease_s": 2, "jobs.poll_s": 0.2,
            **{f"vendors.{name}.base_url": url for name, url in sandboxes.urls.items()}}

    class Env:
        dsn = pg_db
        contracts: str | None = None

        def patch(self, patches: dict) -> None:
            self.contracts = str(contracts_with(tmp_path, patches))

        def overrides(self, **extra):
            values = {**base, **extra}
            if self.contracts:
                values["contracts"] = [self.contracts]
            return values

        def gateway(self, **extra):
            app = create_app(demo_settings(sandboxes.urls, **self.overrides(**extra)))
            server = ServerThread(app).start()
            servers.append(server)
            clients.append(httpx.Client(base_url=server.url, timeout=30, headers=bearer(app)))
            return app, clients[-1]

        def worker(self, concurrency: int = 4, **extra) -> Worker:
            worker = Worker(config_file(tmp_path, self.overrides(**extra)), concurrency)
            workers.append(worker)
            return worker

    yield Env()
    for client in clients:
        client.close()
    for worker in workers:
        worker.stop()
    for server in servers:
        server.stop()
    for url in sandboxes.urls.values():
        clear_faults(url)


def test_a_worker_killed_mid_job_leaves_it_to_another_and_the_vendor_sees_one_effect(env, sandboxes):
    stripe = sandboxes.urls["stripe"]
    app, client = env.gateway(**{"jobs.workers": 0})  # this gateway only accepts; workers run the jobs
    first = env.worker()
    # Stripe takes its time with this payment: long enough to kill the worker while the call is in flight.
    fault(stripe, {"method": "POST", "path": "/v1/payment_intents", "latency_ms": 1500, "times": 1})
    r = client.post("/v1/payments", json=PAYMENT, headers={**ASYNC, "idempotency-key": str(uuid.uuid4())})
    assert r.status_code == 202, r.text
    wait_for("the worker's call to reach Stripe",
             lambda: sandbox_stats(stripe)["requests"].get("POST /v1/payment_intents"))
    first.kill()
    assert client.get(r.headers["location"]).json()["state"] == "running"  # claimed by a worker that is gone
    wait_for("Stripe to finish the charge the dead worker asked for",
             lambda: sandbox_stats(stripe)["effects"].get("payment_intents_created") == 1)
    env.worker()
    done = settle(client, r.headers["location"])
    assert done["state"] == "succeeded" and done["attempts"] == 2  # the lease expired, the job ran again
    assert sandbox_stats(stripe)["effects"]["payment_intents_created"] == 1  # and Stripe saw one payment
    assert sandbox_stats(stripe)["requests"]["POST /v1/payment_intents"] == 2


def test_two_workers_run_a_thousand_jobs_exactly_once_and_in_order_per_key(env, sandboxes):
    """1,000 order jobs over 25 ordering keys, two worker processes claiming with SKIP LOCKED."""
    woo = sandboxes.urls["woocommerce"]
    total, keys = 1000, 25

    async def enqueue() -> list[str]:
        store = PostgresJobStore(env.dsn)
        await store.start()
        ids = []
        try:
            for n in range(total):
                body = {**ORDER, "note": f"k{n % keys}-{n // keys}"}
                payload = {"params": {}, "body": body, "scopes": ["orders:write"], "idempotency_key": None,
                           "raw_body": None, "query_string": "", "media_type": "application/json"}
                job = await store.enqueue(NewJob("operation", "orders.v2.createOrder", payload,
                                                 client_id="demo-partner", vendor="woocommerce",
                                                 ordering_key=f"k{n % keys}", schedule=RetrySchedule(3, 0.05, 0.3)))
                ids.append(job.id)
        finally:
            await store.close()
        return ids

    ids = asyncio.run(enqueue())
    a, b = env.worker(concurrency=8), env.worker(concurrency=8)
    wait_for("every job to finish", lambda: all(s == "succeeded" for s, _ in jobs_in(env.dsn).values()),
             timeout_s=240, every_s=0.5)
    states = jobs_in(env.dsn)
    assert len(states) == total and all(attempts == 1 for _, attempts in states.values())
    assert sandbox_stats(woo)["effects"]["orders_created"] == total
    assert a.ran() > 0 and b.ran() > 0 and a.ran() + b.ran() == total  # both worked, none twice

    # Vendor-side order: WooCommerce numbers orders as it creates them, so per key they must come out increasing.
    with psycopg.connect(env.dsn) as conn:
        rows = conn.execute("SELECT ordering_key, payload->'body'->>'note', result->'body'->>'id' FROM cg_jobs "
                            "ORDER BY seq").fetchall()
    created: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, note, order_id in rows:
        created[key].append((int(note.rsplit("-", 1)[1]), int(order_id.removeprefix("ord_"))))
    for key, seq in created.items():
        vendor_numbers = [number for _, number in sorted(seq)]
        assert vendor_numbers == sorted(vendor_numbers), f"{key} ran out of order"
    assert len({i for i in ids}) == total


def test_cut_database_connections_under_load_lose_nothing(env, sandboxes, postgres_dsn):
    """Connections are killed three times while payments are accepted and run; every 202 ends succeeded once."""
    stripe = sandboxes.urls["stripe"]
    env.patch({"payments.v1/createPayment": {"async": FAST, "limits": None}})
    app, client = env.gateway(**{"jobs.workers": 2})
    env.worker()
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    submitted = threading.Event()

    def submit() -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=30) as c:
            for _ in range(150):
                r = c.post("/v1/payments", json=PAYMENT, headers={**ASYNC, "idempotency-key": str(uuid.uuid4())})
                (accepted.append(r.json()["id"]) if r.status_code == 202 else refused.append(r))
        submitted.set()

    thread = threading.Thread(target=submit)
    thread.start()
    db = psycopg.conninfo.conninfo_to_dict(env.dsn)["dbname"]
    cuts = 0
    for threshold in (30, 70, 110):
        wait_for(f"{threshold} submissions", lambda t=threshold: len(accepted) + len(refused) >= t, timeout_s=60)
        cuts += cut_connections(postgres_dsn, db)
    thread.join(120)
    assert submitted.is_set() and cuts >= 3
    for r in refused:  # a refusal is an honest 503 problem, never a lost 202
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json", r.text
    assert len(accepted) >= 100
    wait_for("every stored job to finish",
             lambda: all(s in ("succeeded", "dead") for s, _ in jobs_in(env.dsn).values()), timeout_s=120,
             every_s=0.25)
    states = jobs_in(env.dsn)
    assert set(accepted) <= set(states)  # every 202 was stored
    assert {s for s, _ in states.values()} == {"succeeded"}
    # Each stored job charged once (Stripe dedupes on the job's key even when a job ran twice).
    assert sandbox_stats(stripe)["effects"]["payment_intents_created"] == len(states)


def test_a_store_outage_is_a_503_and_nothing_is_accepted_then_it_recovers(env, sandboxes, postgres_dsn):
    app, client = env.gateway()
    db = psycopg.conninfo.conninfo_to_dict(env.dsn)["dbname"]
    before = len(jobs_in(env.dsn))
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
    cut_connections(postgres_dsn, db)
    try:
        r = client.post("/v2/orders", json=ORDER, headers=ASYNC)
        assert r.status_code == 503, r.text
        problem = r.json()
        assert problem["type"].endswith("/dependency-unavailable") and "nothing was accepted" in problem["detail"]
        assert "location" not in r.headers
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
    assert len(jobs_in(env.dsn)) == before
    # The store's breaker asks PostgreSQL again every probe interval (0.25 s): ready again within about a second.
    wait_for("the job store to answer again", lambda: client.get("/readyz").status_code == 200, timeout_s=5)
    again = client.post("/v2/orders", json=ORDER, headers=ASYNC)
    assert again.status_code == 202
    assert settle(client, again.headers["location"])["state"] == "succeeded"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_job_that_loses_its_worker_every_time_becomes_a_dead_letter(backend, pg_db, tmp_path):
    """A job that kills whatever runs it is not claimed forever: with its attempts used up it is dead."""
    from gateway.jobs.sqlite import SqliteJobStore

    async def scenario() -> None:
        store = PostgresJobStore(pg_db) if backend == "postgres" else SqliteJobStore(tmp_path / "jobs.db")
        await store.start()
        try:
            job = await store.enqueue(NewJob("operation", "orders.v2.createOrder", {"body": {}},
                                             schedule=RetrySchedule(max_attempts=2)))
            for attempt in (1, 2):  # each worker claims it and vanishes: its lease is already over
                [claimed] = await store.claim(f"worker-{attempt}", -1, 10)
                assert claimed.id == job.id and claimed.attempts == attempt
            assert await store.claim("worker-3", 30, 10) == []
            dead = await store.get(job.id)
            assert dead is not None and dead.state == "dead"
            assert dead.history[-1]["error"].startswith("worker lost")
            assert [j.id for j in await store.dead_letters(DeadLetterFilter())] == [job.id]
        finally:
            await store.close()

    asyncio.run(scenario())
