"""The docs portal: every API and version with its status, each contract rendered, changelogs between versions.

Served from the gateway itself with locally vendored Swagger UI (gateway/docs/static/swagger-ui): it works with no
internet access. No inline script or style (portal.css, reference.js): the pages run under a CSP without
'unsafe-inline' (gateway/docs/security_headers.py). Pages are built from the compiled runtime once and cached; none
of this is on the request path.
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from gateway.contracts.compile import api_identity
from gateway.contracts.diff import diff_contracts
from gateway.events.asyncapi import routes as event_routes
from gateway.problems import NotFound

if TYPE_CHECKING:
    from gateway.contracts.load import Contract
    from gateway.runtime import Runtime



def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<link rel='stylesheet' href='/docs/static/portal.css'></head><body>" + body + "</body></html>")


def build_portal(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    router.include_router(event_routes(runtime.contracts, runtime.settings, _page))  # the events (AsyncAPI)
    documents: dict[tuple[str, str], Contract] = {api_identity(c): c for c in runtime.contracts}
    by_api: dict[str, list[str]] = {}
    for api, version in sorted(documents, key=lambda k: (k[0], int(k[1][1:]))):
        by_api.setdefault(api, []).append(version)

    def status(api: str, version: str) -> dict[str, Any]:
        for entry in runtime.versions.listing(api):
            if entry["version"] == version:
                return entry
        return {"status": "current", "sunset": None}

    @lru_cache(maxsize=64)
    def changelog(api: str) -> list[tuple[str, str, list[Any]]]:
        versions = by_api.get(api, [])
        out = []
        for older, newer in zip(versions, versions[1:], strict=False):
            changes = [c for c in diff_contracts(documents[(api, older)], documents[(api, newer)])
                       if c.kind != "server-base-path-changed"]
            out.append((older, newer, changes))
        return out

    @router.get("/docs", response_class=HTMLResponse)
    async def index() -> str:
        rows = []
        for api, versions in by_api.items():
            for version in versions:
                c = documents[(api, version)]
                info = c.data.get("info", {})
                st = status(api, version)
                sunset = f"sunset {st['sunset']}" if st.get("sunset") else ""
                rows.append(
                    f"<tr><td>{html.escape(str(info.get('title', api)))}</td><td>{version}</td>"
                    f"<td class='{st['status']}'>{st['status']} {sunset}</td>"
                    f"<td><a href='/docs/{api}/{version}'>reference</a> &middot; "
                    f"<a href='/contracts/{api}/{version}/openapi.json'>openapi.json</a>"
                    + (f" &middot; <a href='/docs/{api}/changelog'>changelog</a>" if len(versions) > 1 else "")
                    + "</td></tr>")
        table = ("<table><thead><tr><th>API</th><th>version</th><th>status</th><th></th></tr></thead><tbody>"
                 + "".join(rows) + "</tbody></table>")
        return _page("API docs", "<h1>APIs</h1>" + table +
                     "<p>Errors are <code>application/problem+json</code> (RFC 9457): see "
                     "<a href='/problems'>the problem types</a>.</p>"
                     "<p>Events: <a href='/docs/events'>the event catalog</a> &middot; "
                     "<a href='/contracts/events/asyncapi.json'>asyncapi.json</a> (AsyncAPI 3.0).</p>")

    @router.get("/docs/{api}/changelog", response_class=HTMLResponse)
    async def api_changelog(api: str) -> str:
        if api not in by_api:
            raise NotFound(f"no API {api!r}")
        parts = [f"<h1>{html.escape(api)}: changes between versions</h1>"]
        for older, newer, changes in changelog(api):
            breaking = sum(1 for c in changes if c.breaking)
            items = "".join(
                f"<li><span class='{'breaking' if c.breaking else 'ok'}'>"
                f"{'breaking' if c.breaking else 'compatible'}</span> <code>{html.escape(c.kind)}</code> "
                f"{html.escape(c.message)} <small><code>{html.escape(c.pointer)}</code></small></li>"
                for c in sorted(changes, key=lambda c: not c.breaking))
            parts.append(f"<h2>{older} &rarr; {newer}</h2><p>{len(changes)} changes, {breaking} breaking</p>"
                         f"<ul>{items}</ul>")
        return _page(f"{api} changelog", "".join(parts))

    @router.get("/docs/{api}/{version}", response_class=HTMLResponse)
    async def reference(api: str, version: str) -> str:
        if (api, version) not in documents:
            raise NotFound(f"no contract for {api} {version}")
        st = status(api, version)
        banner = ""
        if st["status"] != "current":
            banner = (f"<p class='{st['status']} banner'>This version is {st['status']}"
                      + (f"; it stops answering on {st['sunset']}" if st.get("sunset") else "") + ".</p>")
        url = f"/contracts/{api}/{version}/openapi.json"
        title = f"{html.escape(api)} {version}"
        return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/docs/static/swagger-ui/swagger-ui.css">
<link rel="stylesheet" href="/docs/static/portal.css">
</head><body class="reference">{banner}<div id="ui" data-url="{html.escape(url)}"></div>
<script src="/docs/static/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/docs/static/reference.js"></script></body></html>"""

    return router
