"""Events through the running gateway: a request's success reaches the backbone as a CloudEvent, synchronously or
as a job; data that breaks its schema is refused at the source; the catalog comes from the contracts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.observability import metrics
from tests.jobsupport import ASYNC, ORDER, settle, wait_for
from tests.natssupport import nats_url, read_subject, unique_prefixes

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def events_on(**more: Any) -> dict[str, Any]:
    return {"events.enabled": True, "events.url": nats_url(), "events.relay_poll_s": 0.05, **unique_prefixes(),
            "events.triggers": [], **more}  # gateway.yaml's demo trigger reads a subject shared by everyone


def read(url: str, subject: str, expect: int) -> list[dict[str, Any]]:
    return asyncio.run(read_subject(url, subject, expect))


def test_an_order_created_reaches_the_backbone_as_a_cloudevent_with_its_trace_and_owner(demo_gateway) -> None:
    overrides = events_on()
    app, client = demo_gateway(**overrides)
    answer = client.post("/v2/orders", json=ORDER, headers={"traceparent": TRACE})
    assert answer.status_code == 201, answer.text
    order = answer.json()
    prefix = overrides["events.subject_prefix"]
    [got] = read(overrides["events.url"], f"{prefix}.>", expect=1)
    assert got["_subject"] == f"{prefix}.orders.order.created.v2"
    assert got["specversion"] == "1.0" and got["type"] == "order.created"
    assert got["source"] == "/contract-gateway/orders/v2"
    assert got["id"].startswith("evt_") and got["datacontenttype"] == "application/json"
    assert got["traceparent"].split("-")[1] == TRACE.split("-")[1]  # the request's trace
    assert got["owner"] == "demo-partner"  # the client whose request caused it
    assert got["subject"] == str(order["id"])
    assert got["dataschema"] == "/contracts/events/asyncapi.json#/components/messages/orders_order_created_v2"
    doc = client.get("/contracts/events/asyncapi.json").json()  # the schema it names is in the served document
    assert "orders_order_created_v2" in doc["components"]["messages"]
    assert got["data"] == order  # the answer the client got, in its version
    assert time.time() - time.mktime(time.strptime(got["time"][:19], "%Y-%m-%dT%H:%M:%S")) < 3600 * 24


def test_an_order_created_as_a_job_is_published_once_with_the_jobs_outcome(demo_gateway) -> None:
    overrides = events_on()
    app, client = demo_gateway(**overrides)
    accepted = client.post("/v2/orders", json=ORDER, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    done = settle(client, accepted.headers["location"])
    assert done["state"] == "succeeded", done
    prefix = overrides["events.subject_prefix"]
    [got] = read(overrides["events.url"], f"{prefix}.>", expect=1)
    assert got["type"] == "order.created" and got["owner"] == "demo-partner"
    assert got["data"] == done["result"]["body"]


def test_event_data_that_breaks_its_schema_is_refused_at_the_source(demo_gateway) -> None:
    overrides = events_on(response_validation="report")  # the answer itself still reaches the client
    app, client = demo_gateway(**overrides)
    entry = app.runtime.services.bus.catalog.find("orders", "v2", "order.created")
    refused_before = metrics.events_refused_total.labels("order.created")._value.get()
    original = entry.violations
    entry.violations = lambda data: original({**data, "status": "no-such-status"})  # what a broken mapping makes
    try:
        assert client.post("/v2/orders", json=ORDER).status_code == 201
    finally:
        entry.violations = original
    wait_for("the refusal to be counted",
             lambda: metrics.events_refused_total.labels("order.created")._value.get() == refused_before + 1)

    # A valid order afterwards is published; the refused one never was (nor stored: the outbox is empty).
    second = client.post("/v2/orders", json=ORDER).json()
    [got] = read(overrides["events.url"], f"{overrides['events.subject_prefix']}.>", expect=1)
    assert got["data"]["id"] == second["id"]


def test_the_catalog_derives_subjects_and_streams_from_the_contracts(demo_gateway) -> None:
    overrides = events_on()
    app, _ = demo_gateway(**overrides)
    catalog = app.runtime.services.bus.catalog
    prefix = overrides["events.subject_prefix"]
    subjects = {e.subject: e for e in catalog.types()}
    assert set(subjects) >= {f"{prefix}.orders.order.created.v2", f"{prefix}.orders.order.delivered.v2",
                             f"{prefix}.payments.payment.refunded.v1"}
    assert subjects[f"{prefix}.orders.order.created.v2"].webhook == "orderCreated"  # its schema: the webhook's
    assert subjects[f"{prefix}.payments.payment.refunded.v1"].webhook is None  # no webhook: the answer's schema
    stream = overrides["events.stream_prefix"] + "_ORDERS"
    assert catalog.streams()[stream] == [f"{prefix}.orders.>"]


@pytest.mark.parametrize("bad", [{"id": 7}, {"status": "shipped"}])
def test_catalog_violations_name_what_is_wrong(demo_gateway, bad: dict[str, Any]) -> None:
    app, client = demo_gateway(**events_on())
    order = client.post("/v2/orders", json=ORDER).json()
    entry = app.runtime.services.bus.catalog.find("orders", "v2", "order.created")
    assert entry.violations(order) == []
    problems = entry.violations({**order, **bad})
    assert problems and f"/{next(iter(bad))}" in problems[0]


def test_v1_and_v2_of_an_event_are_published_side_by_side_during_a_migration(demo_gateway, tmp_path) -> None:
    from tests.jobsupport import contracts_with

    # v1 of createOrder emits order.created too: its events carry v1's shapes on the v1 subject, in the same stream.
    contracts = contracts_with(tmp_path, {"orders.v1/createOrder": {"emits": "order.created"}})
    overrides = events_on(contracts=[str(contracts)], contracts_cache=None)
    app, client = demo_gateway(**overrides)
    v1 = client.post("/v1/orders", json=ORDER).json()
    v2 = client.post("/v2/orders", json=ORDER).json()
    prefix = overrides["events.subject_prefix"]
    got = read(overrides["events.url"], f"{prefix}.orders.>", expect=2)
    by_subject = {e["_subject"]: e for e in got}
    assert set(by_subject) == {f"{prefix}.orders.order.created.v1", f"{prefix}.orders.order.created.v2"}
    old, new = by_subject[f"{prefix}.orders.order.created.v1"], by_subject[f"{prefix}.orders.order.created.v2"]
    assert old["data"] == v1 and old["data"]["total"] == "39.98" and old["apiversion"] == "v1"
    assert new["data"] == v2 and new["data"]["total"] == {"amount": 3998, "currency": "EUR"}
    doc = client.get("/contracts/events/asyncapi.json").json()
    assert {"orders_order_created_v1", "orders_order_created_v2"} <= set(doc["channels"])
