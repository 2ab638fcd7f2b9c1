"""Reading the backbone: replay of a time window, a durable consumer that was down catching up, `gateway events`
on the command line, and events as triggers (a warehouse's `shipment.delivered` marks the order delivered; a
malformed message is a dead letter with its raw bytes; a trigger's job dead-letters and replays like any job)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from gateway.events.consume import replay
from gateway.events.outbox import OutboxEvent, Staged
from gateway.events.service import EventBus
from gateway.jobs.model import DeadLetterFilter
from gateway.jobs.sqlite import SqliteJobStore
from gateway.settings import EventSettings
from tests.conftest import ROOT
from tests.jobsupport import ORDER, config_file, fault, wait_for
from tests.natssupport import nats_url, poll, read_subject, unique_prefixes, within

CARRIER = "whsec_ZGVtby1jYXJyaWVyLXNlY3JldC0wMDAw"


def settings(prefix: str, stream: str) -> EventSettings:
    return EventSettings.model_validate({
        "enabled": True, "url": nats_url(), "subject_prefix": prefix, "relay_poll_s": 0.05,
        "triggers": [{"subject": f"{prefix}.shop.>", "source": "test"}], "trigger_stream": stream})


def event(cfg: EventSettings, kind: str, n: int) -> OutboxEvent:
    eid = f"evt_{uuid.uuid4().hex[:24]}"
    return OutboxEvent(eid, f"{cfg.subject_prefix}.shop.{kind}.v1",
                       orjson.dumps({"specversion": "1.0", "id": eid, "type": kind, "data": {"n": n}}))


async def publish(store: Any, bus: EventBus, events: list[OutboxEvent]) -> None:
    """Store the events and let the relay publish them (in the order stored)."""
    await store.stage(Staged([], events))
    bus.notify()

    async def empty() -> bool:
        return not await store.outbox_pending(1)

    await poll("the relay to publish", empty)


@pytest.fixture
async def backbone(tmp_path: Path) -> Any:
    tag = uuid.uuid4().hex[:8]
    cfg = settings(f"t{tag}", f"T{tag.upper()}")
    store = SqliteJobStore(tmp_path / "jobs.db", timeout_s=5)
    await store.start()
    bus = EventBus(cfg, store)
    await bus.start()
    nc = await within("a NATS connection", nats.connect(cfg.url, connect_timeout=2))
    yield cfg, store, bus, nc.jetstream()
    await nc.close()
    await within("the relay to stop", bus.stop())
    await store.close()


async def stored(js: Any, stream: str) -> list[tuple[int, Any, dict[str, Any]]]:
    """(sequence, stored-at, event) of every message in the stream."""
    out = []
    info = await js.stream_info(stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        out.append((seq, msg, orjson.loads(msg.data)))
    return out


async def test_replay_delivers_exactly_the_window_in_order_per_subject(backbone: Any) -> None:
    cfg, store, bus, js = backbone
    before = [event(cfg, kind, n) for n, kind in enumerate(["order", "payment"] * 3)]
    window = [event(cfg, kind, n) for n, kind in enumerate(["order", "payment", "order", "order", "payment"], 10)]
    after = [event(cfg, kind, n) for n, kind in enumerate(["payment", "order"], 20)]
    for batch in (before, window, after):
        await publish(store, bus, batch)
    # The window: from the first of `window` to the last, by the time JetStream stored them.
    from gateway.events.consume import _received

    sub = await js.pull_subscribe(f"{cfg.subject_prefix}.shop.>", config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    msgs = await sub.fetch(len(before + window + after), timeout=5)
    await sub.unsubscribe()
    times = {orjson.loads(m.data)["id"]: _received(m).stored_at for m in msgs}
    since, until = times[window[0].id], times[window[-1].id]
    assert times[before[-1].id] < since and until < times[after[0].id], "the three batches are apart in time"

    got = [r async for r in replay(js, f"{cfg.subject_prefix}.shop.>", "analytics", since, until, idle_s=0.5)]
    assert [r.event["id"] for r in got] == [e.id for e in window]
    for kind in ("order", "payment"):
        per_subject = [r.event["data"]["n"] for r in got if r.subject.endswith(f".{kind}.v1")]
        assert per_subject == sorted(per_subject), f"{kind} events out of order"
    # Replayed again for the same consumer: the same window again (the consumer is set back to `since`).
    again = [r.event["id"] async for r in replay(js, f"{cfg.subject_prefix}.shop.>", "analytics", since, until,
                                                 idle_s=0.5)]
    assert again == [e.id for e in window]


async def test_a_durable_consumer_that_was_down_gets_what_it_missed_in_order(backbone: Any) -> None:
    cfg, store, bus, js = backbone
    subject = f"{cfg.subject_prefix}.shop.order.v1"
    await publish(store, bus, [event(cfg, "order", n) for n in range(3)])
    stream = await js.find_stream_name_by_subject(subject)
    await js.add_consumer(stream, ConsumerConfig(durable_name="fulfilment", filter_subject=subject,
                                                 ack_policy=AckPolicy.EXPLICIT))
    sub = await js.pull_subscribe_bind("fulfilment", stream)
    first = await within("the first three", sub.fetch(3, timeout=5))
    for m in first:
        await m.ack()
    await sub.unsubscribe()  # fulfilment goes down
    await publish(store, bus, [event(cfg, "order", n) for n in range(3, 8)])  # meanwhile
    sub = await js.pull_subscribe_bind("fulfilment", stream)  # back up: same durable consumer
    missed: list[int] = []

    async def read_all() -> None:
        while len(missed) < 5:
            for m in await sub.fetch(5 - len(missed), timeout=5):
                missed.append(orjson.loads(m.data)["data"]["n"])
                await m.ack()

    await within("the five it missed", read_all())
    await sub.unsubscribe()
    assert [orjson.loads(m.data)["data"]["n"] for m in first] == [0, 1, 2]
    assert missed == [3, 4, 5, 6, 7]


def test_gateway_events_replay_and_tail_on_the_command_line(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    cfg = settings(f"t{tag}", f"T{tag.upper()}")

    async def produce() -> list[str]:
        store = SqliteJobStore(tmp_path / "jobs.db", timeout_s=5)
        await store.start()
        bus = EventBus(cfg, store)
        await bus.start()
        try:
            events = [event(cfg, "order", n) for n in range(4)]
            await publish(store, bus, events)
            return [e.id for e in events]
        finally:
            await bus.stop()
            await store.close()

    ids = asyncio.run(produce())
    got = asyncio.run(read_subject(cfg.url, f"{cfg.subject_prefix}.>", 4))
    conf = config_file(tmp_path, {"events.url": cfg.url, "events.subject_prefix": cfg.subject_prefix})

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "events", *args, "--config", str(conf)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    first = asyncio.run(_stored_at(cfg.url, f"{cfg.subject_prefix}.>"))
    run = gateway("replay", "--consumer", "cli-test", "--type", "order", "--since", first[1], "--until", first[2],
                  "--idle", "0.5")
    assert run.returncode == 0, run.stderr
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert [line["event"]["id"] for line in lines] == ids[1:3]
    run = gateway("tail", "--since", first[0], "--limit", "4", "--idle", "2")
    assert run.returncode == 0, run.stderr
    assert [orjson.loads(line)["event"]["id"] for line in run.stdout.splitlines()] == ids
    assert len(got) == 4
    bad = gateway("replay", "--consumer", "cli-test", "--since", "yesterday")
    assert bad.returncode == 2 and "bad time" in bad.stderr and "Traceback" not in bad.stderr


async def _stored_at(url: str, subject: str) -> list[str]:
    from gateway.events.consume import _received

    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(subject, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        msgs = await sub.fetch(4, timeout=5)
        await sub.unsubscribe()
        return [_received(m).stored_at.isoformat() for m in msgs]
    finally:
        await nc.close()


# -- triggers ------------------------------------------------------------------------------------------------------

@pytest.fixture
def warehouse_gateway(demo_gateway: Any) -> Any:
    def run() -> tuple[Any, Any, dict[str, Any]]:
        overrides = {"events.enabled": True, "events.url": nats_url(), "events.relay_poll_s": 0.05,
                     **unique_prefixes()}
        prefix = overrides["events.subject_prefix"]
        overrides.update({
            "events.trigger_stream": overrides["events.stream_prefix"] + "_IN",
            "events.triggers": [{"subject": f"{prefix}.warehouse.shipment.delivered.v1", "source": "carrier"}],
            "webhooks.inbound": {"carrier": {"scheme": "standard", "secrets": [CARRIER]}},
            "webhooks.backoff_base_s": 0.05, "webhooks.backoff_cap_s": 0.2})
        app, client = demo_gateway(**overrides)
        return app, client, overrides

    return run


async def _send(url: str, subject: str, stream: str, payloads: list[bytes]) -> None:
    nc = await within("a NATS connection", nats.connect(url, connect_timeout=2))
    try:
        js = nc.jetstream()

        async def ready() -> bool:
            try:
                await js.stream_info(stream)
                return True
            except Exception:
                return False

        await poll(f"the gateway to create stream {stream}", ready)
        for payload in payloads:
            await js.publish(subject, payload, timeout=5)
    finally:
        await nc.close()


def shipment(order_id: str) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": f"wh-{uuid.uuid4().hex[:12]}", "source": "/warehouse",
                         "type": "shipment.delivered", "data": {"order_id": order_id, "carrier": "CTT"}})


def test_a_warehouse_event_marks_the_order_delivered_and_a_malformed_one_is_a_dead_letter(
        warehouse_gateway: Any) -> None:
    app, client, overrides = warehouse_gateway()
    prefix = overrides["events.subject_prefix"]
    order = client.post("/v2/orders", json=ORDER).json()
    garbage = b"\xff{not json at all"
    asyncio.run(_send(overrides["events.url"], f"{prefix}.warehouse.shipment.delivered.v1",
                      overrides["events.trigger_stream"], [garbage, shipment(order["id"])]))
    wait_for("the order to be delivered", lambda: client.get(f"/v2/orders/{order['id']}").json()["status"]
             == "delivered")
    dead = wait_for("the malformed message as a dead letter",
                    lambda: _run(app, lambda s: s.dead_letters(DeadLetterFilter(vendor="carrier"))))
    [letter] = dead
    assert base64.b64decode(letter.problem["raw"]) == garbage
    assert "not JSON" in letter.problem["detail"]
    # The delivery is a fact on the backbone too: order.created, then order.delivered, from the gateway.
    got = asyncio.run(read_subject(overrides["events.url"], f"{prefix}.orders.>", 2))
    assert [e["type"] for e in got] == ["order.created", "order.delivered"]


def test_a_triggered_job_that_the_vendor_refuses_is_a_dead_letter_and_replays(warehouse_gateway: Any,
                                                                               sandboxes: Any) -> None:
    app, client, overrides = warehouse_gateway()
    order = client.post("/v2/orders", json=ORDER).json()
    fault(sandboxes.urls["woocommerce"], {"method": "PUT", "path": "/wp-json/wc/v3/orders/", "status": 400,
                                          "times": 1})
    asyncio.run(_send(overrides["events.url"], f"{overrides['events.subject_prefix']}.warehouse.shipment."
                      "delivered.v1", overrides["events.trigger_stream"], [shipment(order["id"])]))
    [letter] = wait_for("the refused delivery as a dead letter",
                        lambda: _run(app, lambda s: s.dead_letters(DeadLetterFilter(vendor="carrier"))))
    assert letter.name == "carrier:shipment.delivered"
    assert client.get(f"/v2/orders/{order['id']}").json()["status"] != "delivered"
    assert _run(app, lambda s: s.replay(letter.id))
    wait_for("the replayed job to deliver the order",
             lambda: client.get(f"/v2/orders/{order['id']}").json()["status"] == "delivered")
    assert httpx.get(sandboxes.urls["woocommerce"] + "/_sandbox/stats").status_code == 200


def _run(app: Any, call: Any) -> Any:
    """`call(store)` on a store of our own over the gateway's SQLite file (as `gateway dlq` does)."""
    async def run() -> Any:
        store = SqliteJobStore(Path(app.runtime.settings.jobs.sqlite_path), timeout_s=5)
        await store.start()
        try:
            return await call(store)
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.mark.parametrize(("a", "b", "both"), [
    ("events.*.order.created.*", "events.orders.>", "events.orders.order.created.*"),  # --type over a stream
    ("events.>", "events.orders.>", "events.orders.>"),
    ("t.shop.order.v1", "t.shop.>", "t.shop.order.v1"),
    ("t.x.order.v1", "t.shop.>", None),
    ("a.b", "a.b.c", None),
    ("a.*", "a.>", "a.*"),
])
def test_filters_meet_the_streams_subjects(a: str, b: str, both: str | None) -> None:
    from gateway.events.consume import intersect

    assert intersect(a, b) == both
    assert intersect(b, a) == both


# -- partner webhooks fed from the backbone ------------------------------------------------------------------------

def test_partner_webhooks_are_fed_from_the_backbone_with_the_same_event(demo_gateway: Any, serve_app: Any) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gateway.webhooks.signatures import verify_standard

    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: Request) -> JSONResponse:
        received.append((dict(request.headers), await request.body()))
        return JSONResponse({"ok": True})

    partner = serve_app(Starlette(routes=[Route("/hooks", hook, methods=["POST"])])).url + "/hooks"
    secret = "whsec_" + base64.b64encode(b"partner-secret-for-the-feed-000").decode()
    overrides = {"events.enabled": True, "events.url": nats_url(), "events.relay_poll_s": 0.05,
                 **unique_prefixes(), "events.triggers": [],
                 "webhooks.subscriptions": [{"id": "acme", "url": partner, "secret": secret,
                                             "events": ["order.created"]}]}
    app, client = demo_gateway(**overrides)
    order = client.post("/v2/orders", json=ORDER).json()
    [on_backbone] = asyncio.run(read_subject(overrides["events.url"], f"{overrides['events.subject_prefix']}.>", 1))
    wait_for("the partner's delivery", lambda: received)
    headers, body = received[0]
    delivered = orjson.loads(body)
    assert delivered == {"id": on_backbone["id"], "type": "order.created", "version": "v2",
                         "created_at": on_backbone["time"], "data": order}
    assert headers["webhook-id"] == on_backbone["id"]
    verify_standard(body, headers, [secret])  # raises if the signature is wrong
    assert len(received) == 1


def test_an_owner_scoped_subscription_fed_from_the_backbone_gets_only_its_owners_events(demo_gateway: Any,
                                                                                        serve_app: Any) -> None:
    """Two partners each create an order. The operator's endpoint (no owner) gets both events; each partner's own
    endpoint gets only the event about its own order (docs/ownership.md), through the backbone feed as through
    direct deliveries."""
    import sqlite3

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.conftest import bearer

    received: dict[str, list[str]] = {"operator": [], "first": [], "second": []}

    async def hook(request: Request) -> JSONResponse:
        received[request.path_params["who"]].append(orjson.loads(await request.body())["data"]["id"])
        return JSONResponse({"ok": True})

    partner = serve_app(Starlette(routes=[Route("/hooks/{who}", hook, methods=["POST"])])).url + "/hooks/"
    secret = "whsec_" + base64.b64encode(b"partner-secret-for-the-feed-000").decode()
    subscriptions = [{"id": "operator", "url": partner + "operator", "secret": secret, "events": ["order.created"]},
                     {"id": "first", "url": partner + "first", "secret": secret, "events": ["order.created"],
                      "owner": "demo-partner"},
                     {"id": "second", "url": partner + "second", "secret": secret, "events": ["order.created"],
                      "owner": "demo-partner-2"}]
    overrides = {"events.enabled": True, "events.url": nats_url(), "events.relay_poll_s": 0.05,
                 **unique_prefixes(), "events.triggers": [], "webhooks.subscriptions": subscriptions}
    app, client = demo_gateway(**overrides)
    first = client.post("/v2/orders", json=ORDER).json()["id"]
    second = client.post("/v2/orders", json=ORDER, headers=bearer(app, "demo-partner-2")).json()["id"]
    # Each subscription's consumer takes the events in the stream's order: once "first" has seen the second order
    # go by (it is the last event), whatever it was going to get of the two is enqueued.
    wait_for("every delivery", lambda: len(received["operator"]) == 2 and received["first"] and received["second"])
    assert sorted(received["operator"]) == sorted([first, second])
    assert received["first"] == [first] and received["second"] == [second]
    with sqlite3.connect(app.runtime.settings.jobs.sqlite_path) as db:
        jobs = dict(db.execute("SELECT vendor, count(*) FROM jobs WHERE kind = 'webhook_out' GROUP BY vendor"))
    assert jobs == {"webhook:operator": 2, "webhook:first": 1, "webhook:second": 1}
