"""The event backbone of one gateway process: the catalog, the CloudEvents envelope, the NATS connection, the relay.

An event, as published on `events.<api>.<type>.v<major>` (CloudEvents 1.0, JSON structured mode):

    {"specversion": "1.0", "id": "evt_...", "source": "/contract-gateway/orders/v2", "type": "order.created",
     "time": "2026-...Z", "datacontenttype": "application/json", "subject": "<data.id>",
     "dataschema": "/contracts/events/asyncapi.json#/components/messages/orders_order_created_v2",
     "traceparent": "00-...", "owner": "<client id>", "apiversion": "v2", "data": {...}}

`id` is the webhook event id (derived from the request and the answer, so a job that runs again produces the same
event), `traceparent` the request's trace (the CloudEvents distributed-tracing extension), `owner` the client
whose request caused it. `data` is checked against the contract's schema before anything is stored: an event that
breaks it is refused at the source, logged and counted, never published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nats
import orjson
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from gateway.observability import metrics

from .catalog import Catalog
from .outbox import OutboxEvent
from .relay import Relay

if TYPE_CHECKING:
    from gateway.contracts.load import Contract
    from gateway.jobs.model import JobStore
    from gateway.settings import EventSettings

log = logging.getLogger("gateway.events")


class EventRefused(Exception):
    """The event's data breaks its declared schema: it is not stored nor published."""


def servers_of(url: str) -> list[str]:
    return [u.strip() for u in url.split(",") if u.strip()]


class EventBus:
    def __init__(self, settings: EventSettings, store: JobStore, run_relay: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.catalog: Catalog | None = None
        self.nc: Any = None
        self.js: Any = None
        self.relay = Relay(store, settings, self.jetstream) if run_relay else None
        self.consumers: list[Any] = []  # started and stopped with the bus (triggers.py)
        self._streams_ready = False
        self._connecting = asyncio.Lock()

    def load(self, contracts: list[Contract]) -> None:
        self.catalog = Catalog(contracts, self.settings)
        for problem in self.catalog.problems:
            log.warning("events: %s", problem)

    # -- the envelope ----------------------------------------------------------------------------------------------

    def envelope(self, api: str, version: str, event: dict[str, Any], *, traceparent: str | None = None,
                 owner: str | None = None) -> OutboxEvent:
        """The CloudEvents form of a webhook event `{id, type, version, created_at, data}` of (api, version)."""
        assert self.catalog is not None, "EventBus.load() runs at start-up"
        entry = self.catalog.find(api, version, event["type"])
        if entry is None:
            raise EventRefused(f"{api} {version} declares no event {event['type']!r}")
        data = event["data"]
        violations = entry.violations(data)
        if violations:
            metrics.events_refused_total.labels(entry.type).inc()
            raise EventRefused(f"{entry.type} ({api} {version}) breaks its schema: " + "; ".join(violations))
        ce: dict[str, Any] = {"specversion": "1.0", "id": event["id"], "source": f"{self.settings.source}/{api}/"
                              f"{version}", "type": entry.type, "time": event["created_at"],
                              "datacontenttype": "application/json",
                              "dataschema": f"/contracts/events/asyncapi.json#/components/messages/{entry.key}",
                              "apiversion": version}
        if isinstance(data, dict) and isinstance(data.get("id"), (str, int)):
            ce["subject"] = str(data["id"])
        if traceparent:
            ce["traceparent"] = traceparent
        if owner:
            ce["owner"] = owner
        ce["data"] = data
        return OutboxEvent(event["id"], entry.subject, orjson.dumps(ce))

    # -- the connection ----------------------------------------------------------------------------------------

    async def jetstream(self) -> Any:
        """A JetStream context on a live connection, with the catalog's streams in place.

        One connection for the whole process: the relay, each webhook feed and each consumer ask for it at start-up
        at the same moment, and without the lock each of them opened its own (all but the last never closed)."""
        async with self._connecting:
            if self.nc is None or self.nc.is_closed:
                self.nc = await nats.connect(servers=servers_of(self.settings.url), connect_timeout=2,
                                             max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                             allow_reconnect=True, error_cb=self._quiet, disconnected_cb=None)
                self.js = self.nc.jetstream(timeout=self.settings.publish_timeout_s)
                self._streams_ready = False
            if not self.nc.is_connected:
                raise ConnectionError("NATS is not connected (reconnecting)")
            if not self._streams_ready:
                await ensure_streams(self.js, self.settings, self.catalog)
                self._streams_ready = True
            return self.js

    async def _quiet(self, exc: Exception) -> None:
        log.debug("nats: %s", exc)

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()
        if self.relay is not None:
            self.relay.start()

    def notify(self, events: Sequence[OutboxEvent] = ()) -> None:
        """`events` were just committed by this process: the relay publishes them now."""
        if self.relay is not None:
            self.relay.notify(events)

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as exc:  # noqa: BLE001 - closing a connection that already broke
                log.debug("nats drain: %s", exc)
            if not self.nc.is_closed:
                await self.nc.close()


def stream_config(name: str, subjects: list[str], settings: EventSettings) -> StreamConfig:
    return StreamConfig(name=name, subjects=subjects, retention=RetentionPolicy(settings.retention),
                        storage=StorageType(settings.storage), num_replicas=settings.replicas,
                        max_age=settings.max_age_s, duplicate_window=settings.duplicate_window_s,
                        discard=DiscardPolicy.OLD)


async def ensure_streams(js: Any, settings: EventSettings, catalog: Catalog | None) -> None:
    """Create or update each stream the contracts (and the trigger subjects) need."""
    wanted = dict(catalog.streams()) if catalog is not None else {}
    if settings.triggers:
        wanted[settings.trigger_stream] = sorted({t.subject for t in settings.triggers})
    for name, subjects in wanted.items():
        config = stream_config(name, subjects, settings)
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("events: stream %s created for %s", name, ", ".join(subjects))
            continue
        if sorted(info.config.subjects or []) != sorted(subjects) or info.config.max_age != config.max_age:
            await js.update_stream(config)
