"""Volume anomalies: each closed hour judged against what the same hour of the week usually sees.

The model is meant to be explained in one sentence on an alert: per operation and hour of the week (168 buckets,
UTC), the baseline is an exponentially weighted moving average of the counts seen in that hour in past weeks
(`ewma_alpha`, 0.3: the newest week weighs 30 %). Once a bucket has `min_history` weeks and expects at least
`min_expected`, an hour below `band.below` x or above `band.above` x the baseline is an anomaly. Every judged hour
then updates its bucket, anomalous or not, so a lasting change of traffic becomes the new normal within weeks.

Series judged per operation with `x-gateway.volume`:
    requests     answers the gateway gave (its own metrics)
    recorded     the growth of what the vendor holds (`recorded:` an adapter operation answering {"total": N},
                 read at the first evaluation of each hour): a vendor that answers 201 but stops recording shows
                 here while the gateway's own throughput looks normal
    error_ratio  5xx share of the hour, above `error_ratio_above` and above band.above x its baseline
    latency_p95  p95 of the last 7 days against the 7 days before (`latency_p95_rise`), from the hourly histogram

Hours in which no gateway process ran (no heartbeat) are skipped: no traffic because nothing was listening is not
an observation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.observability import metrics
from gateway.observability.metrics import LATENCY_BUCKETS

from .alerts import Alert
from .models import VolumeSpec
from .sampler import fmt_le

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation

    from .store import MonitoringStore

log = logging.getLogger("gateway.monitoring.anomalies")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class VolumeMonitor:
    op: Operation
    spec: VolumeSpec


def monitors(operations: list[Operation]) -> list[VolumeMonitor]:
    return [VolumeMonitor(op, VolumeSpec.model_validate(op.extension["volume"]))
            for op in operations if op.extension.get("volume")]


def hour_of_week(hour: int) -> int:
    """0 = Monday 00:00-01:00 UTC (the unix epoch began on a Thursday)."""
    return ((hour // 24 + 3) % 7) * 24 + hour % 24


def describe_bucket(bucket: int) -> str:
    return f"{DAYS[bucket // 24]} {bucket % 24:02d}:00-{bucket % 24 + 1:02d}:00 UTC"


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """From cumulative (bound, count) pairs, linear within the bucket, as Prometheus's histogram_quantile."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, prev_bound, prev_count = q * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 1)
        prev_bound, prev_count = bound, count
    return prev_bound


@dataclass
class Judgement:
    monitor: VolumeMonitor
    kind: str
    hour: int
    observed: float
    expected: float | None
    low: float | None
    high: float | None
    weeks: int
    direction: str | None  # below | above | None (normal)
    note: str = ""

    def alert(self) -> Alert:
        op = self.monitor.op
        when = datetime.fromtimestamp(self.hour * 3600, UTC).strftime("%Y-%m-%dT%H:00Z")
        what = {"requests": f"the gateway answered {self.observed:g} {op.operation_id} requests",
                "recorded": f"{op.vendor} recorded {self.observed:g} new records",
                "error_ratio": f"{self.observed * 100:.1f} % of {op.operation_id} answers were 5xx",
                "latency_p95": f"the 7-day p95 of {op.operation_id} was {self.observed * 1000:.0f} ms"}[self.kind]
        if self.kind == "latency_p95":
            expectation = (f"the 7 days before had {self.expected * 1000:.0f} ms; the declared limit is a rise of "
                           f"{self.monitor.spec.latency_p95_rise:g}x" if self.expected else "")
        elif self.kind == "error_ratio":
            expectation = (f"the declared limit is {self.high * 100:.1f} %" if self.high is not None else "")
        else:
            expectation = (f"the baseline for {describe_bucket(hour_of_week(self.hour))} expects {self.expected:.1f} "
                           f"(EWMA of {self.weeks} weeks), the band is {self.low:.1f} to {self.high:.1f}")
        name = {"below": "VolumeBelowBaseline", "above": "VolumeAboveBaseline"}[self.direction or "below"]
        if self.kind == "error_ratio":
            name = "ErrorRatioAnomaly"
        elif self.kind == "latency_p95":
            name = "LatencyTrendRising"
        return Alert("volume", name, "ticket", {"operation": op.key, "vendor": op.vendor, "series": self.kind},
                     f"{op.key}: {what} in the hour {when}, {self.direction} what is normal",
                     f"In the hour {when} {what}; {expectation}.{(' ' + self.note) if self.note else ''}",
                     {"operations": [op.key]})


class AnomalyDetector:
    def __init__(self, store: MonitoringStore, items: list[VolumeMonitor], alpha: float) -> None:
        self.store = store
        self.items = items
        self.alpha = alpha

    async def _baseline(self, series: str, bucket: int) -> tuple[float, int]:
        rows = await self.store.fetch("SELECT mean, samples FROM cg_mon_baselines WHERE series = ? AND bucket = ?",
                                      series, bucket)
        return (float(rows[0][0]), int(rows[0][1])) if rows else (0.0, 0)

    async def _learn(self, series: str, bucket: int, value: float, mean: float, n: int, now: float) -> None:
        new = value if n == 0 else self.alpha * value + (1 - self.alpha) * mean
        await self.store.execute(
            "INSERT INTO cg_mon_baselines (series, bucket, mean, samples, updated_at) VALUES (?, ?, ?, ?, ?) ON "
            "CONFLICT (series, bucket) DO UPDATE SET mean = excluded.mean, samples = excluded.samples, "
            "updated_at = excluded.updated_at", series, bucket, new, n + 1, now)

    async def _judge(self, m: VolumeMonitor, kind: str, hour: int, observed: float, now: float) -> Judgement:
        series, bucket = f"{kind}|{m.op.key}", hour_of_week(hour)
        mean, n = await self._baseline(series, bucket)
        spec = m.spec
        j = Judgement(m, kind, hour, observed, mean if n else None, None, None, n, None)
        if n >= spec.min_history and mean >= spec.min_expected:
            j.low, j.high = mean * spec.band.below, mean * spec.band.above
            j.direction = "below" if observed < j.low else "above" if observed > j.high else None
        await self._learn(series, bucket, observed, mean, n, now)
        return j

    async def close_hour(self, hour: int, now: float) -> list[Judgement]:
        """Judge every monitored series for one closed hour (one in which a gateway process was running)."""
        out: list[Judgement] = []
        for m in self.items:
            key = m.op.key
            requests = await self.store.sum_counts(f"h|req|{key}", hour, hour)
            errors = await self.store.sum_counts(f"h|err|{key}", hour, hour)
            judged = await self._judge(m, "requests", hour, requests, now)
            out.append(judged)
            if m.spec.recorded:
                start = await self.store.fetch("SELECT value FROM cg_mon_counts WHERE series = ? AND slot = ?",
                                               f"t|rec|{key}", hour)
                end = await self.store.fetch("SELECT value FROM cg_mon_counts WHERE series = ? AND slot = ?",
                                             f"t|rec|{key}", hour + 1)
                if start and end:
                    recorded = await self._judge(m, "recorded", hour, max(0.0, end[0][0] - start[0][0]), now)
                    recorded.note = (f"In the same hour the gateway answered {requests:g} {m.op.operation_id} "
                                     f"requests ({errors:g} with a 5xx): the vendor accepted what it did not record."
                                     if requests > recorded.observed else "")
                    out.append(recorded)
            if m.spec.error_ratio_above is not None and requests >= max(1.0, m.spec.min_expected):
                out.append(await self._error_ratio(m, hour, errors / requests, now))
            if m.spec.latency_p95_rise is not None:
                trend = await self._latency_trend(m, hour)
                if trend is not None:
                    out.append(trend)
        for j in out:
            if j.direction:
                metrics.volume_anomalies_total.labels(j.monitor.op.key, j.kind, j.direction).inc()
                log.warning("volume anomaly: %s", j.alert().summary)
        return out

    async def _error_ratio(self, m: VolumeMonitor, hour: int, ratio: float, now: float) -> Judgement:
        series, bucket = f"error_ratio|{m.op.key}", hour_of_week(hour)
        mean, n = await self._baseline(series, bucket)
        limit = m.spec.error_ratio_above or 0.0
        if n >= m.spec.min_history:
            limit = max(limit, mean * m.spec.band.above)
        j = Judgement(m, "error_ratio", hour, ratio, mean if n else None, None, limit, n,
                      "above" if ratio > limit else None)
        await self._learn(series, bucket, ratio, mean, n, now)
        return j

    async def _week_buckets(self, key: str, first: int, last: int) -> list[tuple[float, float]]:
        sums = await self.store.counts_like("h|le=", first, last)
        out = []
        for bound in (*LATENCY_BUCKETS, float("inf")):
            out.append((bound, sums.get(f"h|le={fmt_le(bound)}|{key}", 0.0)))
        return out

    async def _latency_trend(self, m: VolumeMonitor, hour: int) -> Judgement | None:
        week = 168
        now_b = await self._week_buckets(m.op.key, hour - week + 1, hour)
        before_b = await self._week_buckets(m.op.key, hour - 2 * week + 1, hour - week)
        if now_b[-1][1] < m.spec.min_expected or before_b[-1][1] < m.spec.min_expected:
            return None
        current, previous = quantile(now_b, 0.95), quantile(before_b, 0.95)
        if not current or not previous:
            return None
        rise = m.spec.latency_p95_rise or 0.0
        return Judgement(m, "latency_p95", hour, current, previous, None, previous * rise, 2,
                         "above" if current > previous * rise else None)


def judgement_doc(j: Judgement) -> dict[str, Any]:
    return {"operation": j.monitor.op.key, "series": j.kind, "hour": j.hour, "observed": j.observed,
            "expected": j.expected, "low": j.low, "high": j.high, "weeks": j.weeks, "anomaly": j.direction}
