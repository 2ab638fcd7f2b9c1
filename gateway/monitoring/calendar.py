"""Business calendars: when held work may run (retries, replays and scheduled runs of an operation or a rule).

    x-gateway:                                  # contract root
      calendars:
        payments-desk: {timezone: Europe/Lisbon, days: [mon, tue, wed, thu, fri], hours: ["08:00-18:00"],
                        closed: [2026-12-25], month_end_close_days: 2}
    paths: ... x-gateway: {calendar: payments-desk}   # on an operation

`next_open(t)` is the one function the rest of the gateway needs: the first instant at or after `t` when the
calendar is open. The job runner asks `held_until(op, now)` before it runs an attempt (gateway/jobs/runner.py), so
first runs, retries and replays of a held operation all wait for the next opening without calling the vendor.
Synchronous requests are never held: a caller is waiting for the answer.
"""

from __future__ import annotations

import calendar as cal
import datetime as dt
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .models import DAYS, CalendarSpec

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation

_SEARCH_DAYS = 400  # a calendar closed for longer than this is refused at start-up as never open


class BusinessCalendar:
    def __init__(self, name: str, spec: CalendarSpec) -> None:
        self.name = name
        self.spec = spec
        self.zone = ZoneInfo(spec.timezone)
        self.days = {DAYS.index(d) for d in spec.days}
        self.ranges = sorted((_minutes(r[:5]), _minutes(r[6:])) for r in spec.hours)
        self.closed = set(spec.closed)

    def _day_open(self, day: dt.date) -> bool:
        if day.weekday() not in self.days or day in self.closed:
            return False
        n = self.spec.month_end_close_days
        return not (n and day.day > cal.monthrange(day.year, day.month)[1] - n)

    def is_open(self, t: float) -> bool:
        return self.next_open(t) == t

    def next_open(self, t: float) -> float:
        """The first instant at or after `t` (unix seconds) when work may run."""
        local = dt.datetime.fromtimestamp(t, self.zone)
        day = local.date()
        for _ in range(_SEARCH_DAYS):
            if self._day_open(day):
                for start, end in self.ranges:
                    begin = _at(day, start, self.zone)
                    finish = _at(day, end, self.zone)
                    if t < finish:
                        return max(t, begin)
            day += dt.timedelta(days=1)
        raise ValueError(f"calendar {self.name} is never open")

    def describe(self) -> str:
        parts = [f"{','.join(self.spec.days)} {' '.join(self.spec.hours)} {self.spec.timezone}"]
        if self.spec.month_end_close_days:
            parts.append(f"closed the last {self.spec.month_end_close_days} days of each month")
        if self.closed:
            parts.append(f"{len(self.closed)} closed dates")
        return "; ".join(parts)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:5])


def _at(day: dt.date, minutes: int, zone: ZoneInfo) -> float:
    """Unix time of a local wall-clock time; 24:00 is the next midnight. A time skipped by a DST change resolves
    forward (zoneinfo's fold=0), so an opening never falls into a gap."""
    base = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    if minutes >= 1440:
        nxt = day + dt.timedelta(days=1)
        return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).timestamp()
    local = base.replace(hour=minutes // 60, minute=minutes % 60)
    return local.astimezone(dt.UTC).timestamp()


class Calendars:
    """Every calendar the contracts declare, and which operation is held to which."""

    def __init__(self) -> None:
        self.by_name: dict[str, BusinessCalendar] = {}
        self.by_operation: dict[str, BusinessCalendar] = {}

    def held_until(self, op: Operation, now: float) -> float | None:
        """None when `op` may run now; else when it may (the hook the job runner calls before an attempt)."""
        calendar = self.by_operation.get(op.key)
        if calendar is None:
            return None
        at = calendar.next_open(now)
        return None if at <= now else at
