"""Compile each contract operation, once, into an `Operation`: everything a request needs, nothing to look up.

After this, nothing on the request path reads the contract again: parameters have their decoders and a validator
per location, bodies and responses a compiled validator per media type, the route its vendor and adapter method,
and the merged `x-gateway` settings (gateway.yaml < contract root < operation) are plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.contracts.validators import SchemaValidator
from gateway.http.admission import PRIORITIES
from gateway.http.forms import FormDecoder, MultipartDecoder
from gateway.http.media import is_json
from gateway.http.params import DEFAULT_STYLE, ParameterSet, ParamSpec
from gateway.mappings import load_mapping
from gateway.settings import Settings

from .extension import ApiExtension, OperationExtension
from .load import Contract, ContractProblem, display, pointer_join
from .operations import RawOperation, base_path, iter_operations
from .schema import Mode, SchemaProblem, SchemaSet
from .shapes import items_of, properties_of, types_of

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


@dataclass(slots=True, eq=False)
class BodySpec:
    """A request body: required or not, and per declared media type how to parse and validate it."""

    required: bool
    # media type -> (json|form|multipart|raw, validator, the form or multipart decoder)
    media: dict[str, tuple[str, SchemaValidator | None, Any]]

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


@dataclass(frozen=True, eq=False)
class Operation:
    """One compiled contract operation, frozen. Compiled from the contract, then bound once at start-up
    (gateway/runtime.py) to its policies and its adapter's handler by `bind()`, which returns a new object."""

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
    # x-gateway validated once (gateway/contracts/extension.py): the typed form the policies read.
    config: OperationExtension
    api_config: ApiExtension
    node: dict[str, Any]
    contract: Contract
    policies: tuple[Any, ...] = ()  # gateway/policies/, in the order they run (gateway/pipeline.py)
    completers: tuple[Any, ...] = ()  # the policies with an async on_complete
    emitter: Callable[..., Any] | None = None  # publishes x-gateway.emits events after success (webhooks)
    handler: Callable[..., Any] | None = None  # the adapter's method for adapter_operation (Adapter.handler)
    # x-gateway.ownership: stamps, checks or filters by owner around the adapter call (gateway/policies/ownership.py)
    ownership: Any = None
    mapping: Any = None  # a gateway.mappings module, for versions that map onto the adapter's model
    deadline_s: float = 20.0  # the whole vendor side of one request (settings, or x-gateway.timeout_s)
    priority: int = 2  # admission order under overload: 0 critical, 1 high, 2 normal, 3 low (x-gateway.priority)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.api}.{self.version}.{self.operation_id}"

    @property
    def emits(self) -> str | None:
        """The event type a success of this operation emits (x-gateway.emits), if any."""
        return (self.node.get("x-gateway") or {}).get("emits") or None

    def bind(self, **bound: Any) -> Operation:
        """This operation with its policies, handler or emitter set: a new frozen object."""
        return replace(self, **bound)


def api_identity(contract: Contract) -> tuple[str, str]:
    """(api name, version) of a contract: from x-gateway, else the file name and info.version's major."""
    found = contract.__dict__.get("_identity")
    if found is None:
        found = contract.__dict__["_identity"] = _identity(contract)
    return found


def _identity(contract: Contract) -> tuple[str, str]:
    ext = contract.data.get("x-gateway") or {}
    api = ext.get("api") or contract.path.stem.split(".")[0].lower()
    return api, ext.get("version") or derived_version(contract.data)


def derived_version(data: dict[str, Any]) -> str:
    """`v` + the major of info.version (`2.3.1` -> v2); a date-versioned API (`2020-08-27`) or any other scheme gets
    the `/vN` its paths or server share, else v1: the gateway's versions are path versions (gateway/versions.py)."""
    major = str((data.get("info") or {}).get("version", "1")).strip().lstrip("vV").split(".")[0]
    if major.isdigit() and len(major) <= 3:
        return f"v{int(major)}"
    prefixes = {str(path).split("/")[1] for path in (data.get("paths") or {}) if str(path).count("/") >= 1}
    server = base_path(data).strip("/").split("/")[-1]
    for candidate in (server, *prefixes):
        if (len(candidate) >= 2 and candidate[0] == "v" and candidate[1:].isdigit() and len(candidate) <= 4
                and (candidate == server or len(prefixes) == 1)):
            return candidate
    return "v1"


def compile_contracts(contracts: list[Contract], settings: Settings, prepared: dict[str, Any] | None = None,
                      exported: dict[str, Any] | None = None) -> tuple[list[Operation], list[ContractProblem]]:
    """Every operation of every contract. Assumes `lint` found nothing; reports schema compile failures.

    Per contract: every schema is registered once in a SchemaSet (shared by all operations that use it), the set is
    compiled once, and the operations take their validators from it. `prepared` holds converted schemas from the
    compile cache (by contract path); `exported`, when given, receives this run's for the cache.
    """
    ops: list[Operation] = []
    problems: list[ContractProblem] = []
    for contract in contracts:
        schemas = SchemaSet(contract.resolver, contract.openapi_version)
        key = str(contract.resolver.absolute(contract.path))
        if prepared and key in prepared:
            schemas.restore(prepared[key])
        plans: list[tuple[RawOperation, _Plan]] = []
        found: list[ContractProblem] = []
        for raw in iter_operations(contract):
            if isinstance(raw, tuple):
                continue
            try:
                plans.append((raw, _plan(raw, contract, schemas)))
            except _CompileProblem as exc:
                found.append(ContractProblem(contract.name, exc.pointer, exc.reason))
            except SchemaProblem as exc:
                found.append(ContractProblem(display(exc.file), exc.pointer, exc.reason))
        found += [ContractProblem(display(p.file), p.pointer, p.reason) for p in schemas.compile()]
        problems += found
        if found:
            continue
        if exported is not None:
            exported[key] = schemas.export()
        validators = _Validators(schemas)
        ops += [_compile(raw, contract, plan, validators, settings) for raw, plan in plans]
    return ops, problems


class _CompileProblem(Exception):
    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(reason)
        self.pointer, self.reason = pointer, reason


@dataclass
class _Plan:
    """An operation's schemas by `$defs` name, before the contract's SchemaSet is compiled."""

    specs: list[ParamSpec]
    params: dict[str, str]  # location -> name of the object schema of that location's parameters
    body: tuple[bool, dict[str, tuple[str, str | None, Any]]] | None  # required, media -> (kind, name, decoder)
    responses: dict[str, dict[str, str | None]]  # status -> media -> name


# A schema that reaches at most this many others through `$ref` also gets a validator of its own (compiling what it
# reaches again, which is cheap when that is little): validating then costs exactly what it did before documents were
# compiled whole, ~0.1 µs less per call than the lookup by name (bench/micro.py). Densely linked documents, where a
# schema reaches hundreds, use the document's one validator: compiled once (docs/decisions/compile-once-and-cache.md).
DIRECT_REACH = 24


class _Validators:
    """One SchemaValidator per compiled schema and direction, shared by every operation that uses it."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self.made: dict[tuple[str, Mode], SchemaValidator] = {}
        self.refs: dict[tuple[str, Mode], set[str]] = {}  # each entry walked once: its own references

    def _reach(self, name: str, mode: Mode, limit: int) -> set[str] | None:
        """The entries `name` reaches through `$ref`; None past `limit` (it stops counting there)."""
        defs = self.schemas.defs[mode]
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            refs = self.refs.get((current, mode))
            if refs is None:
                refs = self.refs[(current, mode)] = _direct_refs(defs.get(current))
            for ref in refs - seen:
                seen.add(ref)
                if len(seen) > limit:
                    return None
                stack.append(ref)
        return seen

    def get(self, name: str | None, mode: Mode) -> SchemaValidator | None:
        if name is None:
            return None
        found = self.made.get((name, mode))
        if found is None:
            found = self.made[(name, mode)] = self._make(name, mode)
        return found

    def _make(self, name: str, mode: Mode) -> SchemaValidator:
        defs = self.schemas.defs[mode]
        schema = defs[name]
        reached = self._reach(name, mode, DIRECT_REACH) if isinstance(schema, dict) and "$defs" not in schema else None
        if reached is not None:
            try:
                return SchemaValidator({**schema, "$defs": {n: defs[n] for n in reached}})
            except Exception:  # noqa: BLE001 - the document compiled as a whole: fall back to its validator
                pass
        return SchemaValidator.entry(self.schemas.validator(name, mode), name)


def _direct_refs(schema: Any) -> set[str]:
    """The `$defs` names a schema refers to itself (not through other entries)."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                found.add(ref[len("#/$defs/"):])
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return found


def _compile(raw: RawOperation, contract: Contract, plan: _Plan, validators: _Validators,
             settings: Settings) -> Operation:
    api, version = api_identity(contract)
    api_ext = dict(contract.data.get("x-gateway") or {})
    op_ext = dict(raw.extension or {})
    vendor, _, adapter_op = op_ext["route"].partition(".")
    merged = {**api_ext, **op_ext}
    params = ParameterSet(plan.specs, {loc: validators.get(name, "request") for loc, name in plan.params.items()})
    body = None
    if plan.body is not None:
        required, media = plan.body
        body = BodySpec(required=required, media={m: (kind, validators.get(name, "request"), decoder)
                                                  for m, (kind, name, decoder) in media.items()})
    responses = ResponseSpec({status: {m: validators.get(name, "response") for m, name in media.items()}
                              for status, media in plan.responses.items()})
    return Operation(
        api=api, version=version, operation_id=raw.operation_id, method=raw.method.upper(),
        path=raw.full_path, file=contract.name, pointer=raw.pointer,
        params=params, body=body, responses=responses,
        produces=tuple(sorted({m for status, media in responses.by_status.items()
                               if status.startswith("2") for m in media})),
        vendor=vendor, adapter_operation=adapter_op,
        route_options={"upstream_path": op_ext.get("upstream_path") or raw.path,
                       "base_path": base_path(contract.data), **(op_ext.get("options") or {})},
        response_validation=merged.get("response_validation") or settings.response_validation,
        extension=merged, api_extension=api_ext, node=raw.node, contract=contract,
        config=OperationExtension.model_validate(op_ext), api_config=_api_config(contract),
        mapping=load_mapping(api_ext["mapping"]) if api_ext.get("mapping") else None,
        deadline_s=float(merged.get("timeout_s") or settings.request.deadline_s),
        priority=PRIORITIES[merged.get("priority") or "normal"],
    )


def _api_config(contract: Contract) -> ApiExtension:
    """The document's root x-gateway, validated once per document (every operation shares it)."""
    found = contract.__dict__.get("_api_config")
    if found is None:
        found = contract.__dict__["_api_config"] = ApiExtension.model_validate(contract.data.get("x-gateway") or {})
    return found


def _resolved(contract: Contract, node: Any, file: Path, pointer: str) -> tuple[Any, Path, str]:
    try:
        return contract.resolver.deref(node, file, pointer)
    except LookupError as exc:
        raise _CompileProblem(pointer, str(exc)) from None


def _plan(raw: RawOperation, contract: Contract, schemas: SchemaSet) -> _Plan:
    specs, params = _parameters(raw, schemas)
    return _Plan(specs, params, _body(raw, contract, schemas), _responses(raw, contract, schemas))


def _parameters(raw: RawOperation, schemas: SchemaSet) -> tuple[list[ParamSpec], dict[str, str]]:
    specs: list[ParamSpec] = []
    per_location: dict[str, dict[str, tuple[Any, Path, str]]] = {}
    required: dict[str, list[str]] = {}
    brackets = (raw.contract.data.get("x-gateway") or {}).get("bracketed_arrays", True) is not False
    defs = schemas.defs["request"]
    for p, file, ptr in raw.parameters:
        location: str = p["in"]  # both required by the OpenAPI schema, checked before anything is compiled
        name: str = p["name"]
        if location == "header" and str(name).lower() in ("accept", "content-type", "authorization"):
            continue
        json_content = False
        schema = p.get("schema")
        schema_ptr = pointer_join(ptr, "schema")
        if schema is None and isinstance(p.get("content"), dict) and p["content"]:
            media, content = next(iter(p["content"].items()))
            schema = (content or {}).get("schema", {})
            schema_ptr = pointer_join(ptr, "content", media, "schema")
            json_content = True
        schema = schema if schema is not None else {}
        converted = {"$ref": "#/$defs/" + schemas.name(schema, file, schema_ptr, "request")}
        types = types_of(converted, defs)
        shape = "primitive"
        item_types: tuple[str, ...] = types
        prop_types: dict[str, tuple[str, ...]] = {}
        scalar_types: tuple[str, ...] = ()
        style = p.get("style") or DEFAULT_STYLE[location]
        if "array" in types:
            shape = "array"
            item_types = types_of(items_of(converted, defs), defs)
        elif "object" in types and not json_content:
            shape = "object"
            props, _ = properties_of(converted, defs)
            prop_types = {k: types_of(v, defs) for k, v in props.items()}
            scalar_types = tuple(t for t in types if t not in ("object", "array"))
        explode = p.get("explode", style == "form")
        is_required = bool(p.get("required")) or location == "path"
        specs.append(ParamSpec(name=name, location=location, required=is_required, style=style, explode=explode,
                               shape=shape, types=item_types, property_types=prop_types,
                               json_content=json_content, scalar_types=scalar_types,
                               brackets=brackets and shape == "array" and location == "query"))
        per_location.setdefault(location, {})[name] = (schema, file, schema_ptr)
        if is_required:
            required.setdefault(location, []).append(name)
    names = {location: schemas.name_object(props, required.get(location, []), raw.file,
                                           pointer_join(raw.pointer, "parameters", location), "request")
             for location, props in per_location.items()}
    return specs, names


def _body(raw: RawOperation, contract: Contract, schemas: SchemaSet) -> tuple[bool, dict[str, Any]] | None:
    node = raw.node.get("requestBody")
    if node is None:
        return None
    body, file, ptr = _resolved(contract, node, raw.file, pointer_join(raw.pointer, "requestBody"))
    if not isinstance(body, dict):
        raise _CompileProblem(ptr, "requestBody must be an object")
    brackets = (contract.data.get("x-gateway") or {}).get("bracketed_arrays", True) is not False
    media: dict[str, tuple[str, str | None, Any]] = {}
    for declared, content in (body.get("content") or {}).items():
        media_type = declared.split(";")[0].strip().lower()
        kind = ("json" if is_json(media_type) else "form" if media_type == FORM
                else "multipart" if media_type == MULTIPART else "raw")
        schema = (content or {}).get("schema")
        name = None
        decoder: Any = None
        if schema is not None and kind != "raw":
            name = schemas.name(schema, file, pointer_join(ptr, "content", declared, "schema"), "request")
            encoding = (content or {}).get("encoding") or {}
            if kind == "form":
                decoder = FormDecoder(name, schemas.defs["request"], encoding, brackets)
            elif kind == "multipart":
                decoder = MultipartDecoder(name, schemas.defs["request"], encoding)
        elif kind == "multipart":
            decoder = MultipartDecoder(None, schemas.defs["request"], {})
        media[media_type] = (kind, name, decoder)
    return bool(body.get("required")), media


def _responses(raw: RawOperation, contract: Contract, schemas: SchemaSet) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    base = pointer_join(raw.pointer, "responses")
    for status, node in (raw.node.get("responses") or {}).items():
        resp, file, ptr = _resolved(contract, node, raw.file, pointer_join(base, status))
        media: dict[str, str | None] = {}
        for media_type, content in ((resp or {}).get("content") or {}).items():
            schema = (content or {}).get("schema")
            media[media_type.split(";")[0].strip().lower()] = None if schema is None else schemas.name(
                schema, file, pointer_join(ptr, "content", media_type, "schema"), "response")
        out[str(status).upper()] = media
    return out
