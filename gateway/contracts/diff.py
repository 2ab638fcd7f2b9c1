"""What changed between two versions of a contract, and whether it breaks the people who call it.

Compares operations by method and path, then parameters, bodies, responses and security, recursing into schemas.
The direction decides what breaks: in what clients *send* (parameters, request bodies), narrowing breaks
(a new required field, a removed enum value, a lower maximum); in what clients *receive* (responses), widening
breaks (a new enum value, a field that may now be missing or null, a higher maximum). Every change carries a JSON
pointer into the document where it can be seen: the new one, or the old one for things that were removed.

Schemas are compared once per pair: each side's schemas are converted once (contracts/schema.py), and a pair of
shared schemas (`Customer` in both versions, in one direction) is walked once, however many operations and paths
lead to it; its changes are reported at the schema's own pointer (`/components/schemas/Customer/...`). Pairs are
queued rather than recursed into, so cycles and long reference chains cost nothing extra
(docs/decisions/diff-engine.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .compile import api_identity
from .load import Contract, display, load_contracts, pointer_join
from .operations import TEMPLATE_VAR, RawOperation, base_path, iter_operations
from .schema import SchemaProblem, SchemaSet

Direction = str  # "request" | "response"


@dataclass(frozen=True)
class Change:
    """One difference: its kind (a stable slug), whether it breaks callers, where, and what happened."""

    kind: str
    breaking: bool
    file: str
    pointer: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        flag = "BREAKING" if self.breaking else "ok      "
        return f"{flag} {self.kind:<34} {self.file}#{self.pointer}: {self.message}"


_NARROW_MAX = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
_NARROW_MIN = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")


class _Differ:
    def __init__(self, old: Contract, new: Contract) -> None:
        self.old, self.new = old, new
        self.old_schemas = SchemaSet(old.resolver, old.openapi_version)
        self.new_schemas = SchemaSet(new.resolver, new.openapi_version)
        self.changes: list[Change] = []
        self.seen: set[tuple[str, str, Direction]] = set()  # schema pairs already compared, per direction
        self.queue: list[tuple[str, str, Direction]] = []
        self.file: str | None = None  # while walking a shared schema: the file it is written in
        self.context = ""  # the operation or webhook being compared (named in changes inside shared schemas)
        self.via: dict[tuple[str, str, Direction], str] = {}

    # -- reporting -----------------------------------------------------------------------------------------------

    def add(self, kind: str, breaking: bool, pointer: str, message: str, *, in_old: bool = False) -> None:
        file = self.old.name if in_old else self.file or self.new.name
        if self.file is not None and self.context:
            message += f" (used by {self.context})"
        self.changes.append(Change(kind, breaking, file, pointer, message))

    # -- documents and operations --------------------------------------------------------------------------------

    def run(self) -> list[Change]:
        if base_path(self.old.data) != base_path(self.new.data):
            self.add("server-base-path-changed", True, "/servers",
                     f"base path moved from {base_path(self.old.data)!r} to {base_path(self.new.data)!r}")
        old_ops = _operations(self.old)
        new_ops = _operations(self.new)
        for key, op in old_ops.items():
            if key not in new_ops:
                self.add("operation-removed", True, op.pointer, f"{op.method.upper()} {op.path} was removed",
                         in_old=True)
        for key, op in new_ops.items():
            if key not in old_ops:
                self.add("operation-added", False, op.pointer, f"{op.method.upper()} {op.path} was added")
            else:
                self.operation(old_ops[key], op)
        self.webhooks()
        self.security_schemes()
        return _merged(self.changes)

    def webhooks(self) -> None:
        """Webhook payloads are what subscribers receive: compared like responses (widening breaks them)."""
        old = self.old.data.get("webhooks") or {}
        new = self.new.data.get("webhooks") or {}
        for name in old:
            if name not in new:
                self.add("webhook-removed", True, pointer_join("/webhooks", name), f"webhook {name!r} was removed",
                         in_old=True)
        for name, item in new.items():
            ptr = pointer_join("/webhooks", name)
            if name not in old:
                self.add("webhook-added", False, ptr, f"webhook {name!r} was added")
                continue
            self.context = f"webhook {name}"
            for method, op in (item or {}).items():
                old_op = (old[name] or {}).get(method)
                if not isinstance(op, dict) or not isinstance(old_op, dict):
                    continue
                o = self._deref(self.old, old_op.get("requestBody"), self.old.path)
                n = self._deref(self.new, op.get("requestBody"), self.new.path)
                if o and n:
                    self.content((o[0] or {}).get("content") or {}, o[1], (n[0] or {}).get("content") or {}, n[1],
                                 pointer_join(ptr, method, "requestBody"), "response",
                                 pointer_join(ptr, method, "requestBody"))

    def operation(self, old: RawOperation, new: RawOperation) -> None:
        ptr = new.pointer
        self.context = f"{new.method.upper()} {new.path}"
        if old.node.get("operationId") != new.node.get("operationId"):
            self.add("operation-id-changed", True, pointer_join(ptr, "operationId"),
                     f"operationId {old.node.get('operationId')!r} became {new.node.get('operationId')!r} "
                     "(generated clients call it by name)")
        if new.node.get("deprecated") and not old.node.get("deprecated"):
            self.add("operation-deprecated", False, pointer_join(ptr, "deprecated"), "operation is now deprecated")
        self.parameters(old, new)
        self.request_body(old, new)
        self.responses(old, new)
        self.security(old, new)

    def parameters(self, old: RawOperation, new: RawOperation) -> None:
        old_params = {(p["name"].lower() if p.get("in") == "header" else p["name"]): (p, f, ptr)
                      for p, f, ptr in old.parameters}
        new_params = {(p["name"].lower() if p.get("in") == "header" else p["name"]): (p, f, ptr)
                      for p, f, ptr in new.parameters}
        for name, (p, _, ptr) in old_params.items():
            if name not in new_params:
                self.add("parameter-removed", True, ptr, f"{p.get('in')} parameter {p['name']!r} was removed",
                         in_old=True)
        for name, (p, f, ptr) in new_params.items():
            if name not in old_params:
                required = bool(p.get("required")) or p.get("in") == "path"
                self.add("required-parameter-added" if required else "optional-parameter-added", required, ptr,
                         f"{'required' if required else 'optional'} {p.get('in')} parameter {p['name']!r} was added")
                continue
            op_, of, _ = old_params[name]
            if op_.get("in") != p.get("in"):
                self.add("parameter-moved", True, pointer_join(ptr, "in"),
                         f"parameter {p['name']!r} moved from {op_.get('in')} to {p.get('in')}")
                continue
            if not op_.get("required") and p.get("required"):
                self.add("parameter-made-required", True, pointer_join(ptr, "required"),
                         f"{p.get('in')} parameter {p['name']!r} is now required")
            elif op_.get("required") and not p.get("required") and p.get("in") != "path":
                self.add("parameter-made-optional", False, pointer_join(ptr, "required"),
                         f"{p.get('in')} parameter {p['name']!r} is now optional")
            for key in ("style", "explode"):
                if op_.get(key) != p.get(key):
                    self.add("parameter-serialization-changed", True, pointer_join(ptr, key),
                             f"parameter {p['name']!r} {key} changed from {op_.get(key)!r} to {p.get(key)!r}")
            self.schema_pair(op_.get("schema", {}), of, p.get("schema", {}), f, pointer_join(ptr, "schema"),
                             "request")

    def request_body(self, old: RawOperation, new: RawOperation) -> None:
        ptr = pointer_join(new.pointer, "requestBody")
        ob = self._deref(self.old, old.node.get("requestBody"), old.file)
        nb = self._deref(self.new, new.node.get("requestBody"), new.file)
        if ob is None:
            if nb is not None:
                required = bool(nb[0].get("required"))
                self.add("request-body-added", required, ptr,
                         f"a {'required' if required else 'optional'} request body was added")
            return
        if nb is None:
            self.add("request-body-removed", True, pointer_join(old.pointer, "requestBody"),
                     "the request body was removed", in_old=True)
            return
        (obody, ofile), (nbody, nfile) = ob, nb
        if not obody.get("required") and nbody.get("required"):
            self.add("request-body-made-required", True, pointer_join(ptr, "required"), "the body is now required")
        self.content(obody.get("content") or {}, ofile, nbody.get("content") or {}, nfile, ptr, "request",
                     pointer_join(old.pointer, "requestBody"))

    def responses(self, old: RawOperation, new: RawOperation) -> None:
        base = pointer_join(new.pointer, "responses")
        old_r = old.node.get("responses") or {}
        new_r = new.node.get("responses") or {}
        for status in old_r:
            if status not in new_r:
                self.add("response-status-removed", True, pointer_join(old.pointer, "responses", status),
                         f"response {status} was removed", in_old=True)
        for status, node in new_r.items():
            if status not in old_r:
                self.add("response-status-added", False, pointer_join(base, status), f"response {status} was added")
                continue
            o = self._deref(self.old, old_r[status], old.file)
            n = self._deref(self.new, node, new.file)
            if o and n:
                self.content((o[0] or {}).get("content") or {}, o[1], (n[0] or {}).get("content") or {}, n[1],
                             pointer_join(base, status), "response", pointer_join(old.pointer, "responses", status))

    def content(self, old: dict[str, Any], ofile: Path, new: dict[str, Any], nfile: Path, ptr: str,
                direction: Direction, old_ptr: str) -> None:
        for media in old:
            if media not in new:
                self.add(f"{direction}-media-type-removed", True, pointer_join(old_ptr, "content", media),
                         f"{direction} media type {media} was removed", in_old=True)
        for media, node in new.items():
            if media not in old:
                self.add(f"{direction}-media-type-added", False, pointer_join(ptr, "content", media),
                         f"{direction} media type {media} was added")
                continue
            self.schema_pair((old[media] or {}).get("schema", {}), ofile, (node or {}).get("schema", {}), nfile,
                             pointer_join(ptr, "content", media, "schema"), direction)

    def security(self, old: RawOperation, new: RawOperation) -> None:
        o = _requirements(old.node.get("security", self.old.data.get("security")))
        n = _requirements(new.node.get("security", self.new.data.get("security")))
        ptr = pointer_join(new.pointer, "security")
        if o == n:
            return
        if not n and o:
            self.add("security-removed", False, ptr, "the operation is now public")
            return
        if not o:
            self.add("security-added", True, ptr, f"the operation now requires authentication: "
                     f"{'; '.join(_fmt(req) for req in n)}")
            return
        for alt in o:
            # An old way to authenticate still works if some new alternative asks no more than it did.
            if not any(all(scheme in alt and set(scopes) <= set(alt[scheme]) for scheme, scopes in req.items())
                       for req in n):
                needed = "; ".join(" + ".join(f"{s}[{' '.join(sorted(sc))}]" for s, sc in req.items()) for req in n)
                self.add("security-requirement-narrowed", True, ptr,
                         f"callers authenticated as {_fmt(alt)} are no longer enough; now: {needed or 'none'}")
        for alt in n:
            if alt not in o:
                self.add("security-alternative-added", False, ptr, f"callers may also use {_fmt(alt)}")

    def security_schemes(self) -> None:
        old = (self.old.data.get("components") or {}).get("securitySchemes") or {}
        new = (self.new.data.get("components") or {}).get("securitySchemes") or {}
        for name in old:
            if name not in new:
                self.add("security-scheme-removed", True, pointer_join("/components/securitySchemes", name),
                         f"security scheme {name!r} was removed", in_old=True)

    # -- schemas ---------------------------------------------------------------------------------------------------

    def _deref(self, contract: Contract, node: Any, file: Path) -> tuple[Any, Path] | None:
        if node is None:
            return None
        try:
            target, tfile, _ = contract.resolver.deref(node, file, "")
        except LookupError:
            return None
        return target, tfile

    def schema_pair(self, old: Any, ofile: Path, new: Any, nfile: Path, ptr: str, direction: Direction) -> None:
        mode = "request" if direction == "request" else "response"
        try:
            o = self.old_schemas.name(old, ofile, ptr, mode)  # type: ignore[arg-type]
            n = self.new_schemas.name(new, nfile, ptr, mode)  # type: ignore[arg-type]
        except SchemaProblem as exc:
            self.add("schema-unreadable", False, exc.pointer, f"schema could not be compared: {exc.reason}")
            return
        self.pair(o, n, direction)
        while self.queue:
            self._walk_pair(*self.queue.pop())

    def pair(self, old_name: str, new_name: str, direction: Direction) -> None:
        key = (old_name, new_name, direction)
        if key not in self.seen:
            self.seen.add(key)
            self.queue.append(key)
            self.via[key] = self.context

    def _walk_pair(self, old_name: str, new_name: str, direction: Direction) -> None:
        mode = "request" if direction == "request" else "response"
        origin = self.new_schemas.origin[new_name]
        self.file = display(origin.file)
        outer, self.context = self.context, self.via.get((old_name, new_name, direction), self.context)
        try:
            walk = _SchemaWalk(self, self.old_schemas.defs[mode], self.new_schemas.defs[mode], direction)  # type: ignore[index]
            walk.walk(self.old_schemas.defs[mode][old_name], self.new_schemas.defs[mode][new_name],  # type: ignore[index]
                      origin.pointer)
        finally:
            self.file, self.context = None, outer


class _SchemaWalk:
    """Comparison of two converted JSON Schemas; a `$ref` on both sides queues the pair (compared once)."""

    def __init__(self, differ: _Differ, old_defs: dict[str, Any], new_defs: dict[str, Any],
                 direction: Direction) -> None:
        self.d = differ
        self.old_defs = old_defs
        self.new_defs = new_defs
        self.direction = direction

    @staticmethod
    def resolve(schema: Any, defs: dict[str, Any]) -> Any:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 50:
            name = schema["$ref"].rsplit("/", 1)[-1]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**defs.get(name, {}), **rest} if isinstance(defs.get(name), dict) else defs.get(name, {})
            seen += 1
        return schema

    def narrowed(self, kind: str, ptr: str, message: str) -> None:
        # Narrowing breaks what clients send; widening breaks what they receive.
        self.d.add(kind, self.direction == "request", ptr, message)

    def widened(self, kind: str, ptr: str, message: str) -> None:
        self.d.add(kind, self.direction == "response", ptr, message)

    def walk(self, old: Any, new: Any, ptr: str, depth: int = 0) -> None:
        if (isinstance(old, dict) and isinstance(new, dict) and len(old) == 1 and len(new) == 1
                and isinstance(old.get("$ref"), str) and isinstance(new.get("$ref"), str)):
            self.d.pair(old["$ref"].rsplit("/", 1)[-1], new["$ref"].rsplit("/", 1)[-1], self.direction)
            return
        if depth > 64:
            return
        old = self.resolve(old, self.old_defs)
        new = self.resolve(new, self.new_defs)
        if not isinstance(old, dict) or not isinstance(new, dict):
            if old != new:
                self.d.add("schema-changed", True, ptr, "the schema changed in a way that cannot be compared")
            return
        o_types, n_types = self._types(old), self._types(new)
        if o_types and n_types and not (o_types & n_types):
            # A different kind of value altogether: one change, not a cascade of keyword differences.
            self.d.add("schema-type-changed", True, pointer_join(ptr, "type"),
                       f"type changed from {sorted(o_types)} to {sorted(n_types)}")
            return
        self.types(old, new, ptr)
        self.values(old, new, ptr)
        self.bounds(old, new, ptr)
        self.objects(old, new, ptr, depth)
        if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
            self.walk(old["items"], new["items"], pointer_join(ptr, "items"), depth + 1)
        for comb in ("allOf", "oneOf", "anyOf"):
            o, n = old.get(comb) or [], new.get(comb) or []
            if len(o) == len(n):
                for i, (a, b) in enumerate(zip(o, n, strict=True)):
                    self.walk(a, b, pointer_join(ptr, comb, i), depth + 1)
            else:
                self.d.add(f"schema-{comb}-changed", True, pointer_join(ptr, comb),
                           f"{comb} went from {len(o)} to {len(n)} alternatives")

    @staticmethod
    def _types(schema: dict[str, Any]) -> set[str] | None:
        t = schema.get("type")
        if t is None:
            return None
        types = {t} if isinstance(t, str) else set(t)
        if "number" in types:
            types.add("integer")
        return types

    def types(self, old: dict[str, Any], new: dict[str, Any], ptr: str) -> None:
        o, n = self._types(old), self._types(new)
        if o == n:
            return
        if n is not None and (o is None or o - n):
            lost = sorted((o or {"any"}) - (n or set()))
            if lost == ["null"]:
                self.narrowed("schema-made-not-nullable", pointer_join(ptr, "type"), "null is no longer allowed")
            else:
                self.narrowed("schema-type-narrowed", pointer_join(ptr, "type"), f"type no longer allows {lost}")
        if o is not None and (n is None or n - o):
            gained = sorted((n or {"any"}) - o)
            if gained == ["null"]:
                self.widened("schema-made-nullable", pointer_join(ptr, "type"), "may now be null")
            else:
                self.widened("schema-type-widened", pointer_join(ptr, "type"), f"type now also allows {gained}")

    def values(self, old: dict[str, Any], new: dict[str, Any], ptr: str) -> None:
        o, n = old.get("enum"), new.get("enum")
        if o is not None or n is not None:
            if n is not None and o is None:
                self.narrowed("enum-added", pointer_join(ptr, "enum"), "values are now restricted to an enum")
            elif o is not None and n is None:
                self.widened("enum-removed", pointer_join(ptr, "enum"), "values are no longer restricted")
            elif o is not None and n is not None:
                removed = [v for v in o if v not in n]
                added = [v for v in n if v not in o]
                if removed:
                    self.narrowed("enum-value-removed", pointer_join(ptr, "enum"), f"values {removed} removed")
                if added:
                    self.widened("enum-value-added", pointer_join(ptr, "enum"), f"values {added} added")
        if old.get("const") != new.get("const"):
            self.narrowed("const-changed", pointer_join(ptr, "const"),
                          f"const changed from {old.get('const')!r} to {new.get('const')!r}")
        for key in ("format", "pattern", "multipleOf"):
            if old.get(key) == new.get(key):
                continue
            if new.get(key) is None:
                self.widened(f"{key}-removed", pointer_join(ptr, key), f"{key} {old.get(key)!r} no longer applies")
            else:
                self.narrowed(f"{key}-changed", pointer_join(ptr, key),
                              f"{key} is now {new.get(key)!r} (was {old.get(key)!r})")

    def bounds(self, old: dict[str, Any], new: dict[str, Any], ptr: str) -> None:
        for key in _NARROW_MAX + _NARROW_MIN:
            o, n = old.get(key), new.get(key)
            if o == n or isinstance(o, bool) or isinstance(n, bool):
                continue
            lower_is_narrower = key in _NARROW_MAX
            if n is not None and (o is None or (n < o if lower_is_narrower else n > o)):
                self.narrowed(f"{key}-narrowed", pointer_join(ptr, key), f"{key} is now {n} (was {o})")
            else:
                self.widened(f"{key}-widened", pointer_join(ptr, key), f"{key} is now {n} (was {o})")

    def objects(self, old: dict[str, Any], new: dict[str, Any], ptr: str, depth: int) -> None:
        oprops, nprops = old.get("properties") or {}, new.get("properties") or {}
        oreq, nreq = set(old.get("required") or []), set(new.get("required") or [])
        closed_new = new.get("additionalProperties") is False
        if old.get("additionalProperties") is not False and closed_new:
            self.narrowed("additional-properties-forbidden", pointer_join(ptr, "additionalProperties"),
                          "properties not listed are no longer allowed")
        elif old.get("additionalProperties") is False and new.get("additionalProperties") is not False:
            self.widened("additional-properties-allowed", pointer_join(ptr, "additionalProperties"),
                         "properties not listed are now allowed")
        for name in oprops:
            if name in nprops:
                continue
            where = pointer_join(ptr, "properties", name)
            if self.direction == "response":
                self.d.add("response-property-removed", True, where, f"property {name!r} was removed")
            else:
                self.d.add("request-property-removed", closed_new, where,
                           f"property {name!r} was removed" + (" and may no longer be sent" if closed_new else ""))
        for name in nprops:
            if name not in oprops:
                where = pointer_join(ptr, "properties", name)
                if self.direction == "request" and name in nreq:
                    self.d.add("required-request-property-added", True, where, f"new required property {name!r}")
                else:
                    self.d.add(f"{self.direction}-property-added", False, where, f"property {name!r} was added")
        for name in nreq - oreq:
            if name in oprops and self.direction == "request":
                self.d.add("request-property-made-required", True, pointer_join(ptr, "required"),
                           f"property {name!r} is now required")
        for name in oreq - nreq:
            if name in nprops and self.direction == "response":
                self.d.add("response-property-made-optional", True, pointer_join(ptr, "required"),
                           f"property {name!r} may now be missing")
        for name in oprops.keys() & nprops.keys():
            self.walk(oprops[name], nprops[name], pointer_join(ptr, "properties", name), depth + 1)


def _merged(changes: list[Change]) -> list[Change]:
    """One line per (kind, place): a shared schema used in requests and responses is walked in both directions,
    and a change that breaks one of them is breaking."""
    out: dict[tuple[str, str, str], Change] = {}
    for change in changes:
        key = (change.kind, change.file, change.pointer)
        if key not in out or (change.breaking and not out[key].breaking):
            out[key] = change
    return list(out.values())


def _operations(contract: Contract) -> dict[tuple[str, str], RawOperation]:
    out = {}
    for op in iter_operations(contract):
        if not isinstance(op, tuple):
            out[(op.method, TEMPLATE_VAR.sub("{}", op.path))] = op
    return out


def _requirements(security: Any) -> list[dict[str, list[str]]]:
    return [dict(req) for req in security or []]


def _fmt(req: dict[str, list[str]]) -> str:
    return " + ".join(f"{s}[{' '.join(sorted(sc))}]" for s, sc in req.items()) or "anonymous"


def diff_contracts(old: Contract, new: Contract) -> list[Change]:
    return _Differ(old, new).run()


@dataclass
class DiffReport:
    """Changes per API version, plus APIs that appeared or disappeared between the two sides."""

    changes: list[Change]

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]


def diff_paths(old_paths: list[Path], new_paths: list[Path]) -> tuple[DiffReport, list[str]]:
    """Compare contract files or folders. Pairs documents by (api, version). Returns the report and load errors."""
    old, old_problems = load_contracts(old_paths)
    new, new_problems = load_contracts(new_paths)
    errors = [str(p) for p in old_problems + new_problems]
    if len(old) == len(new) == 1 and all(p.is_file() for p in old_paths + new_paths):
        # Two files named explicitly are compared with each other, whatever versions they declare.
        return DiffReport(diff_contracts(old[0], new[0])), errors
    old_by = {api_identity(c): c for c in old}
    new_by = {api_identity(c): c for c in new}
    changes: list[Change] = []
    for key, contract in old_by.items():
        if key not in new_by:
            changes.append(Change("api-version-removed", True, display(contract.path), "",
                                  f"{key[0]} {key[1]} no longer exists"))
    for key, contract in new_by.items():
        if key not in old_by:
            changes.append(Change("api-version-added", False, display(contract.path), "",
                                  f"{key[0]} {key[1]} is new"))
        else:
            changes.extend(diff_contracts(old_by[key], contract))
    return DiffReport(changes), errors
