"""The records each side of a reconciliation rule reads: a page at a time, through the vendor's adapter.

A `source` lists records created in a window: the adapter operation gets `since`, `until` (ISO 8601), `limit`,
`cursor` and the side's `where` values and `params`, and answers `{"data": [...], "next_cursor": ...}` in our own
model (adapters/*: `woocommerce.reconcile_orders`, `stripe.list_payments`). A `lookup` finds records by key, up to
100 keys a call (`hubspot.find_customers`: `{"keys": [...]}` -> `{"data": [...]}`). Every call goes through the
vendor's client, so its rate limits, retry budget and breaker apply as to any request.

`gateway.inbound_events` lists the vendor events the gateway received and stored (inbound webhooks are jobs):
records `{event_id, vendor, type, order_id, state, received_at}`, `where: {type: [shipment.delivered]}`.

A failure says whether it is transient (the vendor is down, slow, or asks us to wait: the run pauses and resumes
later) or not (a refusal or a broken answer: the run fails, loudly). Neither ever becomes a mismatch.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from adapters.base import AdapterCall
from gateway.jobs.model import iso
from gateway.problems import (
    GatewayError,
    RateLimited,
    ServerProblem,
    UpstreamContractViolation,
    VendorCredentialsRejected,
)

if TYPE_CHECKING:
    from gateway.runtime import Runtime

    from .models import Side
    from .store import MonitoringStore

EVENTS = "gateway.inbound_events"


class SourceFailed(Exception):
    def __init__(self, vendor: str, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.vendor, self.reason, self.transient = vendor, reason, transient


def field(record: Any, path: str) -> Any:
    """A dotted path into a record (`customer.email`); None where it does not lead anywhere."""
    node = record
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def keep(side: Side, record: dict[str, Any]) -> bool:
    """The side's `where` (every field among its values) and `exclude` (no field among its values)."""
    for name, values in side.where.items():
        if field(record, name) not in values:
            return False
    return not any(field(record, name) in values for name, values in side.exclude.items())


def transient(exc: GatewayError) -> bool:
    """Worth waiting for: the vendor failed, timed out, is unreachable or asks us to slow down."""
    if isinstance(exc, (UpstreamContractViolation, VendorCredentialsRejected)):
        return False
    return isinstance(exc, (ServerProblem, RateLimited))


async def call_adapter(runtime: Runtime, ref: str, params: dict[str, Any], request_id: str) -> dict[str, Any]:
    vendor, _, name = ref.partition(".")
    adapter = runtime.adapters.get(vendor)
    if adapter is None:
        raise SourceFailed(vendor, f"vendor {vendor} has no running adapter", transient=False)
    call = AdapterCall(operation_id=name, params=params, request_id=request_id, method="GET",
                       deadline=time.monotonic() + 60)
    try:
        result = await getattr(adapter, name)(call)
    except GatewayError as exc:
        raise SourceFailed(vendor, f"{exc.slug}: {exc.detail or exc.title}", transient(exc)) from None
    body = result.body if isinstance(result.body, dict) else {}
    return body


async def list_page(runtime: Runtime, store: MonitoringStore, side: Side, since: float, until: float,
                    cursor: str | None, limit: int, request_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a `source` side, before its filters; (records, next cursor or None)."""
    assert side.source is not None
    if side.source == EVENTS:
        return await inbound_events(store, side, since, until, cursor, limit)
    params = {**side.params, **{k: v for k, v in side.where.items() if "." not in k}, "since": iso(since),
              "until": iso(until), "limit": limit, "cursor": cursor}
    body = await call_adapter(runtime, side.source, params, request_id)
    return list(body.get("data") or []), body.get("next_cursor")


async def lookup(runtime: Runtime, side: Side, keys: list[str], request_id: str) -> list[dict[str, Any]]:
    assert side.lookup is not None
    body = await call_adapter(runtime, side.lookup, {**side.params, "keys": keys}, request_id)
    return list(body.get("data") or [])


async def inbound_events(store: MonitoringStore, side: Side, since: float, until: float, cursor: str | None,
                         limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Inbound webhook events stored in the job store (read only), oldest first; the cursor is the table's seq."""
    after = int(cursor or 0)
    try:
        rows = await store.fetch(f"SELECT seq, id, name, payload, state, created_at FROM {store.jobs_table} WHERE "
                                 "kind = 'webhook_in' AND created_at >= ? AND created_at <= ? AND seq > ? "
                                 "ORDER BY seq LIMIT ?", since, until, after, limit)
    except Exception as exc:  # the database is down: a transient failure like any vendor's
        raise SourceFailed("gateway", f"the job store cannot be read: {type(exc).__name__}", transient=True) from None
    records = []
    for _seq, job_id, name, payload, state, created in rows:
        vendor, _, event_type = name.partition(":")
        event = (payload if isinstance(payload, dict) else orjson.loads(payload)).get("event") or {}
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        obj = data.get("object", data) if isinstance(data, dict) else {}
        order = (obj.get("metadata") or {}).get("order_id") if isinstance(obj.get("metadata"), dict) else None
        records.append({"event_id": job_id, "vendor": vendor, "type": event_type, "state": state,
                        "order_id": order or obj.get("order_id"), "received_at": iso(created), "data": obj})
    return records, (str(rows[-1][0]) if len(rows) == limit else None)


def created_at(record: dict[str, Any]) -> float | None:
    """When a record was created, from its `created_at` (or `received_at`) field."""
    value = record.get("created_at") or record.get("received_at")
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
