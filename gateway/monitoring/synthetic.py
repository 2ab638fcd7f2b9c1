"""Synthetic transactions: golden paths declared as steps over public operations, run through the whole gateway.

    paths:
      order-to-delivery:
        description: Create an order, pay for it, mark it delivered, read it back.
        every: 5m
        steps:
          - {name: create-order, operation: orders.v2.createOrder, body: {...}, expect: 201, save: {order_id: /id}}
          - {name: read-back, operation: orders.v2.getOrder, params: {order_id: "{order_id}"}, check: {/id: ...}}

Each step is a real HTTP request into this gateway's own ASGI application (edge, every policy, the adapter, the
vendor, response validation), carrying a bearer token of the built-in issuer for `monitoring.synthetic_client`
(scopes: what the steps' operations require), its own request id (`syn-<run>-<n>`, so `/admin/requests/{id}` tells
its story) and a new trace. Strings in params, headers and bodies may use `{run}` (unique per run) and any value
saved by an earlier step; a string that is only `{name}` keeps the saved value's type.

A step whose status is not the expected one, or whose `check` (JSON pointer -> value) fails, ends the run: the
failure becomes an exception with every step's timing, request id and the failing answer, and an alert that
resolves at the next successful run. Fixtures must be safe: point golden paths at test accounts or sandboxes, and
give them data a reconciliation rule can exclude (the demo uses the customer synthetic@example.com).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from gateway.jobs.model import iso
from gateway.observability import metrics

from .alerts import Alert
from .models import PathSpec

if TYPE_CHECKING:
    from gateway.runtime import Runtime

    from .alerts import AlertCenter
    from .exceptions import ExceptionQueue

log = logging.getLogger("gateway.monitoring.synthetic")
_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_BODY_SHOWN = 4000


@dataclass(frozen=True)
class GoldenPath:
    name: str
    spec: PathSpec
    file: str


def fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _TEMPLATE.sub(lambda m: str(values.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


def pointer(doc: Any, ptr: str) -> Any:
    node = doc
    for part in [p.replace("~1", "/").replace("~0", "~") for p in ptr.lstrip("/").split("/") if ptr.strip("/")]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


class SyntheticRunner:
    def __init__(self, runtime: Runtime, queue: ExceptionQueue, alerts: AlertCenter,
                 paths: dict[str, GoldenPath]) -> None:
        self.runtime, self.queue, self.alerts, self.paths = runtime, queue, alerts, paths
        self.app: Any = None  # the gateway's ASGI application (gateway/app.py sets it)

    def _token(self, scopes: set[str]) -> str:
        settings = self.runtime.settings.monitoring
        if settings.synthetic_token is not None:
            return settings.synthetic_token.get_secret_value()
        issuer = self.runtime.auth.issuer
        assert issuer is not None, "checked at start-up: synthetic paths need the built-in issuer or a token"
        return issuer.mint(settings.synthetic_client, sorted(scopes))

    def _scopes(self, path: GoldenPath) -> set[str]:
        scopes: set[str] = set()
        for step in path.spec.steps:
            op = self.runtime.by_key[step.operation]
            requirements = op.node.get("security", op.contract.data.get("security")) or []
            schemes = (op.contract.data.get("components") or {}).get("securitySchemes") or {}
            for requirement in requirements[:1] or []:  # the first alternative, as a client would choose
                for name, needed in (requirement or {}).items():
                    if (schemes.get(name) or {}).get("type") in ("oauth2", "openIdConnect"):
                        scopes |= set(needed or [])
        return scopes

    async def run(self, name: str) -> dict[str, Any]:
        """Run one golden path now; its summary (status ok or failed, each step)."""
        import httpx

        path = self.paths[name]
        run_id = secrets.token_hex(6)
        values: dict[str, Any] = {"run": run_id}
        token = self._token(self._scopes(path))
        steps: list[dict[str, Any]] = []
        failure: dict[str, Any] | None = None
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://synthetic.gateway.internal",
                                     timeout=60) as client:
            for n, step in enumerate(path.spec.steps, 1):
                op = self.runtime.by_key[step.operation]
                params = fill(step.params, values)
                url = op.path
                for param in list(params):
                    if "{" + param + "}" in url:
                        url = url.replace("{" + param + "}", quote(str(params.pop(param)), safe=""))
                request_id = f"syn-{run_id}-{n}"
                headers = {"authorization": f"Bearer {token}", "x-request-id": request_id,
                           "accept": "application/json", **fill(step.headers, values)}
                body = fill(step.body, values)
                if body is not None:
                    headers["content-type"] = "application/json"
                started = time.perf_counter()
                try:
                    r = await client.request(op.method, url, params={k: str(v) for k, v in params.items()},
                                             headers=headers, content=None if body is None else orjson.dumps(body))
                    status, text = r.status_code, r.text
                except Exception as exc:  # the gateway itself failed to answer: that is a failure of the path
                    status, text = None, f"{type(exc).__name__}: {exc}"
                seconds = time.perf_counter() - started
                metrics.synthetic_step_seconds.labels(name, step.name).observe(seconds)
                answer: Any = None
                try:
                    answer = orjson.loads(text) if text else None
                except orjson.JSONDecodeError:
                    answer = text[:MAX_BODY_SHOWN]
                entry: dict[str, Any] = {"step": step.name, "operation": step.operation, "method": op.method,
                                         "path": url, "status": status, "ms": round(seconds * 1000, 1),
                                         "request_id": request_id}
                steps.append(entry)
                problems = []
                if status != step.expect:
                    problems.append(f"answered {status}, expected {step.expect}")
                for ptr, expected in fill(step.check, values).items():
                    got = pointer(answer, ptr)
                    if got != expected:
                        problems.append(f"{ptr} is {got!r}, expected {expected!r}")
                if problems:
                    entry["problems"] = problems
                    failure = {"step": step.name, "problems": problems, "answer": answer, "request_id": request_id}
                    break
                for key, ptr in step.save.items():
                    values[key] = pointer(answer, ptr)
        outcome = "failed" if failure else "ok"
        metrics.synthetic_runs_total.labels(name, outcome).inc()
        summary = {"path": name, "run": run_id, "status": outcome, "at": iso(time.time()), "steps": steps}
        await self._record(path, summary, failure)
        return summary

    async def _record(self, path: GoldenPath, summary: dict[str, Any], failure: dict[str, Any] | None) -> None:
        now = time.time()
        name = path.name
        if failure is None:
            open_items = await self.queue.open_for("synthetic", name)
            await self.queue.auto_resolve(list(open_items.values()), f"run {summary['run']} succeeded", now)
            await self.alerts.sync("synthetic", [], now, scope={name})
            return
        step = failure["step"]
        title = f"golden path {name} failed at step {step}: {'; '.join(failure['problems'])}"
        log.warning("synthetic %s", title, extra={"request_id": failure["request_id"]})
        item_id, _ = await self.queue.record(
            "synthetic", name, step, f"synthetic:{name}:{step}", title,
            f"Open the failing request's story (/admin/requests/{failure['request_id']}) to see which stage or "
            "vendor answered wrong; fix it, then requeue to run the path again.",
            {"answer": failure["answer"], "steps": summary["steps"]},
            {"path": name, "description": path.spec.description, "run": summary["run"],
             "attempts": summary["steps"], "request_ids": [s["request_id"] for s in summary["steps"]]}, now)
        await self.alerts.sync("synthetic", [Alert(
            "synthetic", "SyntheticPathFailed", "page", {"path": name, "step": step}, title,
            f"{path.spec.description} Run {summary['run']} stopped at step {step}: {'; '.join(failure['problems'])}. "
            f"Steps: " + ", ".join(f"{s['step']} {s['status']} in {s['ms']} ms" for s in summary["steps"]) + ".",
            {"request_ids": [s["request_id"] for s in summary["steps"]], "exceptions": [item_id], "paths": [name]})],
            now, scope={name})
