"""One vendor's contract (contracts/vendors/<vendor>.yaml), compiled once at start-up.

Each operation knows its method and path template, a validator for its query (the decoded query string as one
object: undeclared parameters refused), its path parameters, its declared headers, its request body per media type
(JSON as JSON, `application/x-www-form-urlencoded` decoded from Stripe's bracketed keys and checked with string
typed leaves) and, per declared status, the schema its answers are compared with for drift (drift.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from gateway.contracts.load import read_document
from gateway.contracts.validators import SchemaValidator

from .schema import document, ref_name

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
FORM = "application/x-www-form-urlencoded"


class VendorContractError(ValueError):
    """The vendor contract cannot be used; `where` is its file and JSON pointer."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # path, query, header
    required: bool
    validator: SchemaValidator
    csv: bool  # an array written comma-separated (style form, explode false)
    repeated: bool  # an array written as a repeated key (style form, explode true)


@dataclass(frozen=True)
class Declared:
    """One declared answer: its body schema (None: no body), a compiled validator that accepts exactly the answers
    without drift (the fast first look), and the header names it declares."""

    schema: Any
    no_drift: SchemaValidator | None
    headers: frozenset[str]


@dataclass
class VendorOperation:
    vendor: str
    operation_id: str
    method: str
    template: str
    pointer: str  # where it is declared: /paths/<escaped path>/<method>
    used_by: tuple[str, ...] = ()  # `x-gateway-used-by`: the adapter operations that call it (for `gateway diff`)
    path_params: dict[str, Param] = field(default_factory=dict)
    query: SchemaValidator | None = None
    csv: frozenset[str] = frozenset()
    repeated: frozenset[str] = frozenset()
    headers: list[Param] = field(default_factory=list)
    body_required: bool = False
    bodies: dict[str, SchemaValidator] = field(default_factory=dict)
    # status ("200", "2XX", "default") -> what it declares
    responses: dict[str, Declared] = field(default_factory=dict)

    def response_for(self, status: int) -> Declared | None:
        """What the contract declares for this status: exact, then its range (`4XX`), then `default`."""
        return (self.responses.get(str(status)) or self.responses.get(f"{status // 100}XX")
                or self.responses.get("default"))


class VendorContract:
    """The operations of one vendor's contract and the lookup from (method, path) to one of them."""

    def __init__(self, vendor: str, file: Path, data: dict[str, Any]) -> None:
        self.vendor = vendor
        self.file = file
        self.data = data
        self.components: dict[str, Any] = (data.get("components") or {}).get("schemas") or {}
        self.excerpt: dict[str, Any] = data.get("x-excerpt") or {}
        self.operations: list[VendorOperation] = []
        self._static: dict[tuple[str, str], VendorOperation] = {}
        self._templated: list[tuple[str, re.Pattern[str], VendorOperation]] = []
        for path, item in (data.get("paths") or {}).items():
            for method in METHODS:
                if isinstance(item, dict) and isinstance(item.get(method), dict):
                    self._add(self._compile(path, method, item))
        # A literal segment wins over a variable one: /payment_intents/search before /payment_intents/{intent}.
        self._templated.sort(key=lambda t: -t[2].template.count("/") * 100 + t[2].template.count("{"))

    def _where(self, pointer: str) -> str:
        return f"{self.file}#{pointer}"

    def _add(self, op: VendorOperation) -> None:
        self.operations.append(op)
        if "{" not in op.template:
            self._static[(op.method, op.template)] = op
            return
        names: list[str] = []

        def variable(m: re.Match[str]) -> str:
            names.append(m.group(1))
            return f"(?P<p{len(names) - 1}>[^/]+)"

        pattern = re.compile("^" + re.sub(r"\\\{([^{}]+)\\\}", variable, re.escape(op.template)) + "$")
        self._templated.append((op.method, pattern, op))
        missing = [n for n in names if n not in op.path_params]
        if missing:
            raise VendorContractError(self._where(op.pointer), f"path parameter(s) {missing} are not declared")

    def match(self, method: str, path: str) -> tuple[VendorOperation, dict[str, str]] | None:
        """The operation a request is for, with its path parameters (percent-decoded), or None."""
        method = method.lower()
        op = self._static.get((method, path))
        if op is not None:
            return op, {}
        for m, pattern, candidate in self._templated:
            if m == method and (found := pattern.match(path)):
                names = list(_names(candidate.template))
                return candidate, {names[int(k[1:])]: unquote(v) for k, v in found.groupdict().items()}
        return None

    def resolve(self, node: Any) -> Any:
        """A schema, response or parameter with its top-level `$ref` followed (within this document)."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 32:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise VendorContractError(self._where(""), f"only local references are supported: {ref!r}")
            node = self.data
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    raise VendorContractError(self._where(""), f"reference {ref!r} does not resolve")
                node = node[part]
            seen += 1
        return node

    def schema(self, name: str) -> Any:
        return self.components[ref_name("#/components/schemas/" + name)]

    def _validator(self, schema: Any, mode: str, pointer: str) -> SchemaValidator:
        try:
            return SchemaValidator(document(schema, self.components, mode))  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise VendorContractError(self._where(pointer), f"schema does not compile: {exc}") from None

    def _compile(self, path: str, method: str, item: dict[str, Any]) -> VendorOperation:
        raw = item[method]
        pointer = "/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method
        op = VendorOperation(self.vendor, str(raw.get("operationId") or f"{method.upper()} {path}"), method, path,
                             pointer, used_by=tuple(str(n) for n in raw.get("x-gateway-used-by") or ()))
        params: dict[tuple[str, str], dict[str, Any]] = {}
        for source in (item.get("parameters") or [], raw.get("parameters") or []):
            for p in source:
                p = self.resolve(p)
                params[(p["name"], p["in"])] = p
        query_props: dict[str, Any] = {}
        query_required: list[str] = []
        csv: set[str] = set()
        repeated: set[str] = set()
        for (name, where), p in params.items():
            schema = p.get("schema") or {}
            resolved = self.resolve(schema)
            is_array = isinstance(resolved, dict) and resolved.get("type") == "array"
            style = p.get("style", "form" if where == "query" else "simple")
            explode = p.get("explode", style == "form")
            if where == "query":
                query_props[name] = schema
                if p.get("required"):
                    query_required.append(name)
                if is_array and style == "form":
                    (repeated if explode else csv).add(name)
            elif where in ("path", "header"):
                param = Param(name, where, where == "path" or bool(p.get("required")),
                              self._validator(schema, "form", pointer), csv=is_array, repeated=False)
                if where == "path":
                    op.path_params[name] = param
                else:
                    op.headers.append(param)
        op.query = self._validator({"type": "object", "properties": query_props, "required": query_required,
                                    "additionalProperties": False}, "form", pointer + "/parameters")
        op.csv, op.repeated = frozenset(csv), frozenset(repeated)
        body = self.resolve(raw.get("requestBody")) if raw.get("requestBody") else None
        if body:
            op.body_required = bool(body.get("required"))
            for media, content in (body.get("content") or {}).items():
                mode = "form" if media == FORM else "json"
                op.bodies[media] = self._validator(content.get("schema") or {}, mode, pointer + "/requestBody")
        for status, response in (raw.get("responses") or {}).items():
            response = self.resolve(response)
            content = response.get("content") or {}
            media = content.get("application/json") or content.get("*/*") or next(iter(content.values()), None)
            schema = media.get("schema") if isinstance(media, dict) else None
            headers = frozenset(h.lower() for h in (response.get("headers") or {}))
            key = str(status)
            no_drift = self._validator(schema, "drift", f"{pointer}/responses/{key}") if schema else None
            op.responses["default" if key.lower() == "default" else key.upper()] = Declared(schema, no_drift, headers)
        return op


def _names(template: str) -> list[str]:
    return re.findall(r"\{([^{}]+)\}", template)


def load_vendor_contract(vendor: str, file: Path) -> VendorContract:
    """Read and compile one vendor contract; VendorContractError says where it is wrong."""
    data, problems = read_document(file)
    if problems:
        raise VendorContractError(str(file), "; ".join(f"{p.pointer}: {p.reason}" for p in problems))
    if not isinstance(data, dict) or not str(data.get("openapi", "")).startswith("3."):
        raise VendorContractError(str(file), "is not an OpenAPI 3 document")
    return VendorContract(vendor, file, data)
