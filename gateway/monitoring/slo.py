"""SLOs declared per operation (`x-gateway.slo`), their error budgets, and multi-window burn-rate alerts.

An objective of 99.9 % leaves an error budget of 0.1 % of requests over `window_days` (28 by default). The burn
rate is how fast it is being spent: the bad share of requests in a window divided by the budget (1 = the budget
lasts exactly the period). Alerts follow the SRE workbook's multiwindow, multi-burn-rate recipe ("Alerting on
SLOs", table 5-8): page when the last hour burns at 14.4x (2 % of a 30-day budget in one hour) *and* so do the last
5 minutes, or when the last 6 hours burn at 6x (5 % in six hours) and so do the last 30 minutes. The long window
makes the alert significant, the short one makes it stop soon after the problem does.

Three kinds of objective, each a ratio of bad to all events, from the gateway's own metrics (sampler.py):
    availability   bad = answers with a 5xx status                       (gateway_requests_total)
    latency        bad = answers not under `under` ms                    (gateway_request_seconds, bucket `under`)
    freshness      bad = async jobs done later than `within_s` after 202  (gateway_job_completion_seconds)
The same definitions become Prometheus recording and alerting rules (promrules.py), so a Prometheus server and the
gateway's own evaluator agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .models import SloSpec

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation

    from .store import MonitoringStore

# (long window, short window, burn-rate factor, severity): the SRE workbook's two paging pairs.
BURN_WINDOWS = (("1h", 3600, "5m", 300, 14.4, "page"), ("6h", 21600, "30m", 1800, 6.0, "page"))


@dataclass(frozen=True)
class Objective:
    op: Operation
    kind: str  # availability | latency | freshness
    target: float  # a fraction: 0.999
    bad: str  # sampler series kinds
    total: str
    bound_s: float | None  # latency or freshness bound
    window_days: int

    @property
    def budget(self) -> float:
        return 1.0 - self.target

    @property
    def name(self) -> str:
        return f"{self.op.key}:{self.kind}"

    def text(self) -> str:
        pct = f"{self.target * 100:g} %"
        if self.kind == "availability":
            return f"{pct} of {self.op.operation_id} requests answered without a 5xx"
        if self.kind == "latency":
            return f"{pct} of {self.op.operation_id} requests answered under {self.bound_s * 1000:g} ms"  # type: ignore
        return f"{pct} of accepted {self.op.operation_id} jobs done within {self.bound_s:g} s"


def objectives(operations: list[Operation]) -> list[Objective]:
    """Every objective the compiled operations declare (x-gateway.slo, already validated)."""
    out = []
    for op in operations:
        raw = op.extension.get("slo")
        if not raw:
            continue
        spec = SloSpec.model_validate(raw)
        if spec.availability is not None:
            out.append(Objective(op, "availability", spec.availability / 100, "err", "req", None, spec.window_days))
        if spec.latency_ms is not None:
            out.append(Objective(op, "latency", spec.latency_ms.p / 100, "slow", "req", spec.latency_ms.under / 1000,
                                 spec.window_days))
        if spec.freshness is not None:
            out.append(Objective(op, "freshness", spec.freshness.p / 100, "late", "done", spec.freshness.within_s,
                                 spec.window_days))
    return out


@dataclass(frozen=True)
class Burn:
    window: str
    rate: float
    bad: float
    total: float


async def burn(store: MonitoringStore, objective: Objective, now: float, window: str, seconds: int) -> Burn:
    """The burn rate over the last `seconds`, from every process's per-minute counts."""
    last = int(now // 60)
    first = last - seconds // 60 + 1
    total = await store.sum_counts(f"m|{objective.total}|{objective.op.key}", first, last)
    bad = await store.sum_counts(f"m|{objective.bad}|{objective.op.key}", first, last)
    ratio = bad / total if total else 0.0
    return Burn(window, ratio / objective.budget, bad, total)


@dataclass
class BurnAlert:
    objective: Objective
    long: Burn
    short: Burn
    factor: float
    severity: str

    def summary(self) -> str:
        o = self.objective
        return (f"{o.op.key} {o.kind} SLO burning its error budget at {self.long.rate:.1f}x over {self.long.window} "
                f"and {self.short.rate:.1f}x over {self.short.window}")

    def description(self) -> str:
        o = self.objective
        days = o.window_days / self.long.rate if self.long.rate else float("inf")
        return (f"Objective: {o.text()} over {o.window_days} days (error budget {o.budget * 100:g} %). "
                f"In the last {self.long.window} {self.long.bad:g} of {self.long.total:g} were bad, in the last "
                f"{self.short.window} {self.short.bad:g} of {self.short.total:g}; the alert threshold is "
                f"{self.factor:g}x in both windows. At this rate the whole {o.window_days}-day budget is spent in "
                f"{days * 24:.1f} hours.")


async def evaluate(store: MonitoringStore, objs: list[Objective],
                   now: float) -> tuple[list[BurnAlert], dict[str, dict[str, float]]]:
    """The pairs that burn too fast now, and every burn rate (for the gauge and the operator page)."""
    alerts: list[BurnAlert] = []
    rates: dict[str, dict[str, float]] = {}
    for o in objs:
        seen: dict[str, Burn] = {}
        for long_name, long_s, short_name, short_s, factor, severity in BURN_WINDOWS:
            long = seen.get(long_name) or await burn(store, o, now, long_name, long_s)
            short = seen.get(short_name) or await burn(store, o, now, short_name, short_s)
            seen[long_name], seen[short_name] = long, short
            if long.rate >= factor and short.rate >= factor and short.total > 0:
                alerts.append(BurnAlert(o, long, short, factor, severity))
                break  # the fastest pair that fires says it all
        rates[o.name] = {w: round(b.rate, 3) for w, b in seen.items()}
    return alerts, rates


def offending_requests(events: Any, objective: Objective, limit: int = 5) -> list[str]:
    """Request ids of recent answers that count against the objective (from the in-memory recent log lines)."""
    if objective.kind == "freshness" or events is None:
        return []
    needle = f'"operation":"{objective.op.operation_id}"'.encode()
    found: list[str] = []
    for line in reversed(list(events.recent)):
        if b'"event":"access"' not in line or needle not in line:
            continue
        entry = orjson.loads(line)
        if entry.get("api") != objective.op.api or entry.get("version") != objective.op.version:
            continue
        bad = (entry.get("status", 0) >= 500 if objective.kind == "availability"
               else entry.get("duration_ms", 0) >= (objective.bound_s or 0) * 1000)
        if bad and entry.get("request_id"):
            found.append(entry["request_id"])
            if len(found) >= limit:
                break
    return found
