"""Generic HTTP upstream: forwards an operation to an internal service that already speaks the contract.

Route it with `x-gateway: {route: <vendor>.forward, upstream_path: /orders/{order_id}}`; the vendor's
`base_url` in gateway.yaml says where the service lives. The validated request goes out unchanged (path mapped,
query string and body as received); the caller's Authorization never leaves the gateway: the upstream gets the
gateway's own credentials (adapters/credentials.py) and the caller's identity as `X-Gateway-Client-Id` and
`X-Gateway-Scopes`. The answer is passed back as is, after response validation, except failures that are ours
to name.

Ownership (x-gateway.ownership, docs/ownership.md): the upstream is told whose objects the caller may touch in
`X-Gateway-Owner` (absent when the caller may see every owner's objects) and must answer every success with the
owner of what it answered in the same header (for a list: the owner it filtered by); the gateway compares it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from adapters.client import VendorClient
from adapters.credentials import VendorCredentials
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.settings import VendorSettings

_VAR = re.compile(r"\{([^{}/]+)\}")
_FORWARDED = ("content-type", "accept")
# Statuses that say something about the upstream or about us, not about the caller's request.
_OURS = {401, 403, 407, 408, 429}


class HttpAdapter(Adapter):
    name = "http"
    OWNERSHIP = {"forward": "forward"}

    def _path(self, call: AdapterCall) -> str:
        template: str = call.options["upstream_path"]
        parts = self._templates.get(template)
        if parts is None:
            parts = self._templates[template] = _VAR.split(template)  # literal, name, literal, name, ..., literal
        if len(parts) == 1:
            return template
        return "".join(quote(str(call.params[p]), safe="") if i % 2 else p for i, p in enumerate(parts))

    def __init__(self, vendor: str, settings: VendorSettings, client: VendorClient) -> None:
        super().__init__(vendor, settings, client)
        self.credentials = VendorCredentials(vendor, settings)
        self._templates: dict[str, list[str]] = {}  # upstream_path -> split at its {variables}

    async def _headers(self, call: AdapterCall) -> dict[str, str]:
        headers = dict(await self.credentials.headers())
        if call.media_type and call.raw_body:
            headers["content-type"] = call.media_type
        if call.client_id:
            headers["x-gateway-client-id"] = call.client_id
            headers["x-gateway-scopes"] = " ".join(sorted(call.scopes))
        if call.owner is not None:
            headers["x-gateway-owner"] = call.owner
        return headers

    async def shutdown(self) -> None:
        await self.credentials.close()
        await super().shutdown()

    @operation
    async def forward(self, call: AdapterCall) -> AdapterResult:
        path = self._path(call)
        if call.query_string:
            path += "?" + call.query_string.decode("latin-1")
        r = await self.client.request(call.method, path, content=call.raw_body, headers=await self._headers(call),
                                      call=call)
        vendor_request_id = r.header("x-request-id")
        if r.status >= 500 or r.status in _OURS:
            raise to_problem(VendorFailure(self.vendor, r.status, vendor_request_id=vendor_request_id,
                                           retry_after_s=retry_after_seconds(r.header("retry-after"))))
        media = (r.header("content-type") or "application/json").split(";")[0].strip()
        return AdapterResult(r.status, raw=r.body, media_type=media, vendor_request_id=vendor_request_id,
                             owner=r.header("x-gateway-owner"))
