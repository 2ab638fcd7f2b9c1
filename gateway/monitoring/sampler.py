"""The gateway's own metrics, per process, turned into counts every process shares.

Nothing new runs on the request path: the edge already counts every answer (`gateway_requests_total`) and times it
(`gateway_request_seconds`), per operation and status class. Every `tick_s` each process reads its *own* counters
(the metric objects, not the multiprocess collector, so workers are not counted twice), and adds what grew since its
last flush to the shared per-minute and per-hour counts (store.py). SLO burn rates and volume baselines are computed
from those sums, so they cover every process on every host. A flush that fails is kept and added to the next one.

Series (`<resolution>|<kind>|<operation key>`, resolution `m` = minute slot, `h` = hour slot):
    req    answers of any status          err   5xx answers
    slow   answers not under the latency objective's bound (from the histogram bucket at that bound)
    le=B   answers under bucket bound B (volume monitors with a latency trend: the whole histogram, hourly)
    done   async jobs done at the vendor  late  jobs done later than the freshness objective
    up     the process was alive (a flush happened), hourly: hours without it are not judged
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation


@dataclass
class Watched:
    """What to count for one operation."""

    op: Operation
    latency_bound_s: float | None = None  # the SLO latency objective's bucket bound
    histogram: bool = False  # every bucket, hourly (weekly p95 trend)
    freshness_s: float | None = None


def fmt_le(bound: float) -> str:
    """A bucket bound as prometheus-client writes it in the `le` label."""
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


@dataclass
class Sampler:
    watched: dict[tuple[str, str, str], Watched]  # (api, version, operationId) -> what to count
    flushed: dict[str, float] = field(default_factory=dict)  # cumulative values already added to the store
    pending: list[tuple[str, int, float]] = field(default_factory=list)  # rows a failed flush still owes
    _candidate: dict[str, float] = field(default_factory=dict)  # what the rows being flushed bring us to

    def read(self) -> dict[str, float]:
        """This process's cumulative counts now, by series kind and operation key."""
        now: dict[str, float] = defaultdict(float)
        if not self.watched:
            return now
        for family in metrics.requests_total.collect():
            for s in family.samples:
                if not s.name.endswith("_total"):
                    continue
                w = self.watched.get((s.labels["api"], s.labels["version"], s.labels["operation"]))
                if w is not None:
                    now[f"req|{w.op.key}"] += s.value
                    if s.labels["status_class"] == "5xx":
                        now[f"err|{w.op.key}"] += s.value
        for family in metrics.request_seconds.collect():
            for s in family.samples:
                if not s.name.endswith("_bucket"):
                    continue
                w = self.watched.get((s.labels["api"], s.labels["version"], s.labels["operation"]))
                if w is None:
                    continue
                le = s.labels["le"]
                if w.latency_bound_s is not None and le == fmt_le(w.latency_bound_s):
                    now[f"fast|{w.op.key}"] += s.value
                if w.histogram:
                    now[f"le={le}|{w.op.key}"] += s.value
        for family in metrics.job_completion_seconds.collect():
            for s in family.samples:
                w = self.watched.get((s.labels["api"], s.labels["version"], s.labels["operation"]))
                if w is None or w.freshness_s is None:
                    continue
                if s.name.endswith("_count"):
                    now[f"done|{w.op.key}"] += s.value
                elif s.name.endswith("_bucket") and s.labels["le"] == fmt_le(w.freshness_s):
                    now[f"ontime|{w.op.key}"] += s.value
        for w in self.watched.values():  # derived: what missed the objective
            if w.latency_bound_s is not None:
                now[f"slow|{w.op.key}"] = now[f"req|{w.op.key}"] - now[f"fast|{w.op.key}"]
            if w.freshness_s is not None:
                now[f"late|{w.op.key}"] = now[f"done|{w.op.key}"] - now[f"ontime|{w.op.key}"]
        return now

    def rows(self, at: float) -> list[tuple[str, int, float]]:
        """What grew since the last flush, as minute and hour rows at time `at`, plus the hourly heartbeat."""
        minute, hour = int(at // 60), int(at // 3600)
        current = self.read()
        out = list(self.pending)
        for series, value in current.items():
            if series.startswith(("fast|", "ontime|")):
                continue
            delta = value - self.flushed.get(series, 0.0)
            if delta <= 0:
                continue
            if not series.startswith("le="):
                out.append((f"m|{series}", minute, delta))
            out.append((f"h|{series}", hour, delta))
        out.append(("h|up", hour, 1.0))
        self._candidate = current
        return out

    def flushed_ok(self) -> None:
        self.flushed.update(self._candidate)
        self.pending = []

    def flush_failed(self, rows: list[tuple[str, int, float]]) -> None:
        """Keep what could not be stored; the next flush adds it (the slots stay those of the failed attempt)."""
        self.flushed.update(self._candidate)
        self.pending = rows
