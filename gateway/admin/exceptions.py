"""The exception queue, alerts and monitoring status over HTTP, for operators (bearer token with gateway:admin).

    GET  /admin/queue                         the page: exception queue, alerts, rules, golden paths, SLOs (static)
    GET  /admin/exceptions?kind=&state=&limit= dead letters, reconciliation mismatches, failed golden paths
    GET  /admin/exceptions/{id}               one, with its snapshot, attempts and vendor answers
    POST /admin/exceptions/{id}/resolve       {"reason": "..."} (required); a dead letter is discarded
    POST /admin/exceptions/{id}/requeue       run again what produced it; 409 if requeued already
    GET  /admin/alerts?state=                 alerts (silenced ones marked) and the active silences
    POST /admin/alerts/silences               {"matchers": {"alertname": "..."}, "duration_s": 3600, "comment": ".."}
    DELETE /admin/alerts/silences/{id}
    GET  /admin/monitoring                    rules' and paths' last runs, SLO burn rates, the queue's backlog
    POST /admin/reconcile/{rule}              run a rule now (in the background): 202
    POST /admin/synthetic/{path}              run a golden path now, answer its summary

The page is static, like the operator page (gateway/admin/ops.py): its script and style are separate files under
/docs/static, nothing inline, so it runs under a strict Content-Security-Policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gateway.monitoring.exceptions import KINDS, NotFoundError, StateConflict
from gateway.problems import DependencyUnavailable, NotFound, RequestInvalid, ResourceConflict, Violation

if TYPE_CHECKING:
    from gateway.runtime import Runtime

PAGE = Path(__file__).parents[1] / "docs" / "static" / "queue.html"


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        value = await request.json()
    except ValueError:
        raise RequestInvalid([Violation("body", "", "is not JSON")]) from None
    if not isinstance(value, dict):
        raise RequestInvalid([Violation("body", "", "must be an object")])
    return value


def build_exception_routes(runtime: Runtime, require_admin: Any) -> APIRouter:
    router = APIRouter()
    monitoring = runtime.monitoring

    def ready() -> None:
        if not monitoring.started:
            raise DependencyUnavailable("monitoring is not running here (monitoring.enabled is false, or the "
                                        "gateway is still starting)")

    @router.get("/admin/queue", response_class=HTMLResponse)
    async def page() -> Response:
        return HTMLResponse(PAGE.read_text(), headers={"cache-control": "no-store", "referrer-policy": "no-referrer"})

    @router.get("/admin/exceptions")
    async def list_items(kind: str | None = None, state: str = "open", limit: int = Query(100, ge=1, le=1000),
                         admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        if kind is not None and kind not in KINDS:
            raise RequestInvalid([Violation("query", "/kind", f"must be one of {', '.join(KINDS)}")])
        if state not in ("open", "requeued", "resolved"):
            raise RequestInvalid([Violation("query", "/state", "must be open, requeued or resolved")])
        items = await monitoring.queue.list(kind, state, limit)
        return {"exceptions": items, "backlog": await monitoring.queue.refresh_metrics()}

    @router.get("/admin/exceptions/{item_id}")
    async def show(item_id: str, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        try:
            return await monitoring.queue.get(item_id)
        except NotFoundError:
            raise NotFound(f"no exception {item_id}") from None

    @router.post("/admin/exceptions/{item_id}/resolve")
    async def resolve(item_id: str, request: Request, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        reason = str((await _body(request)).get("reason") or "").strip()
        if not reason:
            raise RequestInvalid([Violation("body", "/reason", "say why this is resolved")])
        try:
            return await monitoring.queue.resolve(item_id, reason[:2000], admin)
        except NotFoundError:
            raise NotFound(f"no exception {item_id}") from None
        except StateConflict as exc:
            raise ResourceConflict(str(exc)) from None

    @router.post("/admin/exceptions/{item_id}/requeue")
    async def requeue(item_id: str, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        try:
            return await monitoring.queue.requeue(item_id, admin)
        except NotFoundError:
            raise NotFound(f"no exception {item_id}") from None
        except StateConflict as exc:
            raise ResourceConflict(str(exc)) from None

    @router.get("/admin/alerts")
    async def alerts(state: str | None = None, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        if state not in (None, "firing", "resolved"):
            raise RequestInvalid([Violation("query", "/state", "must be firing or resolved")])
        return {"alerts": [monitoring.alerts.shown(a) for a in await monitoring.alerts.list(state)],
                "silences": await monitoring.alerts.silences()}

    @router.post("/admin/alerts/silences", status_code=201)
    async def silence(request: Request, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        body = await _body(request)
        matchers, duration, comment = body.get("matchers"), body.get("duration_s", 3600), body.get("comment")
        violations = []
        if not isinstance(matchers, dict) or not matchers or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in matchers.items()):
            violations.append(Violation("body", "/matchers", "give label: value pairs, e.g. {\"alertname\": ...}"))
        if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 < duration <= 30 * 86400:
            violations.append(Violation("body", "/duration_s", "seconds, more than 0 and at most 30 days"))
        if not isinstance(comment, str) or not comment.strip():
            violations.append(Violation("body", "/comment", "say why"))
        if violations:
            raise RequestInvalid(violations)
        assert isinstance(matchers, dict) and isinstance(comment, str)  # checked above: for the type checker
        silence_id = await monitoring.alerts.silence(matchers, float(duration), admin, comment.strip()[:500])
        return {"id": silence_id}

    @router.delete("/admin/alerts/silences/{silence_id}")
    async def unsilence(silence_id: str, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        if not await monitoring.alerts.unsilence(silence_id):
            raise NotFound(f"no active silence {silence_id}")
        return {"expired": silence_id}

    @router.get("/admin/monitoring")
    async def status(admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        return await monitoring.status()

    @router.post("/admin/reconcile/{rule}")
    async def reconcile(rule: str, admin: str = Depends(require_admin)) -> Response:
        ready()
        if rule not in monitoring.decl.rules:
            raise NotFound(f"no reconciliation rule {rule}")
        started = monitoring.spawn(f"reconcile:{rule}", monitoring.reconciler.run(rule))
        return JSONResponse({"rule": rule, "started": started}, status_code=202)

    @router.post("/admin/synthetic/{path}")
    async def synthetic(path: str, admin: str = Depends(require_admin)) -> dict[str, Any]:
        ready()
        if path not in monitoring.decl.paths:
            raise NotFound(f"no golden path {path}")
        return await monitoring.run_path(path)

    return router
