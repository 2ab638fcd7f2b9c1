"""Reconciliation: compare two systems' records over a window, through their adapters, and queue what disagrees.

A run reads every page of the left side, then the right side (listed over the same window widened by its `slack`,
or looked up by the left records' keys), and only then judges. Records younger than the rule's `settle` time are
not judged (a payment may still be on its way). For each left record, by key (compared case-insensitively):

    missing    no right record has its key                       (expect: one | at_least_one)
    duplicate  more than one has it                              (expect: one)
    differs    the first match disagrees on a `compare` field    (after converting the left value)
    extra      a right record no left record has                 (both_ways: true)

Each mismatch is an exception (exceptions.py) with both sides' snapshots and a suggested next step; a key judged
consistent again resolves its open exception. The rule's alert fires while it has open exceptions.

A vendor outage never becomes a mismatch: a transient failure (5xx, timeout, 429, breaker open) pauses the run with
a checkpoint (the records read so far and the next cursor, in the shared store); the next attempt resumes from
there over the same window. A refusal or a broken answer fails the run, with an alert, and judges nothing.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.jobs.model import iso
from gateway.mappings.orders_v2 import to_minor
from gateway.observability import metrics

from .alerts import Alert
from .models import RuleSpec, seconds
from .sources import SourceFailed, created_at, field, keep, list_page, lookup

if TYPE_CHECKING:
    from gateway.runtime import Runtime

    from .alerts import AlertCenter
    from .exceptions import ExceptionQueue
    from .store import MonitoringStore

log = logging.getLogger("gateway.monitoring.reconcile")
DEFAULT_SUGGESTIONS = {
    "missing": "Look for {key} at {right}. If it is truly absent, correct the record at its source, then requeue to "
               "check again; if {left} is wrong, correct it there.",
    "duplicate": "{right} holds more than one record for {key}: keep one, void or refund the others, then requeue.",
    "differs": "{left} and {right} disagree on {fields}: correct the wrong side, then requeue to check again.",
    "extra": "{right} holds {key} but {left} does not: find where it came from, then requeue to check again.",
}


@dataclass(frozen=True)
class Rule:
    name: str
    spec: RuleSpec
    file: str

    def label(self, side: str) -> str:
        s = self.spec.left if side == "left" else self.spec.right
        return s.label or (s.source or s.lookup or "").split(".")[0]


def _norm(value: Any) -> str:
    return str(value).strip().casefold()


def _convert(value: Any, how: str | None, record: dict[str, Any]) -> Any:
    if how == "minor_units" and value is not None:
        return to_minor(str(value), str(record.get("currency") or "").upper())
    if how == "upper" and isinstance(value, str):
        return value.upper()
    if how == "lower" and isinstance(value, str):
        return value.lower()
    return value


def _totals(spec: RuleSpec, left: list[dict[str, Any]], right: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts on both sides, and the sums of every compared numeric field (the left one converted): the overall
    agreement a person checks first, before the per-key differences."""
    out: dict[str, Any] = {"left": {"records": len(left)}, "right": {"records": len(right)}}
    for c in spec.compare:
        values = [_convert(field(r, c.left), c.convert, r) for r in left]
        others = [field(r, c.right) for r in right]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values + others):
            out["left"][f"sum_{c.left}"] = sum(values)
            out["right"][f"sum_{c.right}"] = sum(others)
    return out


class Reconciler:
    def __init__(self, runtime: Runtime, store: MonitoringStore, queue: ExceptionQueue, alerts: AlertCenter,
                 rules: dict[str, Rule], owner: str) -> None:
        self.runtime, self.store, self.queue, self.alerts = runtime, store, queue, alerts
        self.rules = rules
        self.owner = owner

    async def paused(self, name: str) -> tuple[str, dict[str, Any], float, float] | None:
        rows = await self.store.fetch("SELECT id, checkpoint, window_since, window_until FROM cg_mon_runs WHERE "
                                      "kind = 'reconcile' AND name = ? AND state = 'paused' ORDER BY started_at DESC "
                                      "LIMIT 1", name)
        return (rows[0][0], orjson.loads(rows[0][1]), rows[0][2], rows[0][3]) if rows else None

    async def run(self, name: str, since: float | None = None, until: float | None = None,
                  now: float | None = None) -> dict[str, Any]:
        """Run (or resume) one rule. Returns the run's summary; never raises for a vendor's failure."""
        rule = self.rules[name]
        now = time.time() if now is None else now
        if not await self.store.lease(f"reconcile:{name}", self.owner, 300):
            return {"rule": name, "status": "busy", "detail": "another process is running this rule now"}
        try:
            resumed = await self.paused(name)
            if resumed is not None and (since is None or (since, until) == (resumed[2], resumed[3])):
                run_id, state, since, until = resumed
            else:
                until = now if until is None else until
                since = until - seconds(rule.spec.window) if since is None else since
                run_id, state = "run_" + secrets.token_hex(8), {"left": {"records": [], "cursor": None},
                                                                 "right": {"records": [], "cursor": None}}
                await self.store.execute("INSERT INTO cg_mon_runs (id, kind, name, state, started_at, updated_at, "
                                         "window_since, window_until, checkpoint) VALUES (?, 'reconcile', ?, "
                                         "'running', ?, ?, ?, ?, '{}')", run_id, name, now, now, since, until)
            assert since is not None and until is not None
            try:
                await self._read(rule, run_id, state, since, until)
            except SourceFailed as exc:
                return await self._stopped(rule, run_id, state, exc, since, until)
            return await self._judge(rule, run_id, state, since, until, now)
        finally:
            await self.store.release(f"reconcile:{name}", self.owner)

    async def _save(self, run_id: str, state: dict[str, Any], status: str = "running") -> None:
        await self.store.execute("UPDATE cg_mon_runs SET state = ?, updated_at = ?, checkpoint = ? WHERE id = ?",
                                 status, time.time(), orjson.dumps(state).decode(), run_id)

    async def _read(self, rule: Rule, run_id: str, state: dict[str, Any], since: float, until: float) -> None:
        spec = rule.spec
        for name, side in (("left", spec.left), ("right", spec.right)):
            part = state[name]
            if part.get("done"):
                continue
            slack = side.slack_s
            page_no = part.get("pages", 0)
            if side.lookup is not None:  # by the left side's keys, a batch at a time
                keys = sorted({str(field(r, spec.left.key)) for r in state["left"]["records"]
                               if field(r, spec.left.key) is not None})
                done = part.get("keys_done", 0)
                while done < len(keys):
                    batch = keys[done:done + min(spec.page_size, 100)]
                    part["records"] += await lookup(self.runtime, side, batch, f"{run_id}-{name}-{page_no}")
                    done += len(batch)
                    page_no += 1
                    part.update(keys_done=done, pages=page_no)
                    await self._save(run_id, state)
            else:
                while True:
                    records, cursor = await list_page(self.runtime, self.store, side, since - slack, until + slack,
                                                      part["cursor"], spec.page_size, f"{run_id}-{name}-{page_no}")
                    part["records"] += records
                    part["cursor"] = cursor
                    page_no += 1
                    part["pages"] = page_no
                    await self._save(run_id, state)
                    if cursor is None:
                        break
            part["done"] = True
            await self._save(run_id, state)

    async def _stopped(self, rule: Rule, run_id: str, state: dict[str, Any], exc: SourceFailed, since: float,
                       until: float) -> dict[str, Any]:
        status = "paused" if exc.transient else "failed"
        state["stopped"] = {"vendor": exc.vendor, "reason": exc.reason, "at": time.time(),
                            "attempts": state.get("stopped", {}).get("attempts", 0) + 1}
        summary = {"rule": rule.name, "run_id": run_id, "status": status, "window": [iso(since), iso(until)],
                   "vendor": exc.vendor, "reason": exc.reason,
                   "read": {s: len(state[s]["records"]) for s in ("left", "right")}}
        await self._save(run_id, state, status)
        await self.store.execute("UPDATE cg_mon_runs SET summary = ? WHERE id = ?", orjson.dumps(summary).decode(),
                                 run_id)
        metrics.reconcile_runs_total.labels(rule.name, status).inc()
        metrics.reconcile_last_run_timestamp.labels(rule.name, status).set(time.time())
        log.warning("reconciliation %s %s: %s (%s)", rule.name, status, exc.reason, exc.vendor)
        if status == "failed":
            await self.alerts.sync("reconcile", [Alert(
                "reconcile", "ReconciliationFailed", "ticket", {"rule": rule.name},
                f"reconciliation rule {rule.name} cannot run: {exc.vendor} {exc.reason}",
                f"{rule.spec.description} The run {run_id} stopped without judging anything: {exc.reason}. Fix the "
                "cause (credentials, the adapter, the vendor's answer), then run `gateway reconcile --rule "
                f"{rule.name}`.", {"rules": [rule.name], "runs": [run_id]})], time.time(), scope={rule.name})
        return summary

    async def _judge(self, rule: Rule, run_id: str, state: dict[str, Any], since: float, until: float,
                     now: float) -> dict[str, Any]:
        spec = rule.spec
        settled_before = now - seconds(spec.settle)
        left = [r for r in state["left"]["records"] if keep(spec.left, r)]
        right = [r for r in state["right"]["records"] if keep(spec.right, r)]
        in_flight = [r for r in left if (created_at(r) or 0) > settled_before]
        left = [r for r in left if (created_at(r) or 0) <= settled_before]
        index: dict[str, list[dict[str, Any]]] = {}
        for r in right:
            if (k := field(r, spec.right.key)) is not None:
                index.setdefault(_norm(k), []).append(r)
        labels = {"left": rule.label("left"), "right": rule.label("right")}
        found: list[tuple[str, str, str, dict[str, Any], list[dict[str, Any]], list[str]]] = []
        judged: set[str] = set()
        by_key: dict[str, list[dict[str, Any]]] = {}
        for record in left:  # one judgement per key (several orders may share one customer's e-mail address)
            if (key := field(record, spec.left.key)) is not None:
                by_key.setdefault(_norm(key), []).append(record)
        for records in by_key.values():
            record = records[0] if len(records) == 1 else {**records[0], "_records_with_this_key": len(records)}
            key = field(records[0], spec.left.key)
            judged.add(f"left:{key}")
            matches = index.get(_norm(key), [])
            if not matches:
                found.append(("missing", "left", str(key), record, [], []))
            elif spec.expect == "one" and len(matches) > 1:
                found.append(("duplicate", "left", str(key), record, matches, []))
            else:
                differ = [c.left for c in spec.compare if _convert(field(record, c.left), c.convert, record)
                          != field(matches[0], c.right)]
                if differ:
                    found.append(("differs", "left", str(key), record, matches, differ))
        if spec.both_ways and spec.right.source is not None:
            left_keys = {_norm(field(r, spec.left.key)) for r in state["left"]["records"]}
            for record in right:
                key, at = field(record, spec.right.key), created_at(record) or 0
                if key is None or not since <= at <= min(until, settled_before):
                    continue
                judged.add(f"right:{key}")
                if _norm(key) not in left_keys:
                    found.append(("extra", "right", str(key), {}, [record], []))
        open_before = await self.queue.open_for("reconciliation", rule.name)
        ids = []
        for kind, side, key, record, matches, fields in found:
            item_id, _ = await self.queue.record(
                "reconciliation", rule.name, f"{side}:{key}", f"reconcile:{rule.name}:{side}:{key}",
                self._title(rule, kind, key, labels, fields), self._suggest(rule, kind, key, labels, fields),
                {"left": {"system": labels["left"], "record": record or None},
                 "right": {"system": labels["right"], "records": matches,
                           "searched": {"source": spec.right.source or spec.right.lookup,
                                        "window": [iso(since - spec.right.slack_s), iso(until + spec.right.slack_s)],
                                        "records_read": len(state["right"]["records"])}}},
                {"rule": rule.name, "description": spec.description, "mismatch": kind, "fields": fields,
                 "run_id": run_id, "window": [iso(since), iso(until)]}, time.time(),
                facts={"kind": kind, "left": record, "right": matches})
            ids.append(item_id)
        mismatched = {f"{side}:{key}" for _, side, key, *_ in found}
        consistent = [i for k, i in open_before.items() if k in judged and k not in mismatched]
        await self.queue.auto_resolve(consistent, f"consistent again in run {run_id}", time.time())
        summary = {"rule": rule.name, "run_id": run_id, "status": "mismatches" if found else "ok",
                   "window": [iso(since), iso(until)], "mismatches": len(found), "totals": _totals(spec, left, right),
                   "by_kind": {k: sum(1 for f in found if f[0] == k) for k in {f[0] for f in found}},
                   "judged": {"left": len(left), "right": len(right), "in_flight": len(in_flight)},
                   "resolved": len(consistent), "exceptions": ids}
        await self.store.execute("UPDATE cg_mon_runs SET state = 'done', finished_at = ?, updated_at = ?, "
                                 "checkpoint = NULL, summary = ? WHERE id = ?", time.time(), time.time(),
                                 orjson.dumps(summary).decode(), run_id)
        metrics.reconcile_mismatches.labels(rule.name).set(len(found))
        metrics.reconcile_runs_total.labels(rule.name, summary["status"]).inc()
        metrics.reconcile_last_run_timestamp.labels(rule.name, summary["status"]).set(time.time())
        await self._alert(rule, run_id)
        return summary

    async def _alert(self, rule: Rule, run_id: str) -> None:
        still_open = await self.queue.open_for("reconciliation", rule.name)
        active = []
        if still_open:
            n = len(still_open)
            active.append(Alert(
                "reconcile", "ReconciliationMismatch", "ticket", {"rule": rule.name},
                f"{n} open mismatch{'es' if n > 1 else ''} for reconciliation rule {rule.name}",
                f"{rule.spec.description} The last run ({run_id}) left {n} record(s) that do not agree; each is an "
                "exception in the queue with both sides' data and the next step.",
                {"exceptions": sorted(still_open.values())[:20], "rules": [rule.name], "runs": [run_id]}))
        await self.alerts.sync("reconcile", active, time.time(), scope={rule.name})

    @staticmethod
    def _title(rule: Rule, kind: str, key: str, labels: dict[str, str], fields: list[str]) -> str:
        return {"missing": f"{labels['left']} {key} has no match at {labels['right']}",
                "duplicate": f"{labels['left']} {key} has several matches at {labels['right']}",
                "differs": f"{labels['left']} {key} and {labels['right']} disagree on {', '.join(fields)}",
                "extra": f"{labels['right']} holds {key}, which {labels['left']} does not"}[kind] + f" ({rule.name})"

    @staticmethod
    def _suggest(rule: Rule, kind: str, key: str, labels: dict[str, str], fields: list[str]) -> str:
        text = rule.spec.suggest.get(kind) or DEFAULT_SUGGESTIONS[kind]
        return text.format(key=key, left=labels["left"], right=labels["right"], fields=", ".join(fields))
