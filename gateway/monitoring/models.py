"""The shapes of what is declared for monitoring: SLOs, volume monitors and business calendars in the contracts'
`x-gateway`, reconciliation rules (`reconcile/*.yaml`) and synthetic golden paths (`synthetic/*.yaml`).

Pydantic models only (no I/O): the contract lint validates the `x-gateway` parts with them, and
gateway/monitoring/declarations.py loads the rule files and checks what needs the compiled operations (unknown
operation, an objective that cannot be measured or met). Unknown keys are errors, as everywhere in `x-gateway`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_NAME = r"^[a-z][a-z0-9-]{0,62}$"  # rule, path and step names


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def seconds(value: str | float | int) -> float:
    """`90s`, `15m`, `6h`, `7d` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration (e.g. 90s, 15m, 6h, 7d)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# -- SLOs (x-gateway.slo on an operation) --------------------------------------------------------------------------

class LatencyObjective(_Model):
    """`p` percent of requests are answered in less than `under` milliseconds."""

    p: float = Field(gt=0, le=100)
    under: float = Field(gt=0)


class FreshnessObjective(_Model):
    """Asynchronous operations: `p` percent of accepted jobs are done at the vendor within `within_s` seconds."""

    p: float = Field(99.0, gt=0, le=100)
    within_s: float = Field(gt=0)


class SloSpec(_Model):
    """`x-gateway.slo: {availability: 99.9, latency_ms: {p: 95, under: 250}, freshness: {within_s: 60}}`."""

    availability: float | None = Field(None, gt=0, le=100)  # percent of requests not answered with a 5xx
    latency_ms: LatencyObjective | None = None
    freshness: FreshnessObjective | None = None
    window_days: int = Field(28, ge=1, le=90)  # the error budget's period

    @model_validator(mode="after")
    def _something(self) -> SloSpec:
        if self.availability is None and self.latency_ms is None and self.freshness is None:
            raise ValueError("declare at least one objective: availability, latency_ms or freshness")
        return self


# -- volume monitors (x-gateway.volume on an operation) -------------------------------------------------------------

class Band(_Model):
    """An hour is anomalous when it saw fewer than `below` x or more than `above` x what its baseline expects."""

    below: float = Field(0.5, ge=0, lt=1)
    above: float = Field(3.0, gt=1)


class VolumeSpec(_Model):
    """Throughput per hour of the week against a learned baseline; also error ratio and the weekly p95 trend."""

    band: Band = Band()
    min_history: int = Field(3, ge=1, le=52)  # weeks of the same hour of the week before an hour is judged
    min_expected: float = Field(5.0, ge=0)  # hours whose baseline expects fewer than this are not judged
    # An adapter operation of the same vendor answering {"total": N}: the records the vendor holds. Its hourly
    # growth is judged like the gateway's own throughput (a vendor that accepts but does not record).
    recorded: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    error_ratio_above: float | None = Field(None, gt=0, lt=1)  # an hour with a larger 5xx share is an anomaly
    latency_p95_rise: float | None = Field(None, gt=1)  # the last 7 days' p95 over the 7 days before


# -- business calendars (x-gateway.calendars at the root, x-gateway.calendar on an operation) -----------------------

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _workweek() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class CalendarSpec(_Model):
    """When held work may run: open days and hours in a time zone, closed dates, and a month-end close."""

    timezone: str = "UTC"
    days: list[Weekday] = Field(default_factory=_workweek, min_length=1)
    hours: list[str] = Field(default_factory=lambda: ["00:00-24:00"], min_length=1)  # "08:00-18:00", local time
    closed: list[dt.date] = Field(default_factory=list)  # holidays
    month_end_close_days: int = Field(0, ge=0, le=10)  # the last N days of every month are closed

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Europe/Lisbon)") from None
        return v

    @field_validator("hours")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for text in v:
            m = _HOURS.match(text)
            if not m or (int(m.group(3)) * 60 + int(m.group(4))) <= (int(m.group(1)) * 60 + int(m.group(2))):
                raise ValueError(f"{text!r} is not an opening range like 08:00-18:00 (end after start)")
            if m.group(3) == "24" and m.group(4) != "00":
                raise ValueError(f"{text!r}: 24:00 is the latest end")
        return v


# -- reconciliation rules (reconcile/*.yaml) -----------------------------------------------------------------------

class Side(_Model):
    """One system's records: an adapter operation (`vendor.operation`) listing them over a window, or looking them
    up by key; `gateway.inbound_events` lists the vendor events the gateway received and stored."""

    source: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")
    lookup: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")
    key: str = Field(min_length=1)  # a dotted path into each record: id, order_id, customer.email
    where: dict[str, list[Any]] = Field(default_factory=dict)  # field -> allowed values (also sent to the vendor)
    exclude: dict[str, list[Any]] = Field(default_factory=dict)  # field -> values that take a record out
    params: dict[str, Any] = Field(default_factory=dict)  # static parameters for the adapter operation
    slack_s: float = Field(0, ge=0)  # this side's window widened by this much at both ends
    label: str | None = None  # how people call this system in messages ("the commerce platform")

    @model_validator(mode="after")
    def _one(self) -> Side:
        if (self.source is None) == (self.lookup is None):
            raise ValueError("give exactly one of source (list over the window) or lookup (by key)")
        return self


class Compare(_Model):
    """Fields that must agree between the matched records (after an optional conversion of the left value)."""

    left: str
    right: str
    convert: Literal["minor_units", "upper", "lower"] | None = None  # minor_units uses the record's `currency`


class RuleSpec(_Model):
    description: str = Field(min_length=1)
    left: Side
    right: Side
    expect: Literal["one", "at_least_one"] = "one"  # how many right records each left record must have
    both_ways: bool = False  # right records without a left one are mismatches too
    compare: list[Compare] = Field(default_factory=list)
    every: str | None = None  # schedule, e.g. 1h (none: only `gateway reconcile`)
    window: str = "24h"  # how far back a scheduled run looks
    settle: str = "5m"  # records younger than this are in flight: not judged yet
    page_size: int = Field(100, ge=1, le=100)
    calendar: str | None = None  # scheduled runs held to a business calendar declared in a contract
    suggest: dict[str, str] = Field(default_factory=dict)  # missing | extra | differs | duplicate -> next step

    @field_validator("every", "window", "settle")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            seconds(v)
        return v


# -- synthetic golden paths (synthetic/*.yaml) ---------------------------------------------------------------------

class Step(_Model):
    """One call of a public operation (`api.version.operationId`); `{name}` in strings is filled from saved values."""

    name: str = Field(pattern=_NAME)
    operation: str = Field(pattern=r"^[a-z][a-z0-9-]*\.v[0-9]+\.[A-Za-z_][A-Za-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)  # path and query parameters
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    expect: int = Field(200, ge=100, le=599)
    check: dict[str, Any] = Field(default_factory=dict)  # JSON pointer into the answer -> expected value
    save: dict[str, str] = Field(default_factory=dict)  # name -> JSON pointer into the answer


class PathSpec(_Model):
    description: str = Field(min_length=1)
    every: str | None = "5m"
    calendar: str | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("every")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            seconds(v)
        return v
