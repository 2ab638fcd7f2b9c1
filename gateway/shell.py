"""The FastAPI shell: everything that is not a contract operation (docs, contracts, health, problem types).

None of this is on the hot path; the edge (gateway/http/edge.py) only sends here what no contract declares.
Its errors are problem+json like everything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gateway.admin.access import build_require_admin
from gateway.admin.dlq import build_dlq_routes
from gateway.admin.exceptions import build_exception_routes
from gateway.admin.limits import build_usage_routes
from gateway.admin.ops import build_ops_routes
from gateway.auth.routes import build_auth_routes
from gateway.contracts.bundle import public_document
from gateway.contracts.compile import api_identity
from gateway.docs.portal import build_portal
from gateway.docs.security_headers import SecurityHeaders
from gateway.problems import (
    PROBLEM_JSON,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    RequestInvalid,
    Violation,
    all_problem_classes,
)
from gateway.runtime import Runtime
from gateway.webhooks.routes import build_webhook_routes

STATIC = Path(__file__).parent / "docs" / "static"


def problem_response(runtime: Runtime, request: Request, err: GatewayError) -> Response:
    from gateway.http.edge import request_id_of

    request_id = request_id_of(request.scope)
    headers = {**err.headers, "x-request-id": request_id}
    return Response(runtime.renderer.body(err, request_id), err.status, headers=headers,
                    media_type=PROBLEM_JSON.decode())


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of the shell serves at this path (Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "GET"}
    for route in app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


def build_shell(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.startup()
        try:
            yield
        finally:
            await runtime.shutdown()

    app = FastAPI(title="contract-gateway", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(SecurityHeaders)  # CSP, nosniff, no referrer, no framing (gateway/docs/security_headers.py)
    app.mount("/docs/static", StaticFiles(directory=STATIC), name="static")
    documents = {api_identity(c): c for c in runtime.contracts}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return problem_response(runtime, request, NotFound(f"no operation is declared at {request.url.path}"))
        if exc.status_code == 405:
            headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
            allowed = allowed_methods(app, request) or [m.strip() for m in headers.get("allow", "GET").split(",")]
            return problem_response(runtime, request, MethodNotAllowed(allowed))
        err = GatewayError(str(exc.detail))
        err.status = exc.status_code  # type: ignore[misc]
        return problem_response(runtime, request, err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        violations = [Violation(str(e["loc"][0]) if e["loc"] else "body",
                                "/" + "/".join(str(x) for x in e["loc"][1:]), e["msg"]) for e in exc.errors()]
        return problem_response(runtime, request, RequestInvalid(violations))

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return problem_response(runtime, request, exc)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/docs")

    @app.get("/contracts")
    async def contracts() -> list[dict[str, Any]]:
        return [{"api": api, "version": version, "title": c.data.get("info", {}).get("title"),
                 "openapi": f"/contracts/{api}/{version}/openapi.json", "docs": f"/docs/{api}/{version}"}
                for (api, version), c in sorted(documents.items())]

    @app.get("/contracts/{api}/{version}/openapi.json")
    async def contract(api: str, version: str) -> Response:
        c = documents.get((api, version))
        if c is None:
            raise NotFound(f"no contract for {api} {version}")
        return JSONResponse(public_document(c))

    @app.get("/problems/{slug}")
    async def problem_type(slug: str) -> dict[str, Any]:
        for cls in all_problem_classes():
            if cls.slug == slug:
                return {"type": runtime.renderer.type_base + slug, "title": cls.title, "status": cls.status,
                        "description": (cls.__doc__ or "").strip()}
        raise NotFound(f"no problem type {slug!r}")

    @app.get("/problems")
    async def problem_types() -> list[dict[str, Any]]:
        return [{"type": runtime.renderer.type_base + cls.slug, "title": cls.title, "status": cls.status}
                for cls in all_problem_classes() if cls.__module__ == "gateway.problems" and cls.slug
                and cls.__name__ not in ("GatewayError", "ClientProblem", "ServerProblem")]

    app.include_router(build_portal(runtime))
    app.include_router(build_auth_routes(runtime))
    require_admin = build_require_admin(runtime)
    app.include_router(build_dlq_routes(runtime, require_admin))
    app.include_router(build_usage_routes(runtime, require_admin))
    app.include_router(build_ops_routes(runtime, require_admin))
    app.include_router(build_exception_routes(runtime, require_admin))
    app.include_router(build_webhook_routes(runtime))
    return app
