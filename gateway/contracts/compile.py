"""Compile each contract operation, once, into an `Operation`: everything a request needs, nothing to look up.

After this, nothing on the request path reads the contract again: parameters have their decoders and a validator
per location, bodies and responses a compiled validator per media type, the route its vendor and adapter method,
and the merged `x-gateway` settings (gateway.yaml < contract root < operation) are plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.contracts.validators import SchemaValidator
from gateway.http.admission import PRIORITIES
from gateway.http.media import is_json
from gateway.http.params import DEFAULT_STYLE, ParameterSet, ParamSpec
from gateway.mappings import load_mapping
from gateway.settings import Settings

from .load import Contract, ContractProblem, pointer_join
from .operations import RawOperation, base_path, iter_operations
from .schema import SchemaBundler

FORM = "application/x-www-form-urlencoded"


@dataclass(slots=True, eq=False)
class BodySpec:
    """A request body: required or not, and per declared media type how to parse and validate it."""

    required: bool
    # media type -> (json|form|raw, validator, form field types for string coercion)
    media: dict[str, tuple[str, SchemaValidator | None, dict[str, tuple[str, ...]]]]

    @property
    def declared(self) -> tuple[str, ...]:
        return tuple(self.media)


@dataclass(slots=True, eq=False)
class ResponseSpec:
    """Declared responses: status key ("200", "2XX", "default") -> media type -> validator (None: no schema)."""

    by_status: dict[str, dict[str, SchemaValidator | None]]

    def lookup(self, status: int) -> dict[str, SchemaValidator | None] | None:
        """The declared content for `status`: exact code, then its class (2XX), then default; None if undeclared."""
        found = self.by_status.get(str(status))
        if found is None:
            found = self.by_status.get(f"{status // 100}XX")
        if found is None:
            found = self.by_status.get("default")
        return found


@dataclass(eq=False)
class Operation:
    """One compiled contract operation. Built at start-up; read-only afterwards."""

    api: str
    version: str
    operation_id: str
    method: str
    path: str
    file: str
    pointer: str
    params: ParameterSet
    body: BodySpec | None
    responses: ResponseSpec
    produces: tuple[str, ...]
    vendor: str
    adapter_operation: str
    route_options: dict[str, Any]
    response_validation: str
    extension: dict[str, Any]
    api_extension: dict[str, Any]
    node: dict[str, Any]
    contract: Contract
    policies: tuple[Any, ...] = ()
    completers: tuple[Any, ...] = ()  # the policies with an async on_complete
    emitter: Callable[..., Any] | None = None  # publishes x-gateway.emits events after success (webhooks)
    handler: Callable[..., Any] | None = None
    mapping: Any = None  # a gateway.mappings module, for versions that map onto the adapter's model
    deadline_s: float = 20.0  # the whole vendor side of one request (settings, or x-gateway.timeout_s)
    priority: int = 2  # admission order under overload: 0 critical, 1 high, 2 normal, 3 low (x-gateway.priority)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.api}.{self.version}.{self.operation_id}"


def api_identity(contract: Contract) -> tuple[str, str]:
    """(api name, version) of a contract: from x-gateway, else the file name and info.version's major."""
    ext = contract.data.get("x-gateway") or {}
    api = ext.get("api") or contract.path.stem.split(".")[0].lower()
    version = ext.get("version")
    if not version:
        major = str((contract.data.get("info") or {}).get("version", "1")).lstrip("vV").split(".")[0] or "1"
        version = f"v{major}"
    return api, version


def compile_contracts(contracts: list[Contract], settings: Settings) -> tuple[list[Operation], list[ContractProblem]]:
    """Every operation of every contract. Assumes `lint` found nothing; reports schema compile failures."""
    ops: list[Operation] = []
    problems: list[ContractProblem] = []
    _COMPILED.clear()
    for contract in contracts:
        bundler = SchemaBundler(contract.resolver, contract.openapi_version)
        for raw in iter_operations(contract):
            if isinstance(raw, tuple):
                continue
            try:
                ops.append(_compile(raw, contract, bundler, settings))
            except _CompileProblem as exc:
                problems.append(ContractProblem(contract.name, exc.pointer, exc.reason))
    return ops, problems


class _CompileProblem(Exception):
    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(reason)
        self.pointer, self.reason = pointer, reason


# Identical bundled schemas (a Problem response on every operation, one resource's schema on its five operations)
# are compiled once per compile_contracts call: compiled validators are immutable, so operations share them.
_COMPILED: dict[bytes, SchemaValidator] = {}


def _validator(schema: Any, pointer: str) -> SchemaValidator:
    try:
        key: bytes | None = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a value JSON cannot carry (it fails compiling below, with its reason)
        key = None
    if key is not None and key in _COMPILED:
        return _COMPILED[key]
    try:
        validator = SchemaValidator(schema)
    except Exception as exc:  # jsonschema-rs refuses e.g. invalid regular expressions
        raise _CompileProblem(pointer, f"schema cannot be compiled: {str(exc).splitlines()[0]}") from None
    if key is not None:
        _COMPILED[key] = validator
    return validator


def _compile(raw: RawOperation, contract: Contract, bundler: SchemaBundler, settings: Settings) -> Operation:
    api, version = api_identity(contract)
    api_ext = dict(contract.data.get("x-gateway") or {})
    op_ext = dict(raw.extension or {})
    vendor, _, adapter_op = op_ext["route"].partition(".")
    merged = {**api_ext, **op_ext}
    return Operation(
        api=api, version=version, operation_id=raw.node["operationId"], method=raw.method.upper(),
        path=raw.full_path, file=contract.name, pointer=raw.pointer,
        params=_parameters(raw, bundler), body=_body(raw, contract, bundler),
        responses=(responses := _responses(raw, contract, bundler)),
        produces=tuple(sorted({m for status, media in responses.by_status.items()
                               if status.startswith("2") for m in media})),
        vendor=vendor, adapter_operation=adapter_op,
        route_options={"upstream_path": op_ext.get("upstream_path") or raw.path,
                       "base_path": base_path(contract.data), **(op_ext.get("options") or {})},
        response_validation=merged.get("response_validation") or settings.response_validation,
        extension=merged, api_extension=api_ext, node=raw.node, contract=contract,
        mapping=load_mapping(api_ext["mapping"]) if api_ext.get("mapping") else None,
        deadline_s=float(merged.get("timeout_s") or settings.request.deadline_s),
        priority=PRIORITIES[merged.get("priority") or "normal"],
    )


def _resolved(contract: Contract, node: Any, file: Path, pointer: str) -> tuple[Any, Path]:
    try:
        target, tfile, _ = contract.resolver.deref(node, file, pointer)
    except LookupError as exc:
        raise _CompileProblem(pointer, str(exc)) from None
    return target, tfile


def _types(contract: Contract, schema: Any, file: Path) -> tuple[str, ...]:
    schema, _ = _resolved(contract, schema, file, "")
    if not isinstance(schema, dict):
        return ()
    t = schema.get("type")
    if isinstance(t, str):
        types = [t]
    elif isinstance(t, list):
        types = list(t)
    else:
        types = []
        for key in ("oneOf", "anyOf", "allOf"):
            for branch in schema.get(key) or []:
                types += [x for x in _types(contract, branch, file) if x not in types]
        if not types and "properties" in schema:
            types = ["object"]
        elif not types and "items" in schema:
            types = ["array"]
    if schema.get("nullable") is True and "null" not in types:
        types.append("null")
    # Try the narrowest interpretation of a string first.
    order = {"boolean": 0, "integer": 1, "number": 2, "null": 3, "array": 4, "object": 5, "string": 6}
    return tuple(sorted(types, key=lambda x: order.get(x, 9)))


def _parameters(raw: RawOperation, bundler: SchemaBundler) -> ParameterSet:
    contract = raw.contract
    specs: list[ParamSpec] = []
    per_location: dict[str, dict[str, tuple[Any, Path]]] = {}
    required: dict[str, list[str]] = {}
    for p, file, _ptr in raw.parameters:
        location = p.get("in")
        name = p.get("name")
        if location == "header" and str(name).lower() in ("accept", "content-type", "authorization"):
            continue
        json_content = False
        schema = p.get("schema")
        if schema is None and isinstance(p.get("content"), dict) and p["content"]:
            schema = next(iter(p["content"].values())).get("schema", {})
            json_content = True
        schema = schema if schema is not None else {}
        types = _types(contract, schema, file)
        target, tfile = _resolved(contract, schema, file, "")
        shape = "primitive"
        item_types: tuple[str, ...] = types
        prop_types: dict[str, tuple[str, ...]] = {}
        if "array" in types:
            shape = "array"
            item_types = _types(contract, (target or {}).get("items", {}), tfile) if isinstance(target, dict) else ()
        elif "object" in types and not json_content:
            shape = "object"
            props = (target or {}).get("properties", {}) if isinstance(target, dict) else {}
            prop_types = {k: _types(contract, v, tfile) for k, v in props.items()}
        style = p.get("style") or DEFAULT_STYLE[location]
        explode = p.get("explode", style == "form")
        is_required = bool(p.get("required")) or location == "path"
        specs.append(ParamSpec(name=name, location=location, required=is_required, style=style, explode=explode,
                               shape=shape, types=item_types, property_types=prop_types,
                               json_content=json_content))
        per_location.setdefault(location, {})[name] = (schema, file)
        if is_required:
            required.setdefault(location, []).append(name)
    validators: dict[str, SchemaValidator | None] = {}
    for location, props in per_location.items():
        schema = bundler.bundle_properties(props, required.get(location, []), "request")
        validators[location] = _validator(schema, pointer_join(raw.pointer, "parameters"))
    return ParameterSet(specs, validators)


def _body(raw: RawOperation, contract: Contract, bundler: SchemaBundler) -> BodySpec | None:
    node = raw.node.get("requestBody")
    if node is None:
        return None
    ptr = pointer_join(raw.pointer, "requestBody")
    body, file = _resolved(contract, node, raw.file, ptr)
    media: dict[str, tuple[str, SchemaValidator | None, dict[str, tuple[str, ...]]]] = {}
    for media_type, content in (body.get("content") or {}).items():
        media_type = media_type.split(";")[0].strip().lower()
        kind = "json" if is_json(media_type) else "form" if media_type == FORM else "raw"
        schema = (content or {}).get("schema")
        validator = None
        field_types: dict[str, tuple[str, ...]] = {}
        if schema is not None and kind != "raw":
            validator = _validator(bundler.bundle(schema, file, "request"),
                                   pointer_join(ptr, "content", media_type, "schema"))
        if schema is not None and kind == "form":
            target, tfile = _resolved(contract, schema, file, ptr)
            for name, prop in ((target or {}).get("properties") or {}).items():
                types = _types(contract, prop, tfile)
                if "array" in types:
                    prop_target, pfile = _resolved(contract, prop, tfile, ptr)
                    types = ("array", *_types(contract, (prop_target or {}).get("items", {}), pfile))
                field_types[name] = types
        media[media_type] = (kind, validator, field_types)
    return BodySpec(required=bool(body.get("required")), media=media)


def _responses(raw: RawOperation, contract: Contract, bundler: SchemaBundler) -> ResponseSpec:
    out: dict[str, dict[str, SchemaValidator | None]] = {}
    base = pointer_join(raw.pointer, "responses")
    for status, node in (raw.node.get("responses") or {}).items():
        ptr = pointer_join(base, status)
        resp, file = _resolved(contract, node, raw.file, ptr)
        media: dict[str, SchemaValidator | None] = {}
        for media_type, content in ((resp or {}).get("content") or {}).items():
            schema = (content or {}).get("schema")
            media[media_type.split(";")[0].strip().lower()] = None if schema is None else _validator(
                bundler.bundle(schema, file, "response"), pointer_join(ptr, "content", media_type, "schema"))
        out[str(status).upper()] = media
    return ResponseSpec(out)
