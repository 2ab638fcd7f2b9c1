"""API versions side by side: which versions exist, header selection, and a useful answer for unknown versions.

Selection rules (precedence):
1. The path version (`/v1/orders`, `/v2/orders`) always wins: it is what the contracts declare.
2. A contract that opts in with `x-gateway.version_header: API-Version` is also served without its version
   prefix (`/orders`); the header picks the version (`API-Version: 2` or `v2`). Without the header, the newest
   version that is not deprecated answers.
3. A path under a version that does not exist (`/v9/orders`), or a header naming one, gets a 404
   `unknown-version` problem listing the versions that do exist, with their status and sunset dates.
Only consulted when the main router finds nothing, so it costs nothing on the normal path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.contracts.compile import Operation
from gateway.contracts.extension import epoch
from gateway.http.router import Router
from gateway.problems import ClientProblem, NotFound

_VERSION_SEGMENT = re.compile(r"^/(v[0-9]{1,3})(/.*)$")


class UnknownVersion(ClientProblem):
    """The API exists, but not in the version asked for."""

    status, slug, title = 404, "unknown-version", "Unknown API version"


@dataclass
class VersionInfo:
    api: str
    version: str
    base_path: str
    status: str  # current | deprecated | retired (after sunset)
    sunset: str | None
    sunset_at: float | None = None  # the sunset as epoch seconds

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.status, "sunset": self.sunset, "base_path": self.base_path}


class VersionIndex:
    """Per API: its versions, an unversioned router per version (for header selection and unknown versions)."""

    def __init__(self, operations: list[Operation], clock: Any) -> None:
        self.clock = clock
        self.versions: dict[str, dict[str, VersionInfo]] = {}
        self.header: dict[str, str] = {}  # api -> header name, for APIs that opted in
        unversioned: dict[tuple[str, str], list[_Alias]] = {}
        for op in operations:
            base = op.route_options.get("base_path", "")
            info = self.versions.setdefault(op.api, {}).get(op.version)
            if info is None:
                block = op.api_config.deprecation
                declared = block is not None and bool(block.model_fields_set)
                sunset = block.sunset if block is not None else None
                info = VersionInfo(op.api, op.version, base, "deprecated" if declared else "current",
                                   str(sunset) if sunset else None, epoch(sunset))
                self.versions[op.api][op.version] = info
            if op.api_extension.get("version_header"):
                self.header[op.api] = op.api_extension["version_header"].lower()
            stripped = op.path[len(base):] if base and op.path.startswith(base) else op.path
            unversioned.setdefault((op.api, op.version), []).append(_Alias(stripped, op.method, op))
        self.routers = {key: Router(ops) for key, ops in unversioned.items()}

    def listing(self, api: str) -> list[dict[str, Any]]:
        out = []
        for info in sorted(self.versions.get(api, {}).values(), key=lambda i: int(i.version[1:])):
            entry = info.as_dict()
            if info.sunset_at is not None and self.clock() >= info.sunset_at:
                entry["status"] = "retired"
            out.append(entry)
        return out

    def _api_for(self, method: str, path: str) -> tuple[str, str, Operation, dict[str, str]] | None:
        """Which API (and version) serves `path` without its version prefix, if any."""
        for (api, version), router in self.routers.items():
            try:
                alias, params = router.match(method, path)
            except ClientProblem:
                continue
            return api, version, alias.original, params
        return None

    def resolve(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[Operation, dict[str, str]]:
        """The operation for a path the main router did not know, or NotFound / UnknownVersion."""
        m = _VERSION_SEGMENT.match(path)
        if m is not None:
            found = self._api_for(method, m.group(2))
            if found is not None and found[1] != m.group(1):
                api = found[0]
                raise UnknownVersion(f"{api} has no version {m.group(1)}",
                                     extensions={"versions": self.listing(api)})
            raise NotFound("no operation is declared at this path")
        for (api, _version), router in self.routers.items():
            header = self.header.get(api)
            if header is None:
                continue
            try:
                router.match(method, path)
            except ClientProblem:
                continue
            wanted = _header(headers, header)
            if wanted is None:
                return self._default(api, method, path)
            wanted = wanted if wanted.startswith("v") else f"v{wanted}"
            target = self.routers.get((api, wanted))
            if target is None:
                raise UnknownVersion(f"{api} has no version {wanted!r}", extensions={"versions": self.listing(api)})
            alias, params = target.match(method, path)
            return alias.original, params
        raise NotFound("no operation is declared at this path")

    def _default(self, api: str, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        candidates = sorted(self.versions[api].values(), key=lambda i: int(i.version[1:]), reverse=True)
        chosen = next((i for i in candidates if i.status == "current"), candidates[0])
        alias, params = self.routers[(api, chosen.version)].match(method, path)
        return alias.original, params


def _header(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    key = name.encode("latin-1")
    for k, v in headers:
        if k == key:
            return v.decode("latin-1").strip()
    return None


@dataclass
class _Alias:
    """An operation at its path without the version prefix: what the unversioned routers match on."""

    path: str
    method: str
    original: Operation
