"""The monitoring of one gateway (or `gateway worker`) process: a loop every `monitoring.tick_s`.

Every process, each tick: adds what its own request and job counters grew to the shared counts (sampler.py).
The process holding the `monitoring:leader` lease (one at a time, taken over within three ticks if it dies) also:
reads the vendors' record totals for volume monitors, judges the hours that ended (anomalies.py), evaluates the SLO
burn rates (slo.py), starts the scheduled reconciliations and golden paths that are due (and resumes paused ones),
delivers alerts (alerts.py) and refreshes the exception queue's gauges. Nothing of this is on the request path.

Scheduled work runs as background tasks; a rule or path with a business calendar only starts when it is open.
The job runner's business-hours hold and the freshness timing are wrapped around its `operation` handler here
(`_wrap_jobs`), so the runner itself does not change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from gateway.jobs.model import Job, Outcome, iso
from gateway.observability import metrics

from . import slo
from .alerts import Alert, AlertCenter
from .anomalies import AnomalyDetector, judgement_doc, monitors
from .declarations import load_declarations
from .exceptions import ExceptionQueue
from .models import seconds
from .reconcile import Reconciler
from .sampler import Sampler, Watched
from .sources import SourceFailed, call_adapter
from .store import MonitoringStore
from .synthetic import SyntheticRunner

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.monitoring")
LEADER = "monitoring:leader"


class Monitoring:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.monitoring
        self.decl, _ = load_declarations(runtime.settings, runtime.contracts, runtime.operations)
        self.calendars = self.decl.calendars
        self.store = MonitoringStore(runtime.settings)
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.clock: Callable[[], float] = time.time  # tests move it (weeks of history in a second)
        self.alerts = AlertCenter(runtime, self.store)
        self.queue = ExceptionQueue(runtime, self.store)
        self.objectives = slo.objectives(runtime.operations)
        self.volume = AnomalyDetector(self.store, monitors(runtime.operations), self.settings.ewma_alpha)
        self.reconciler = Reconciler(runtime, self.store, self.queue, self.alerts, self.decl.rules, self.owner)
        self.synthetic = SyntheticRunner(runtime, self.queue, self.alerts, self.decl.paths)
        self.sampler = Sampler(self._watched(runtime.operations))
        self.queue.requeuers = {"reconciliation": self._requeue_rule, "synthetic": self._requeue_path}
        self.burn_rates: dict[str, dict[str, float]] = {}
        self.last_judgements: list[dict[str, Any]] = []
        self.started = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.first_tick: float | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def _watched(self, operations: list[Operation]) -> dict[tuple[str, str, str], Watched]:
        out: dict[tuple[str, str, str], Watched] = {}
        for o in self.objectives:
            w = out.setdefault((o.op.api, o.op.version, o.op.operation_id), Watched(o.op))
            if o.kind == "latency":
                w.latency_bound_s = o.bound_s
            elif o.kind == "freshness":
                w.freshness_s = o.bound_s
        for m in self.volume.items:
            w = out.setdefault((m.op.api, m.op.version, m.op.operation_id), Watched(m.op))
            w.histogram = w.histogram or m.spec.latency_p95_rise is not None
        return out

    # -- business calendars ----------------------------------------------------------------------------------------

    def held_until(self, op: Operation, now: float) -> float | None:
        return self.calendars.held_until(op, now)

    def held_until_key(self, op_key: str) -> float | None:
        op = self.runtime.by_key.get(op_key)
        return None if op is None else self.calendars.held_until(op, time.time())

    def _wrap_jobs(self) -> None:
        """Around the runner's `operation` handler: hold attempts outside business hours, time what succeeds."""
        runner = self.runtime.jobs.runner
        if runner is None:
            return
        inner = runner.handlers["operation"]
        by_key = self.runtime.by_key

        async def handler(job: Job) -> Outcome:
            op = by_key.get(job.name)
            now = time.time()
            held = self.calendars.held_until(op, now) if op is not None else None
            if held is not None:
                calendar = self.calendars.by_operation[op.key]  # type: ignore[union-attr]
                return Outcome("retry", {"at": iso(now), "ms": 0, "status": None, "held_until": iso(held)},
                               problem={"type": "held", "title": "Waiting for business hours",
                                        "detail": f"{calendar.name} ({calendar.describe()}) opens at {iso(held)}"},
                               retry_in_s=held - now)
            outcome = await inner(job)
            if outcome.state == "succeeded" and op is not None:
                metrics.job_completion_seconds.labels(op.api, op.version, op.operation_id).observe(
                    max(0.0, time.time() - job.created_at))
            return outcome

        runner.handlers["operation"] = handler

    # -- life ------------------------------------------------------------------------------------------------------

    async def start(self, loop: bool = True) -> None:
        if not self.settings.enabled:
            return
        await self.store.start()
        # Counting starts now: what the metrics held before (another runtime in this process) is not ours to add.
        self.sampler.flushed = self.sampler.read()
        self.loop = asyncio.get_running_loop()  # where tests and tools submit work to this process
        self.started = True
        self._wrap_jobs()
        if loop:
            self._loop_task = asyncio.create_task(self._loop(), name="monitoring")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self.started:
            try:
                await self.tick(lead=False)  # the last counts of this process
                await self.store.release(LEADER, self.owner)
            except Exception as exc:
                log.warning("monitoring: last flush failed: %s", exc)
        await self.alerts.close()
        await self.store.close()
        self.started = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, OSError) or type(exc).__module__.startswith("psycopg"):
                    # the store cannot be reached (PostgreSQL down): said in one line, no traceback
                    log.warning("monitoring tick failed, the store cannot be reached (%s); trying again in %s s",
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.settings.tick_s)
                else:
                    log.exception("monitoring tick failed; trying again in %s s", self.settings.tick_s)

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> bool:
        """Run `work` in the background unless work of that name runs already in this process."""
        if name in self._tasks and not self._tasks[name].done():
            work.close()
            return False
        task = asyncio.create_task(work, name=name)
        self._tasks[name] = task

        def report(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %r", name, t.exception())

        task.add_done_callback(report)
        return True

    async def idle(self) -> None:
        """Wait for the background runs this process started (tests, and `gateway reconcile`)."""
        while pending := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one evaluation --------------------------------------------------------------------------------------------

    async def tick(self, lead: bool = True) -> None:
        now = self.clock()
        self.first_tick = self.first_tick or now
        rows = self.sampler.rows(now)
        try:
            await self.store.add_counts(rows)
            self.sampler.flushed_ok()
        except Exception as exc:
            self.sampler.flush_failed(rows)
            log.warning("monitoring: counts not stored (kept for the next tick): %s", exc)
            return
        if not lead or not await self.store.lease(LEADER, self.owner, max(3 * self.settings.tick_s, 30)):
            return
        await self._readings(now)
        await self._close_hours(now)
        await self._slo(now)
        if self.settings.schedules:
            await self._schedules(now)
        await self.alerts.deliver(now)
        await self.alerts.refresh_metrics()
        await self.queue.refresh_metrics()

    async def _readings(self, now: float) -> None:
        """The vendors' record totals, once per hour (the first tick of it): their growth is what they recorded."""
        hour = int(now // 3600)
        for m in self.volume.items:
            if not m.spec.recorded:
                continue
            series = f"t|rec|{m.op.key}"
            if await self.store.fetch("SELECT 1 FROM cg_mon_counts WHERE series = ? AND slot = ?", series, hour):
                continue
            try:
                body = await call_adapter(self.runtime, f"{m.op.vendor}.{m.spec.recorded}", {}, f"vol-{hour}")
            except SourceFailed as exc:
                log.warning("volume: cannot read %s's total (%s): this hour's recorded volume is not judged",
                            m.op.vendor, exc.reason)
                continue
            await self.store.execute("INSERT INTO cg_mon_counts (series, slot, value) VALUES (?, ?, ?) ON CONFLICT "
                                     "(series, slot) DO NOTHING", series, hour, float(body.get("total", 0)))

    async def _close_hours(self, now: float) -> None:
        if not self.volume.items:
            return
        current = int(now // 3600)
        raw = await self.store.get_value("volume:closed")
        closed = current - 1 if raw is None else int(raw)
        if raw is not None and closed < current - 1:
            hours = await self.store.fetch("SELECT slot FROM cg_mon_counts WHERE series = 'h|up' AND slot > ? "
                                           "AND slot < ? ORDER BY slot", closed, current)
            for (hour,) in hours[-48:]:
                judged = await self.volume.close_hour(int(hour), now)
                self.last_judgements = [judgement_doc(j) for j in judged]
                await self.alerts.sync("volume", [j.alert() for j in judged if j.direction], now,
                                       scope={j.monitor.op.key for j in judged})
        await self.store.set_value("volume:closed", str(current - 1))

    async def _slo(self, now: float) -> None:
        if not self.objectives:
            return
        burning, self.burn_rates = await slo.evaluate(self.store, self.objectives, now)
        for name, rates in self.burn_rates.items():
            key, _, kind = name.rpartition(":")
            for window, rate in rates.items():
                metrics.slo_burn_rate.labels(key, kind, window).set(rate)
        active = []
        for b in burning:
            o = b.objective
            active.append(Alert(
                "slo", "SLOBurnRate", b.severity,
                {"operation": o.op.key, "slo": o.kind, "window": f"{b.long.window}/{b.short.window}"},
                b.summary(), b.description(),
                {"request_ids": slo.offending_requests(self.runtime.events, o), "operations": [o.op.key],
                 "rules": [f"GatewaySLOBurnRate ({o.op.key} {o.kind}, gateway slo rules)"]}))
        await self.alerts.sync("slo", active, now)

    async def _last_run(self, kind: str, name: str) -> tuple[float, str, dict[str, Any]] | None:
        rows = await self.store.fetch("SELECT started_at, state, checkpoint FROM cg_mon_runs WHERE kind = ? AND "
                                      "name = ? ORDER BY started_at DESC LIMIT 1", kind, name)
        if not rows:
            return None
        return rows[0][0], rows[0][1], orjson.loads(rows[0][2]) if rows[0][2] else {}

    async def _schedules(self, now: float) -> None:
        since = self.first_tick or now
        for name, rule in self.decl.rules.items():
            last = await self._last_run("reconcile", name)
            calendar = self.calendars.by_name.get(rule.spec.calendar or "")
            if calendar is not None and not calendar.is_open(now):
                continue
            if last is not None and last[1] == "paused":
                stopped = last[2].get("stopped") or {}
                wait = min(60 * 2 ** max(0, stopped.get("attempts", 1) - 1), 900)
                if now >= stopped.get("at", 0) + wait:
                    self.spawn(f"reconcile:{name}", self.reconciler.run(name))
            elif rule.spec.every and now - (last[0] if last else since) >= seconds(rule.spec.every):
                self.spawn(f"reconcile:{name}", self.reconciler.run(name, now=now))
        for name, path in self.decl.paths.items():
            if not path.spec.every:
                continue
            calendar = self.calendars.by_name.get(path.spec.calendar or "")
            if calendar is not None and not calendar.is_open(now):
                continue
            last_at = float(await self.store.get_value(f"synthetic:{name}:at") or since)
            if now - last_at >= seconds(path.spec.every):
                await self.store.set_value(f"synthetic:{name}:at", repr(now))
                self.spawn(f"synthetic:{name}", self.run_path(name))

    async def run_path(self, name: str) -> dict[str, Any]:
        summary = await self.synthetic.run(name)
        await self.store.set_value(f"synthetic:{name}:last", orjson.dumps(summary).decode())
        return summary

    # -- requeue ---------------------------------------------------------------------------------------------------

    async def _requeue_rule(self, item: dict[str, Any]) -> dict[str, Any]:
        rule = item["source"]
        if rule not in self.decl.rules:
            return {"rerun": None, "detail": f"rule {rule} is no longer declared"}
        window = item["context"].get("window") or []
        since, until = (self.parse_iso(window[0]), self.parse_iso(window[1])) if len(window) == 2 else (None, None)
        self.spawn(f"reconcile:{rule}", self.reconciler.run(rule, since, until))
        return {"rerun": rule, "window": window}

    async def _requeue_path(self, item: dict[str, Any]) -> dict[str, Any]:
        path = item["source"]
        if path not in self.decl.paths:
            return {"rerun": None, "detail": f"path {path} is no longer declared"}
        self.spawn(f"synthetic:{path}", self.run_path(path))
        return {"rerun": path}

    @staticmethod
    def parse_iso(value: str | None) -> float | None:
        from datetime import datetime

        if not value:
            return None
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    # -- what the page and the CLI show ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        rules = []
        for name, rule in self.decl.rules.items():
            rows = await self.store.fetch("SELECT id, state, started_at, finished_at, summary FROM cg_mon_runs WHERE "
                                          "kind = 'reconcile' AND name = ? ORDER BY started_at DESC LIMIT 1", name)
            last = rows[0] if rows else None
            rules.append({"rule": name, "description": rule.spec.description, "every": rule.spec.every,
                          "last_run": None if last is None else {
                              "id": last[0], "state": last[1], "started_at": iso(last[2]),
                              "finished_at": iso(last[3]), "summary": orjson.loads(last[4]) if last[4] else None}})
        paths = []
        for name, path in self.decl.paths.items():
            saved = await self.store.get_value(f"synthetic:{name}:last")
            paths.append({"path": name, "description": path.spec.description, "every": path.spec.every,
                          "last_run": orjson.loads(saved) if saved else None})
        return {"rules": rules, "paths": paths, "burn_rates": self.burn_rates,
                "objectives": [{"operation": o.op.key, "slo": o.kind, "objective": o.text(),
                                "window_days": o.window_days} for o in self.objectives],
                "exceptions": await self.queue.refresh_metrics(), "calendars": {
                    n: c.describe() for n, c in self.calendars.by_name.items()}}

