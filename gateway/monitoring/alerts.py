"""Alerts: raised by the evaluators, deduplicated and silenced here, delivered to people and their tools.

An alert is identified by its name and labels (the fingerprint), as in Prometheus. Each evaluator owns a family
(slo, volume, reconcile, synthetic) and says, each time it judges, which alerts of its family are active
(`sync`): a new one starts firing, one that is still active is updated (not notified again), one that is no longer
active is resolved. State is in the shared store, so several gateway processes never notify twice, and a restart
remembers what was firing.

Delivery (by the process holding the evaluation lease):
- the operator page lists alerts (GET /admin/alerts), silenced ones marked;
- Alertmanager's API v2 (`POST /api/v2/alerts`, postableAlerts as its OpenAPI document defines them): firing alerts
  are sent again every `resend_every_s` with an endsAt a few resends ahead, as Prometheus does, so Alertmanager
  resolves them by itself if this gateway goes away; a resolved alert is sent with its endsAt;
- signed webhooks: outbound webhook subscriptions listing `alert.firing` / `alert.resolved` get a Standard
  Webhooks event through the same durable, retried, dead-lettered delivery as every other event. Subscriptions
  to "*" do not: alerts are for operators, not partners.
A silence (label matchers until a time) keeps matching alerts off every receiver; they still show on the page.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.jobs.model import NewJob, iso
from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.runtime import Runtime

    from .store import MonitoringStore

log = logging.getLogger("gateway.monitoring.alerts")
FAMILIES = ("slo", "volume", "reconcile", "synthetic")
COLUMNS = ("fingerprint, family, name, severity, labels, annotations, links, state, starts_at, updated_at, ends_at, "
           "notified_state, notified_at")


@dataclass
class Alert:
    family: str
    name: str
    severity: str
    labels: dict[str, str]
    summary: str
    description: str
    links: dict[str, list[str]] = field(default_factory=dict)  # request_ids, exceptions, rules, runs

    @property
    def fingerprint(self) -> str:
        text = self.name + "".join(f"|{k}={v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def all_labels(self) -> dict[str, str]:
        return {"alertname": self.name, "severity": self.severity, **self.labels}


def _doc(row: tuple[Any, ...], silences: list[dict[str, Any]]) -> dict[str, Any]:
    (fp, family, name, severity, labels, annotations, links, state, starts, updated, ends, nstate, nat) = row
    labels, annotations = orjson.loads(labels), orjson.loads(annotations)
    return {"fingerprint": fp, "family": family, "name": name, "severity": severity, "state": state,
            "silenced_by": [s["id"] for s in silences if matches(s["matchers"], labels)],
            "labels": labels, "summary": annotations.get("summary", ""),
            "description": annotations.get("description", ""), "links": orjson.loads(links),
            "starts_at": iso(starts), "updated_at": iso(updated), "ends_at": iso(ends),
            "notified": nstate, "notified_at": iso(nat),
            "_t": {"starts": starts, "updated": updated, "ends": ends, "notified": nat}}


def matches(matchers: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in matchers.items())


class AlertCenter:
    def __init__(self, runtime: Runtime, store: MonitoringStore) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = runtime.settings.monitoring.alerts
        server = runtime.settings.server
        self.external_url = (self.settings.external_url or f"http://{server.host}:{server.port}").rstrip("/")
        self.session: Any = None

    # -- state -----------------------------------------------------------------------------------------------------

    async def sync(self, family: str, active: list[Alert], now: float, scope: set[str] | None = None) -> None:
        """`active` is every alert of `family` that holds now; firing ones not in it resolve. With `scope`, only
        firing alerts whose `operation`/`rule`/`path` label is in it are judged (the rest were not looked at)."""
        rows = await self.store.fetch(f"SELECT {COLUMNS} FROM cg_mon_alerts WHERE family = ? AND state = 'firing'",
                                      family)
        firing = {r[0]: r for r in rows}
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for alert in active:
            annotations = orjson.dumps({"summary": alert.summary, "description": alert.description}).decode()
            if alert.fingerprint in firing:
                statements.append(("UPDATE cg_mon_alerts SET annotations = ?, links = ?, updated_at = ? WHERE "
                                   "fingerprint = ?", (annotations, orjson.dumps(alert.links).decode(), now,
                                                       alert.fingerprint)))
                continue
            log.warning("alert firing: %s", alert.summary, extra={"alert": alert.name})
            statements.append((
                f"INSERT INTO cg_mon_alerts ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'firing', ?, ?, NULL, NULL, NULL) "
                "ON CONFLICT (fingerprint) DO UPDATE SET state = 'firing', starts_at = excluded.starts_at, "
                "updated_at = excluded.updated_at, ends_at = NULL, annotations = excluded.annotations, "
                "links = excluded.links, notified_state = NULL, notified_at = NULL",
                (alert.fingerprint, family, alert.name, alert.severity, orjson.dumps(alert.all_labels).decode(),
                 annotations, orjson.dumps(alert.links).decode(), now, now)))
        keep = {a.fingerprint for a in active}
        for fp, row in firing.items():
            labels = orjson.loads(row[4])
            judged = scope is None or {labels.get("operation"), labels.get("rule"), labels.get("path")} & scope
            if fp not in keep and judged:
                log.info("alert resolved: %s", row[2], extra={"alert": row[2]})
                statements.append(("UPDATE cg_mon_alerts SET state = 'resolved', ends_at = ?, updated_at = ? WHERE "
                                   "fingerprint = ? AND state = 'firing'", (now, now, fp)))
        if statements:
            await self.store.run(statements)

    async def silences(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        rows = await self.store.fetch("SELECT id, matchers, starts_at, ends_at, created_by, comment FROM "
                                      "cg_mon_silences WHERE ends_at > ? ORDER BY starts_at", now)
        return [{"id": r[0], "matchers": orjson.loads(r[1]), "starts_at": iso(r[2]), "ends_at": iso(r[3]),
                 "created_by": r[4], "comment": r[5]} for r in rows]

    async def silence(self, matchers: dict[str, str], duration_s: float, created_by: str, comment: str) -> str:
        silence_id = "sil_" + secrets.token_hex(8)
        now = time.time()
        await self.store.execute("INSERT INTO cg_mon_silences (id, matchers, starts_at, ends_at, created_by, comment) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", silence_id, orjson.dumps(matchers).decode(), now,
                                 now + duration_s, created_by, comment)
        return silence_id

    async def unsilence(self, silence_id: str) -> bool:
        rows = await self.store.fetch("UPDATE cg_mon_silences SET ends_at = ? WHERE id = ? AND ends_at > ? "
                                      "RETURNING id", time.time(), silence_id, time.time())
        return bool(rows)

    async def list(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        silences = await self.silences()
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = await self.store.fetch(f"SELECT {COLUMNS} FROM cg_mon_alerts {where} ORDER BY updated_at DESC "
                                      "LIMIT ?", *params, limit)
        return [_doc(r, silences) for r in rows]

    @staticmethod
    def shown(alert: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in alert.items() if k != "_t"}

    async def refresh_metrics(self) -> None:
        rows = await self.store.fetch("SELECT family, COUNT(*) FROM cg_mon_alerts WHERE state = 'firing' "
                                      "GROUP BY family")
        counts = dict(rows)
        for family in FAMILIES:
            metrics.alerts_firing.labels(family).set(counts.get(family, 0))

    # -- delivery --------------------------------------------------------------------------------------------------

    async def deliver(self, now: float) -> None:
        """Notify what changed (signed webhooks) and keep Alertmanager current. Called by the lease holder."""
        alerts = await self.list()
        await self._webhooks(alerts, now)
        if self.settings.alertmanager:
            await self._alertmanager(alerts, now)

    def _subscribers(self, event_type: str) -> builtins.list[Any]:  # `list` below the method is the method
        return [s for s in self.runtime.settings.webhooks.subscriptions if event_type in s.events]

    async def _webhooks(self, alerts: builtins.list[dict[str, Any]], now: float) -> None:
        for alert in alerts:
            state, notified, t = alert["state"], alert["notified"], alert["_t"]
            repeat = (state == "firing" and t["notified"] is not None
                      and now - t["notified"] >= self.settings.repeat_after_s)
            if notified == state and not repeat:
                continue
            # A resolution is news only to those who heard of the firing; silenced alerts reach no receiver.
            if not alert["silenced_by"] and not (state == "resolved" and notified is None):
                event_type = f"alert.{state}"
                nth = int((now - t["starts"]) // self.settings.repeat_after_s) if repeat else 0
                event_id = "evt_" + hashlib.sha256(
                    f"{alert['fingerprint']}|{t['starts']}|{state}|{nth}".encode()).hexdigest()[:24]
                event = {"id": event_id, "type": event_type, "version": "v1", "created_at": iso(now),
                         "data": self.public(alert)}
                for sub in self._subscribers(event_type):
                    await self.runtime.jobs.store.enqueue(NewJob(
                        "webhook_out", sub.id, {"event": event}, vendor=f"webhook:{sub.id}",
                        dedupe_key=f"out:{sub.id}:{event_id}", schedule=self.runtime.webhooks.schedule))
                    metrics.alert_notifications_total.labels("webhook", "queued").inc()
                self.runtime.jobs.notify()
            await self.store.execute("UPDATE cg_mon_alerts SET notified_state = ?, notified_at = ? WHERE "
                                     "fingerprint = ?", state, now, alert["fingerprint"])

    def public(self, alert: dict[str, Any]) -> dict[str, Any]:
        """What receivers see: the alert with links they can open."""
        return {k: alert[k] for k in ("fingerprint", "name", "severity", "state", "labels", "summary", "description",
                                      "links", "starts_at", "ends_at")} | {
            "url": f"{self.external_url}/admin/queue#alert={alert['fingerprint']}"}

    def postable(self, alert: dict[str, Any], now: float, resend_s: float) -> dict[str, Any]:
        """One Alertmanager API v2 postableAlert (labels, annotations, startsAt, endsAt, generatorURL)."""
        links = alert["links"]
        annotations = {"summary": alert["summary"], "description": alert["description"]}
        for name, values in links.items():
            if values:
                annotations[name] = ", ".join(values)
        ends = alert["ends_at"] if alert["state"] == "resolved" else iso(now + 4 * resend_s)
        return {"labels": {k: str(v) for k, v in alert["labels"].items()}, "annotations": annotations,
                "startsAt": alert["starts_at"], "endsAt": ends,
                "generatorURL": f"{self.external_url}/admin/queue#alert={alert['fingerprint']}"}

    async def _alertmanager(self, alerts: builtins.list[dict[str, Any]], now: float) -> None:
        import aiohttp

        for receiver in self.settings.alertmanager:
            key = f"alertmanager:{receiver.url}"
            last = float(await self.store.get_value(key) or 0)
            # Firing alerts, and resolutions Alertmanager has not been told about; nothing silenced.
            wanted = [a for a in alerts if not a["silenced_by"]
                      and (a["state"] == "firing" or (a["_t"]["ends"] or 0) > last)]
            news = any(a["_t"]["starts"] > last or (a["_t"]["ends"] or 0) > last for a in wanted)
            if not wanted or (now - last < receiver.resend_every_s and not news):
                continue
            body = [self.postable(a, now, receiver.resend_every_s) for a in wanted]
            if self.session is None:
                self.session = aiohttp.ClientSession()
            try:
                async with self.session.post(receiver.url.rstrip("/") + "/api/v2/alerts", json=body,
                                             timeout=aiohttp.ClientTimeout(total=receiver.timeout_s)) as r:
                    ok = 200 <= r.status < 300
                    await r.read()
            except Exception as exc:  # down or unreachable: sent again at the next evaluation
                log.warning("alertmanager %s unreachable: %s", receiver.url, type(exc).__name__)
                ok = False
            metrics.alert_notifications_total.labels("alertmanager", "sent" if ok else "failed").inc()
            if ok:
                await self.store.set_value(key, repr(now))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
