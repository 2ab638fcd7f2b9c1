"""The exception queue for people: everything that needs a human decision, in one list, with its context.

Three kinds, one shape:
    dead_letter     a job that will not be retried again (gateway/jobs/): read from the jobs table, not copied
    reconciliation  two systems disagree about a record (reconcile.py)
    synthetic       a golden path failed (synthetic.py)

Each item has a title, both sides' data snapshot (or the request and every vendor answer), the attempts, a
suggested next step, and two actions:
    resolve  with a reason (required): a dead letter is discarded; a mismatch or failure is closed. The reason and
             who gave it are kept, and the time from creation to resolution is measured
             (gateway_exception_resolution_seconds).
    requeue  run again what produced it: a dead letter is replayed (its idempotency key kept, so a vendor that
             honours keys does not act twice); a mismatch re-runs its rule over the window that found it; a failed
             golden path runs again. Idempotent: the state changes atomically, so a second requeue of the same item
             (a double click, two operators) is told it was requeued already and does nothing.

A mismatch seen again by a later run is the same item (`dedupe_key`): its occurrences grow, it is not duplicated.
One a person resolved stays resolved while the facts are unchanged; different facts reopen it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.admin.dlq import dead_letter
from gateway.jobs.model import DeadLetterFilter, Job, iso
from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.runtime import Runtime

    from .store import MonitoringStore

KINDS = ("dead_letter", "reconciliation", "synthetic")
COLUMNS = ("id, kind, source, item_key, state, title, suggested_action, snapshot, context, created_at, updated_at, "
           "last_seen_at, occurrences, resolved_at, resolution, requeues")
Requeuer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NotFoundError(LookupError):
    pass


class StateConflict(Exception):
    """The item is not in a state that allows the action (e.g. a dead letter that is already running again)."""


def _row_doc(row: tuple[Any, ...], now: float) -> dict[str, Any]:
    (id_, kind, source, key, state, title, action, snapshot, context, created, updated, seen, occurrences,
     resolved_at, resolution, requeues) = row
    return {"id": id_, "kind": kind, "source": source, "key": key, "state": state, "title": title,
            "suggested_action": action, "snapshot": orjson.loads(snapshot), "context": orjson.loads(context),
            "created_at": iso(created), "updated_at": iso(updated), "last_seen_at": iso(seen),
            "age_s": round(now - created, 1), "occurrences": occurrences, "resolved_at": iso(resolved_at),
            "resolution": orjson.loads(resolution) if resolution else None, "requeues": requeues,
            "attempts": (orjson.loads(context) or {}).get("attempts", [])}


def _job_doc(job: Job, now: float) -> dict[str, Any]:
    """A dead letter in the queue's shape (the dead-letter document, plus title, snapshot and next step)."""
    d = dead_letter(job)
    last = (job.history or [{}])[-1]
    vendor_answers = [a for attempt in job.history for a in attempt.get("vendor_attempts", [])]
    problem = job.problem or {}
    refused = isinstance(problem.get("status"), int) and 400 <= problem["status"] < 500
    return {"id": job.id, "kind": "dead_letter", "source": job.name, "key": job.request_id or job.id,
            "state": {"dead": "open", "discarded": "resolved"}.get(job.state, job.state),
            "title": f"{job.name} gave up after {job.attempts} attempt(s): "
                     f"{last.get('error') or problem.get('title') or problem.get('detail') or 'failed'}",
            "suggested_action": ("The vendor refused the request: correct the data at its source or discard with a "
                                 "reason; a requeue would be refused the same way." if refused else
                                 "Requeue once the vendor is healthy again (the job keeps its idempotency key)."),
            "snapshot": {"request": d["request"], "problem": job.problem},
            "context": {"client_id": job.client_id, "request_id": job.request_id, "vendor": job.vendor,
                        "vendor_answers": vendor_answers, "ordering_key": job.ordering_key},
            "created_at": d["created_at"], "updated_at": d["updated_at"], "last_seen_at": d["updated_at"],
            "age_s": round(now - job.updated_at, 1), "occurrences": 1, "resolved_at": None,
            "resolution": {"reason": job.discard_reason} if job.discard_reason else None,
            "requeues": 0, "attempts": job.history}


class ExceptionQueue:
    def __init__(self, runtime: Runtime, store: MonitoringStore) -> None:
        self.runtime = runtime
        self.store = store
        self.requeuers: dict[str, Requeuer] = {}  # kind -> what a requeue runs (set by the monitoring service)

    async def record(self, kind: str, source: str, key: str, dedupe: str, title: str, action: str,
                     snapshot: dict[str, Any], context: dict[str, Any], now: float,
                     facts: Any = None) -> tuple[str, bool]:
        """Store an item, or count a new occurrence of the same one. (id, True if it is new or reopened).

        `facts` (default: the snapshot) is what decides whether a resolved item saw something new and reopens."""
        snap = orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS).decode()
        digest = hashlib.sha256(orjson.dumps(snapshot if facts is None else facts,
                                             option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        ctx = orjson.dumps({**context, "facts": digest}).decode()
        rows = await self.store.fetch("SELECT id, state, context FROM cg_mon_exceptions WHERE dedupe_key = ?", dedupe)
        if not rows:
            new_id = "exc_" + secrets.token_hex(12)
            await self.store.execute(
                f"INSERT INTO cg_mon_exceptions ({COLUMNS}, dedupe_key) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, "
                "?, 1, NULL, NULL, 0, ?) ON CONFLICT (dedupe_key) DO NOTHING",
                new_id, kind, source, key, title, action, snap, ctx, now, now, now, dedupe)
            return new_id, True
        item_id, state, old = rows[0]
        reopen = state == "requeued" or (state == "resolved" and orjson.loads(old).get("facts") != digest)
        await self.store.execute(
            "UPDATE cg_mon_exceptions SET occurrences = occurrences + 1, last_seen_at = ?, updated_at = ?, title = ?, "
            "snapshot = ?, context = ?, state = CASE WHEN ? THEN 'open' ELSE state END, "
            "resolved_at = CASE WHEN ? THEN NULL ELSE resolved_at END WHERE id = ?",
            now, now, title, snap, ctx, reopen, reopen, item_id)
        return item_id, reopen

    async def auto_resolve(self, ids: list[str], reason: str, now: float) -> None:
        """Close items their producer found consistent again (not counted as a person's resolution time)."""
        resolution = orjson.dumps({"by": "gateway", "reason": reason}).decode()
        await self.store.run([("UPDATE cg_mon_exceptions SET state = 'resolved', resolved_at = ?, updated_at = ?, "
                               "resolution = ? WHERE id = ? AND state IN ('open', 'requeued')",
                               (now, now, resolution, i)) for i in ids])

    async def open_for(self, kind: str, source: str) -> dict[str, str]:
        """key -> id of the unresolved items one producer made (a rule, a path)."""
        rows = await self.store.fetch("SELECT item_key, id FROM cg_mon_exceptions WHERE kind = ? AND source = ? "
                                      "AND state IN ('open', 'requeued')", kind, source)
        return dict(rows)

    async def list(self, kind: str | None = None, state: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        now = time.time()
        items: list[dict[str, Any]] = []
        if kind in (None, "reconciliation", "synthetic"):
            where, params = ["state = ?"], [state]
            if kind:
                where.append("kind = ?")
                params.append(kind)
            rows = await self.store.fetch(f"SELECT {COLUMNS} FROM cg_mon_exceptions WHERE {' AND '.join(where)} "
                                          "ORDER BY created_at DESC LIMIT ?", *params, limit)
            items += [_row_doc(r, now) for r in rows]
        if kind in (None, "dead_letter") and state == "open":
            jobs = await self.runtime.jobs.store.dead_letters(DeadLetterFilter(limit=limit))
            items += [_job_doc(j, now) for j in jobs]
        items.sort(key=lambda i: i["created_at"] or "", reverse=True)
        return items[:limit]

    async def get(self, item_id: str) -> dict[str, Any]:
        now = time.time()
        if item_id.startswith("job_"):
            job = await self.runtime.jobs.store.get(item_id)
            if job is None:
                raise NotFoundError(item_id)
            return _job_doc(job, now)
        rows = await self.store.fetch(f"SELECT {COLUMNS} FROM cg_mon_exceptions WHERE id = ?", item_id)
        if not rows:
            raise NotFoundError(item_id)
        return _row_doc(rows[0], now)

    async def resolve(self, item_id: str, reason: str, by: str) -> dict[str, Any]:
        item = await self.get(item_id)
        now = time.time()
        if item["kind"] == "dead_letter":
            if not await self.runtime.jobs.store.discard(item_id, f"{reason} (by {by})"):
                raise StateConflict(f"{item_id} is not a dead letter now")
            job = await self.runtime.jobs.store.get(item_id)
            age = now - (job.updated_at if job else now)
            metrics.dlq_replays_total.labels("discard").inc()
        else:
            resolution = orjson.dumps({"by": by, "reason": reason}).decode()
            rows = await self.store.fetch(
                "UPDATE cg_mon_exceptions SET state = 'resolved', resolved_at = ?, updated_at = ?, resolution = ? "
                "WHERE id = ? AND state IN ('open', 'requeued') RETURNING created_at", now, now, resolution, item_id)
            if not rows:
                raise StateConflict(f"{item_id} is resolved already")
            age = now - rows[0][0]
        metrics.exception_resolution_seconds.labels(item["kind"]).observe(max(0.0, age))
        return await self.get(item_id)

    async def requeue(self, item_id: str, by: str) -> dict[str, Any]:
        """Run again what produced the item. A second requeue while the first is pending does nothing."""
        item = await self.get(item_id)
        if item["kind"] == "dead_letter":
            if not await self.runtime.jobs.store.replay(item_id):
                job = await self.runtime.jobs.store.get(item_id)
                raise StateConflict(f"{item_id} was requeued already: it is {job.state if job else 'gone'} now")
            self.runtime.jobs.notify()
            metrics.dlq_replays_total.labels("replay").inc()
            held = self.runtime.monitoring.held_until_key(item["source"])
            return {"requeued": item_id, "job_id": item_id, "by": by, **({"held_until": iso(held)} if held else {})}
        rows = await self.store.fetch("UPDATE cg_mon_exceptions SET state = 'requeued', requeues = requeues + 1, "
                                      "updated_at = ? WHERE id = ? AND state = 'open' RETURNING id", time.time(),
                                      item_id)
        if not rows:
            raise StateConflict(f"{item_id} was requeued already or is resolved (state {item['state']})")
        runner = self.requeuers.get(item["kind"])
        outcome = await runner(item) if runner is not None else {}
        return {"requeued": item_id, "by": by, **outcome}

    async def refresh_metrics(self) -> dict[str, dict[str, float]]:
        """Backlog and oldest age per kind, for the gauges and the page."""
        now = time.time()
        out = {k: {"open": 0.0, "oldest_age_s": 0.0} for k in KINDS}
        rows = await self.store.fetch("SELECT kind, COUNT(*), MIN(created_at) FROM cg_mon_exceptions WHERE state IN "
                                      "('open', 'requeued') GROUP BY kind")
        for kind, count, oldest in rows:
            out.setdefault(kind, {})
            out[kind] = {"open": float(count), "oldest_age_s": round(now - oldest, 1) if oldest else 0.0}
        stats = await self.runtime.jobs.store.stats()
        dead = await self.runtime.jobs.store.dead_letters(DeadLetterFilter(limit=1))
        out["dead_letter"] = {"open": float(stats["dead"]),
                              "oldest_age_s": round(now - dead[0].updated_at, 1) if dead else 0.0}
        for kind, values in out.items():
            metrics.exceptions_open.labels(kind).set(values["open"])
            metrics.exceptions_oldest_age_seconds.labels(kind).set(values["oldest_age_s"])
        return out
