"""Our own rules on top of OpenAPI validity: what would make a contract unservable or ambiguous.

- operationIds are unique within a contract (an operation without one gets `<method>_<path words>`);
- every `{name}` in a path template has a path parameter, and every path parameter appears in the template;
- parameter names are unique across locations (adapters receive them by name);
- no two operations of any contracts can match the same method and URL (`/a/{x}` and `/a/{y}` are one route);
- every operation has an `x-gateway.route`, whose vendor is configured and whose adapter has that operation;
- `x-gateway` blocks hold only known keys with valid values;
- an owned operation (`x-gateway.ownership`) can have its ownership enforced: it needs credentials, its adapter
  operation says where the owner is kept, and a list the vendor cannot filter is marked `gateway-filtered`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ValidationError

from adapters.registry import adapter_class, adapter_for
from gateway.mappings import load_mapping
from gateway.settings import Settings, VendorSettings

from .extension import ApiExtension, OperationExtension, Ownership, PathExtension
from .load import Contract, ContractProblem, pointer_join
from .operations import TEMPLATE_VAR, RawOperation, iter_operations

log = logging.getLogger("gateway.contracts")


def _extension_problems(file: str, pointer: str, model: type[BaseModel], value: Any) -> list[ContractProblem]:
    if value is None:
        return []
    try:
        model.model_validate(value)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            where = pointer_join(pointer, *err["loc"])
            out.append(ContractProblem(file, where, f"x-gateway: {err['msg']}"))
        return out
    return []


def lint(contracts: list[Contract], settings: Settings) -> list[ContractProblem]:
    problems: list[ContractProblem] = []
    routes: dict[tuple[str, str], tuple[str, str]] = {}  # (method, normalized path) -> (file, pointer)
    for contract in contracts:
        try:
            problems += _lint_contract(contract, settings, routes)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            if not contract.valid:
                continue  # a document the OpenAPI schema check refused: its findings say why, ours would repeat it
            # A valid document our rules cannot read is our bug: said plainly, never as an exception text.
            log.exception("lint failed on %s", contract.name)
            problems.append(ContractProblem(contract.name, "", "the gateway could not check this document further "
                                            "(a gateway bug: please report it with the document)"))
    return problems


def _sensitive_problems(file: str, node: Any, pointer: str, path: tuple[Any, ...] = ()) -> list[ContractProblem]:
    """`x-sensitive` (the field is masked in every log line, see observability/logs.py) must be true or false."""
    out: list[ContractProblem] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "x-sensitive" and not isinstance(value, bool):
                where = pointer_join(pointer, *path, key)
                out.append(ContractProblem(file, where, "x-sensitive must be true or false"))
            elif isinstance(value, (dict, list)):
                out += _sensitive_problems(file, value, pointer, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, (dict, list)):
                out += _sensitive_problems(file, value, pointer, (*path, i))
    return out


def _lint_contract(contract: Contract, settings: Settings,
                   routes: dict[tuple[str, str], tuple[str, str]]) -> list[ContractProblem]:
    problems: list[ContractProblem] = []
    file = contract.name
    problems += _extension_problems(file, "/x-gateway", ApiExtension, contract.data.get("x-gateway"))
    mapping = (contract.data.get("x-gateway") or {}).get("mapping")
    if isinstance(mapping, str):
        try:
            load_mapping(mapping)
        except LookupError as exc:
            problems.append(ContractProblem(file, "/x-gateway/mapping", str(exc)))
    problems += _sensitive_problems(file, contract.data, "")
    problems += _path_extension_problems(contract, file)
    seen_ids: dict[str, str] = {}
    for op in iter_operations(contract):
        if isinstance(op, tuple):
            problems.append(ContractProblem(file, op[0], op[1]))
            continue
        problems += _operation_problems(op, file, seen_ids, settings)
        key = (op.method, TEMPLATE_VAR.sub("{}", op.full_path))
        if key in routes:
            other_file, other_ptr = routes[key]
            problems.append(ContractProblem(file, op.pointer, f"ambiguous route: {op.method.upper()} "
                                            f"{op.full_path} also matches {other_file}#{other_ptr}"))
        else:
            routes[key] = (file, op.pointer)
    return problems


def _path_extension_problems(contract: Contract, file: str) -> list[ContractProblem]:
    """`x-gateway` on path items (the default route of their operations) holds only known keys."""
    out: list[ContractProblem] = []
    for path, item in (contract.data.get("paths") or {}).items():
        if isinstance(item, dict) and "x-gateway" in item:
            out += _extension_problems(file, pointer_join("/paths", path, "x-gateway"), PathExtension,
                                       item["x-gateway"])
    return out


def _operation_problems(op: RawOperation, file: str, seen_ids: dict[str, str],
                        settings: Settings) -> list[ContractProblem]:
    out: list[ContractProblem] = []
    op_id = op.operation_id
    if op_id in seen_ids:
        where = pointer_join(op.pointer, "operationId") if op.node.get("operationId") else op.pointer
        out.append(ContractProblem(file, where, f"duplicate operationId {op_id!r} (also at {seen_ids[op_id]})"))
    else:
        seen_ids[op_id] = op.pointer
    declared = {p.get("name"): ptr for p, _, ptr in op.parameters if p.get("in") == "path"}
    in_template = TEMPLATE_VAR.findall(op.path)
    for name in in_template:
        if name not in declared:
            out.append(ContractProblem(file, op.pointer,
                                       f"path template variable {{{name}}} has no matching path parameter"))
    for name, ptr in declared.items():
        if name not in in_template:
            out.append(ContractProblem(file, ptr, f"path parameter {name!r} does not appear in the path template"))
    names: dict[str | None, str | None] = {}  # None: no name / no `in` (a document the schema check refused)
    for p, _, ptr in op.parameters:
        name, location = p.get("name"), p.get("in")
        if location == "header" and str(name).lower() in ("accept", "content-type", "authorization"):
            continue
        if name in names and names[name] != location:
            out.append(ContractProblem(file, ptr, f"parameter {name!r} is declared both in {names[name]} and in "
                                       f"{location}; adapters receive parameters by name"))
        names[name] = location
    route_problems = _route_problems(op, file, settings)
    out += route_problems
    out += _security_problems(op, file)
    if not route_problems:
        out += _ownership_problems(op, file, settings)
    ext = op.extension if isinstance(op.extension, dict) else {}
    if ext.get("async") and "202" not in (op.node.get("responses") or {}):
        out.append(ContractProblem(file, pointer_join(op.pointer, "responses"),
                                   "an asynchronous operation answers 202: declare it (with the operation status)"))
    if ext.get("idempotency") == "required":
        key_headers = [p for p, _, _ in op.parameters if p.get("in") == "header"
                       and str(p.get("name", "")).lower() == "idempotency-key"]
        if not key_headers or not key_headers[0].get("required"):
            out.append(ContractProblem(file, pointer_join(op.pointer, "x-gateway", "idempotency"),
                                       "the key is required: declare the Idempotency-Key header parameter with "
                                       "required: true so that clients see it"))
    return out


def _security_problems(op: RawOperation, file: str) -> list[ContractProblem]:
    """Every scheme a requirement names is declared and every oauth2 scope too; an alternative the gateway cannot
    check is a warning when another one can be served (the operation is served by those), else an error."""
    from gateway.policies.auth import scheme_kind

    if "security" in op.node:
        requirements, where = op.node["security"], pointer_join(op.pointer, "security")
    else:
        requirements, where = op.contract.data.get("security"), "/security"
    schemes = (op.contract.data.get("components") or {}).get("securitySchemes") or {}
    out: list[ContractProblem] = []
    unsupported: list[tuple[str, str, dict[str, Any]]] = []
    served = 0
    for i, requirement in enumerate(requirements or []):
        ok = True
        for name, scopes in (requirement or {}).items():
            ptr = pointer_join(where, i, name)
            scheme = schemes.get(name)
            if not isinstance(scheme, dict):
                out.append(ContractProblem(file, ptr, f"security scheme {name!r} is not declared in "
                                           "components.securitySchemes"))
                ok = False
                continue
            if scheme_kind(scheme) is None:
                unsupported.append((ptr, name, scheme))
                ok = False
                continue
            if scheme.get("type") == "oauth2":
                declared = {s for flow in (scheme.get("flows") or {}).values() for s in ((flow or {}).get("scopes")
                                                                                        or {})}
                for scope in scopes or []:
                    if scope not in declared:
                        out.append(ContractProblem(file, ptr, f"scope {scope!r} is not declared by {name!r}"))
        served += ok
    for ptr, name, scheme in unsupported:
        kind = f"{scheme.get('type')}{' in ' + str(scheme.get('in')) if scheme.get('in') else ''}"
        if served:
            out.append(ContractProblem(file, ptr, f"security scheme {name!r} ({kind}) is not supported: this "
                                       "alternative is not served, the others are", warning=True))
        else:
            out.append(ContractProblem(file, ptr, f"security scheme {name!r} ({kind}) is not supported: use "
                                       "oauth2, openIdConnect, http bearer or basic, or apiKey in a header"))
    return out


def _route_problems(op: RawOperation, file: str, settings: Settings) -> list[ContractProblem]:
    ext_ptr = pointer_join(op.pointer, "x-gateway")
    ext = op.extension
    if not isinstance(ext, dict) or "route" not in ext:
        return [ContractProblem(file, op.pointer, "operation has no route (x-gateway.route: <vendor>.<operation>, "
                                "or one default for all: x-gateway.route at the document root)")]
    problems = _extension_problems(file, ext_ptr, OperationExtension, ext)
    if problems:
        return problems
    vendor, _, name = ext["route"].partition(".")
    route_ptr = op.route_pointer
    vendor_settings = settings.vendors.get(vendor)
    if vendor == "gateway" and vendor_settings is None:
        # The gateway's own operations (the async status resource): built in, no configuration.
        vendor_settings = VendorSettings(adapter="gateway", base_url="http://gateway.internal")
    if vendor_settings is None:
        known = ", ".join(sorted(settings.vendors)) or "none configured"
        return [ContractProblem(file, route_ptr, f"route to unknown vendor {vendor!r} (vendors: {known})")]
    try:
        cls = adapter_for(vendor, vendor_settings, settings.base_dir)
    except LookupError as exc:
        return [ContractProblem(file, route_ptr, str(exc))]
    if name not in cls.operations():
        ops = ", ".join(sorted(cls.operations()))
        return [ContractProblem(file, route_ptr, f"adapter {vendor_settings.adapter!r} has no operation {name!r} "
                                f"(it has: {ops})")]
    return []


def _ownership_problems(op: RawOperation, file: str, settings: Settings) -> list[ContractProblem]:
    """An owned operation whose ownership the gateway could not enforce (gateway/policies/ownership.py)."""
    root = (op.contract.data.get("x-gateway") or {}).get("ownership")
    own = op.extension.get("ownership") if isinstance(op.extension, dict) else None
    if root is None and own is None:
        return []
    merged: dict[str, Any] = {}
    try:
        for raw in (root, own):
            if raw is not None:
                merged.update(Ownership.model_validate(raw).model_dump(exclude_unset=True))
        block = Ownership.model_validate(merged)
    except ValidationError:
        return []  # reported at its pointer by the x-gateway checks
    if block.mode == "none":
        return []
    where = pointer_join(op.pointer, "x-gateway", "ownership") if own is not None else "/x-gateway/ownership"
    vendor, _, name = op.extension["route"].partition(".")
    vendor_settings = settings.vendors.get(vendor)
    adapter = vendor_settings.adapter if vendor_settings is not None else vendor
    try:
        cls = adapter_for(vendor, vendor_settings, settings.base_dir) if vendor_settings is not None else \
            adapter_class(adapter)
    except LookupError:
        return []  # reported at the route
    kind, reader = cls.ownership_kind(name)
    security = op.node.get("security", op.contract.data.get("security"))
    out: list[str] = []
    if not security or any(not requirement for requirement in security):
        out.append("an owned operation needs credentials (a `security` requirement without `{}`): an anonymous "
                   "caller owns nothing")
    if kind is None:
        out.append(f"the {adapter} adapter cannot enforce ownership on {name!r} (it does not say where the owner is "
                   "kept for it); declare `ownership: none` if these objects belong to nobody")
    elif kind == "list-unfiltered" and block.mode != "gateway-filtered":
        out.append(f"the vendor cannot filter {name!r} by owner: mark the operation `ownership: gateway-filtered` "
                   "so that the gateway filters its pages")
    elif kind == "change" and (reader is None or cls.ownership_kind(reader)[0] != "read"):
        out.append(f"the {adapter} adapter names no read operation that tells who owns the object of {name!r}")
    elif block.mode == "gateway-filtered" and kind not in ("list", "list-unfiltered"):
        out.append(f"gateway-filtered is for lists; {name!r} is not one")
    return [ContractProblem(file, where, f"ownership cannot be enforced: {reason}") for reason in out]
