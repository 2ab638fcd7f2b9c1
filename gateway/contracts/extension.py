"""The `x-gateway` extension: what a contract says about how the gateway serves it.

At the document root (applies to every operation of the API):

    x-gateway:
      api: orders                 # API name in metrics, logs and the docs portal (default: file name)
      version: v1                 # default: "v" + major of info.version
      response_validation: report # enforce (default, from gateway.yaml) | report
      deprecation: {date: 2026-09-01, sunset: 2027-06-30, link: https://..., successor: /v2/orders}
      mapping: orders_v2          # gateway/mappings/orders_v2.py maps this version onto the adapter's model
      limits:                     # buckets every operation consumes; plans in gateway.yaml override the numbers
        requests: {quota: 100000/day}
      version_header: API-Version # also serve the paths without the /vN prefix, version chosen by this header
      route: upstream.forward     # the default route of every operation that names none (a third-party document)
      bracketed_arrays: true      # accept a[]=x / a[0]=x for array query parameters and form fields (default)
      priority: normal            # critical | high | normal | low: what is shed last and first under overload
      ownership:                  # object-level authorization (docs/ownership.md): objects belong to their creator
        owner: client             # client (the caller's client id) | claim:<name> (e.g. claim:tenant_id)
        bypass_scopes: [orders:all]   # callers holding one of these see and change every owner's objects

On a path item (applies to its operations that name no route): `route` and `upstream_path`.

On an operation:

    x-gateway:
      route: woocommerce.create_order    # <vendor from gateway.yaml>.<adapter operation>  (required)
      upstream_path: /orders/{order_id}  # http adapter only: where to forward (default: the contract path)
      response_validation: enforce
      options: {...}                     # static options handed to the adapter operation
      deprecation: {...}                 # as at the root, for this operation only
      timeout_s: 5                       # deadline for the vendor side of this operation (504 after)
      idempotency: required              # Idempotency-Key: required | optional (POST/PATCH default) | off
      limits: {writes: {rate: 20/second, burst: 40}}   # more buckets (or new numbers for one of the API's)
      async: {mode: allowed, ordering_key: order_id}    # 202 + status resource (Prefer: respond-async)
      emits: order.delivered             # after success, an event for webhook subscribers
      slo: {availability: 99.9, latency_ms: {p: 95, under: 250}}   # gateway/monitoring (docs/monitoring.md)
      volume: {band: {below: 0.5, above: 3}}                         # hourly throughput vs a learned baseline
      calendar: payments-desk            # its jobs run only in these business hours (root `calendars:`)
      priority: high                     # under overload (gateway/http/admission.py): critical | high | normal | low
      sensitive: true                    # opaque tokens are introspected on every call (revocation at once)
      ownership: gateway-filtered        # as at the root (fields merged, the operation's win); on a list the
                                         # vendor cannot filter: the gateway filters it ({mode: gateway-filtered});
                                         # `ownership: none` leaves an operation of an owned API unowned

Values set on the operation win over the root, which wins over gateway.yaml (merged once, at compile time).
Unknown keys are errors, so a typo cannot silently disable a policy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.monitoring.models import CalendarSpec, SloSpec, VolumeSpec
from gateway.settings import BucketSpec

Priority = Literal["critical", "high", "normal", "low"]


class _Ext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Deprecation(_Ext):
    """When an API version or operation was deprecated, when it stops answering, and where to go instead."""

    date: dt.date | dt.datetime | None = None
    sunset: dt.date | dt.datetime | None = None
    link: str | None = Field(None, pattern=r"^(https?://|/)")
    successor: str | None = Field(None, pattern=r"^(https?://|/)")

    @model_validator(mode="after")
    def _order(self) -> Deprecation:
        if self.date is not None and self.sunset is not None and _as_dt(self.sunset) < _as_dt(self.date):
            raise ValueError("sunset must not be earlier than the deprecation date")
        return self


def epoch(value: dt.date | dt.datetime | None) -> float | None:
    """A deprecation date as UTC epoch seconds (a date means its midnight UTC)."""
    return None if value is None else _as_dt(value).timestamp()


def _as_dt(value: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


class AsyncWork(_Ext):
    """Asynchronous processing of an operation: 202 Accepted, stored durably, run by workers, status resource."""

    mode: Literal["allowed", "required"] = "allowed"  # allowed: only with `Prefer: respond-async`
    max_attempts: int = Field(8, ge=1, le=100)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_cap_s: float = Field(3600.0, gt=0)
    max_age_s: float = Field(86_400.0, gt=0)
    ordering_key: str | None = None  # a parameter name, or a JSON pointer into the body: such jobs run in order


class Reference(_Ext):
    """An owned object a request names (e.g. the order a shipment is for): the caller must be able to read it."""

    field: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")  # a field of the request body holding its id
    operation: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}\.v[0-9]{1,3}\.[A-Za-z][A-Za-z0-9_]{0,99}$")  # its read


class Ownership(_Ext):
    """Whose objects a caller may see and change (gateway/policies/ownership.py, docs/ownership.md)."""

    # client: the caller's client id; claim:<name>: a claim of the caller's token (a tenant shared by its clients).
    owner: str | None = Field(None, pattern=r"^(client|claim:[A-Za-z_][A-Za-z0-9_.:-]{0,63})$")
    bypass_scopes: list[str] | None = None  # e.g. [orders:all]: operators and back offices see everything
    # vendor: the adapter filters lists at the vendor; gateway-filtered: the gateway drops other owners' items
    # (a list the vendor cannot filter); none: the operation is not owned although its API is.
    mode: Literal["vendor", "gateway-filtered", "none"] | None = None
    # A request body field a caller might use to name an owner: refused (400) if sent. Default: `owner`.
    body_field: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
    # Gateway-filtered lists: where the items, the next cursor, the cursor and the limit are (the contract's names).
    items: str | None = None
    next_cursor: str | None = None
    cursor_param: str | None = None
    limit_param: str | None = None
    # Objects of other APIs the request names by id: before the vendor is called, each is read through its
    # operation (api.version.operationId, one path parameter) with the caller's identity, so its ownership
    # applies: missing or another owner's is 404, as for this API's own objects.
    references: list[Reference] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value


class ApiExtension(_Ext):
    api: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{0,40}$")
    version: str | None = Field(None, pattern=r"^v[0-9]{1,3}$")
    response_validation: Literal["enforce", "report"] | None = None
    deprecation: Deprecation | None = None
    limits: dict[str, BucketSpec] | None = None  # buckets every operation of the API consumes
    # A version mapping (gateway/mappings/<name>.py) between this version's shapes and the adapter's model.
    mapping: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,40}$")
    # Opt in to header selection: paths without the version prefix pick the version from this header.
    version_header: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
    timeout_s: float | None = Field(None, gt=0, le=300)
    route: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")  # the default route
    bracketed_arrays: bool | None = None  # tolerance for a[]=x / a[0]=x (docs/contracts.md); default on
    calendars: dict[str, CalendarSpec] | None = None  # business calendars (gateway/monitoring/calendar.py)
    priority: Priority | None = None
    ownership: Ownership | None = None  # objects belong to whoever created them (docs/ownership.md)


class PathExtension(_Ext):
    """`x-gateway` on a path item: the route (and upstream path) of its operations that name none."""

    route: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")
    upstream_path: str | None = Field(None, pattern=r"^/")


class OperationExtension(_Ext):
    route: str = Field(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")
    upstream_path: str | None = Field(None, pattern=r"^/")
    response_validation: Literal["enforce", "report"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    deprecation: Deprecation | None = None
    timeout_s: float | None = Field(None, gt=0, le=300)  # this operation's deadline (default request.deadline_s)
    idempotency: Literal["required", "optional", "off"] | None = None
    limits: dict[str, BucketSpec] | None = None  # buckets this operation consumes (same name: replaces the API's)
    async_: AsyncWork | None = Field(None, alias="async")
    emits: str | None = Field(None, pattern=r"^[a-z]+\.[a-z_]+$")  # an event for webhook subscribers
    # Monitoring (gateway/monitoring/, docs/monitoring.md): objectives, volume baselines, business hours for jobs.
    slo: SloSpec | None = None
    volume: VolumeSpec | None = None
    calendar: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{0,62}$")
    priority: Priority | None = None  # shed order under overload (default normal)
    sensitive: bool = False  # an opaque token is introspected on every call, never from the cache (docs/security.md)
    ownership: Ownership | None = None  # merged over the root's, field by field (docs/ownership.md)
