"""Turn the OpenAPI schemas of one contract into one JSON Schema (2020-12) document per direction, compiled once.

Every schema a contract uses, whether a component or written inline in an operation, becomes one entry of `$defs`,
converted once per direction (request, response) however many operations reference it; `$ref`s become
`#/$defs/<name>`. `compile()` hands each document to jsonschema-rs once and operations validate against their entry
of it by name: the cost is proportional to the document, not to operations x schema graph
(docs/decisions/compile-once-and-cache.md). What changes on the way:
- OpenAPI 3.0 `nullable` becomes a `"null"` type, 3.0's boolean `exclusiveMinimum/Maximum` become numbers;
- in request schemas a `readOnly` property may not be sent; in response schemas a `writeOnly` one may not appear;
- a `discriminator` selects the one branch to check, so errors point into that branch rather than saying
  "matches none of oneOf".
References are followed with a work list, not recursion: chains of hundreds of schemas convert without a deep stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs

from .load import RefResolver, pointer_join, pointer_parts

Mode = Literal["request", "response"]
MODES: tuple[Mode, Mode] = ("request", "response")

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedProperties", "unevaluatedItems", "additionalItems")
# OpenAPI-only keywords, and JSON Schema keywords that would change how `#/$defs/...` references resolve.
_DROPPED = {"discriminator", "xml", "externalDocs", "example", "nullable", "x-sensitive", "$id", "$schema",
            "$anchor", "$dynamicAnchor", "$comment"}
READ_ONLY_MARK = "x-gateway-read-only"
WRITE_ONLY_MARK = "x-gateway-write-only"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class SchemaProblem(Exception):
    """A schema that cannot be converted or compiled, located at its own pointer."""

    def __init__(self, file: Path, pointer: str, reason: str) -> None:
        super().__init__(reason)
        self.file, self.pointer, self.reason = file, pointer, reason


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a `$defs` entry was written: its file and JSON pointer."""

    file: Path
    pointer: str


class SchemaSet:
    """The schemas of one contract: `name()` registers one and returns its `$defs` name; `compile()` compiles all."""

    def __init__(self, resolver: RefResolver, openapi_version: str) -> None:
        self.resolver = resolver
        self.v30 = openapi_version == "3.0"
        self.defs: dict[Mode, dict[str, Any]] = {"request": {}, "response": {}}
        self._names: dict[tuple[Path, str], str] = {}  # (file, pointer) -> name, the same in both directions
        self.origin: dict[str, Origin] = {}
        self._pending: list[tuple[str, Mode]] = []
        self._taken: set[str] = set()
        self._counts: dict[str, int] = {}  # base name -> last suffix used (inline schemas are all "schema_N")
        self._maps: dict[Mode, Any] = {}

    # -- registering -------------------------------------------------------------------------------------------

    def name(self, schema: Any, file: Path, pointer: str, mode: Mode) -> str:
        """The `$defs` name of the schema written at (file, pointer); a bare `$ref` names its target directly."""
        if isinstance(schema, dict) and len(schema) == 1 and isinstance(schema.get("$ref"), str):
            name = self._ref_name(schema["$ref"], self.resolver.absolute(file), pointer, mode)
            self._drain()
            return name
        return self._register(self.resolver.absolute(file), pointer, schema, mode)

    def name_object(self, props: dict[str, tuple[Any, Path, str]], required: list[str], file: Path, pointer: str,
                    mode: Mode) -> str:
        """An object schema whose properties come from different places (the parameters of one location)."""
        key = (self.resolver.absolute(file), pointer)
        name = self._names.get(key)
        if name is None:
            name = self._new_name(key, "params")
        if name not in self.defs[mode]:
            absolute = self.resolver.absolute
            self.defs[mode][name] = {
                "type": "object", "required": required,
                "properties": {n: self._convert(s, absolute(f), p, mode) for n, (s, f, p) in props.items()}}
            self._drain()
        return name

    def _register(self, file: Path, pointer: str, schema: Any, mode: Mode) -> str:
        key = (file, pointer)
        name = self._names.get(key)
        if name is None:
            name = self._new_name(key, None)
        if name not in self.defs[mode]:
            self.defs[mode][name] = True  # placeholder: a cycle back to this schema resolves to the name
            self.defs[mode][name] = self._convert(schema, file, pointer, mode)
            self._drain()
        return name

    def _new_name(self, key: tuple[Path, str], hint: str | None) -> str:
        file, pointer = key
        parts = pointer_parts(pointer)
        readable = parts[-1] if len(parts) == 3 and parts[:2] == ["components", "schemas"] else hint or "schema"
        base = _NAME_CHARS.sub("_", readable) or "schema"
        name, n = base, self._counts.get(base, 1)
        while name in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._counts[base] = n
        self._taken.add(name)
        self._names[key] = name
        self.origin[name] = Origin(file, pointer)
        return name

    def _ref_name(self, ref: Any, file: Path, pointer: str, mode: Mode) -> str:
        try:
            target_file, target_pointer, _ = self.resolver.resolve(ref, file)
        except LookupError as exc:
            raise SchemaProblem(file, pointer_join(pointer, "$ref"), str(exc)) from None
        key = (target_file, target_pointer)
        name = self._names.get(key)
        if name is None:
            name = self._new_name(key, None)
        if name not in self.defs[mode]:
            self.defs[mode][name] = True
            self._pending.append((name, mode))
        return name

    def _drain(self) -> None:
        while self._pending:
            name, mode = self._pending.pop()
            origin = self.origin[name]
            node = self.resolver.node_at(origin.file, origin.pointer)
            self.defs[mode][name] = self._convert(node, origin.file, origin.pointer, mode)

    # -- converting -----------------------------------------------------------------------------------------------

    def _target(self, node: Any, file: Path) -> Any:
        """The schema a `$ref` chain ends at (to read `readOnly` etc. through references)."""
        try:
            return self.resolver.deref(node, file, "")[0]
        except LookupError:
            return node

    def _convert(self, node: Any, file: Path, pointer: str, mode: Mode, path: tuple[Any, ...] = ()) -> Any:
        # `path` is the part below `pointer`, joined only when a problem must be located (most nodes never are).
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        if "$ref" in node:
            out["$ref"] = "#/$defs/" + self._ref_name(node["$ref"], file, pointer_join(pointer, *path), mode)
            if self.v30:  # in 3.0, siblings of $ref are ignored
                return out
        for key, value in node.items():
            if key == "$ref" or key in _DROPPED or key.startswith("x-"):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self._convert(v, file, pointer, mode, (*path, key, k)) for k, v in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self._convert(v, file, pointer, mode, (*path, key, i)) for i, v in enumerate(value)]
            elif key in _SCHEMA_ONE:
                out[key] = self._convert(value, file, pointer, mode, (*path, key))
            else:
                out[key] = value
        if self.v30:
            _from_30(node, out)
        if out.get("format") in _INT_RANGES:
            _integer_range(out)
        self._hide_direction(node, out, file, mode)
        if "discriminator" in node and ("oneOf" in out or "anyOf" in out):
            self._discriminate(node, out, file, pointer_join(pointer, *path), mode)
        return out

    def _hide_direction(self, node: dict[str, Any], out: dict[str, Any], file: Path, mode: Mode) -> None:
        """Forbid readOnly properties in requests and writeOnly properties in responses."""
        props = node.get("properties")
        if not isinstance(props, dict):
            return
        flag, mark = ("readOnly", READ_ONLY_MARK) if mode == "request" else ("writeOnly", WRITE_ONLY_MARK)
        hidden = []
        for name, sub in props.items():
            target = self._target(sub, file) if isinstance(sub, dict) and "$ref" in sub else sub
            if isinstance(target, dict) and target.get(flag) is True:
                hidden.append(name)
        if not hidden:
            return
        for name in hidden:
            # A schema that matches nothing, tagged so the error message can say why.
            out["properties"][name] = {"not": {mark: True}}
        if isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r not in hidden]

    def _discriminate(self, node: dict[str, Any], out: dict[str, Any], file: Path, pointer: str, mode: Mode) -> None:
        disc = node["discriminator"]
        prop = disc.get("propertyName") if isinstance(disc, dict) else None
        branches = node.get("oneOf") or node.get("anyOf") or []
        if not isinstance(prop, str):
            return
        where = pointer_join(pointer, "discriminator", "mapping")
        choices: dict[str, Any] = {}
        for value, target in (disc.get("mapping") or {}).items():
            ref = target if "/" in target or target.endswith((".yaml", ".json")) else f"#/components/schemas/{target}"
            choices[str(value)] = {"$ref": "#/$defs/" + self._ref_name(ref, file, where, mode)}
        for branch in branches:
            if isinstance(branch, dict) and isinstance(branch.get("$ref"), str):
                implicit = branch["$ref"].rsplit("/", 1)[-1]
                target = {"$ref": "#/$defs/" + self._ref_name(branch["$ref"], file, pointer, mode)}
                if target not in choices.values():
                    choices.setdefault(implicit, target)
        if not choices:
            return
        out.pop("oneOf", None)
        out.pop("anyOf", None)
        selector = {"properties": {prop: {"enum": list(choices)}}, "required": [prop]}
        rules = [{"if": {"properties": {prop: {"const": v}}, "required": [prop]}, "then": s}
                 for v, s in choices.items()]
        out["allOf"] = [*out.get("allOf", []), selector, *rules]

    # -- the compile cache (contracts/cache.py) -------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Everything converted so far, as JSON-able data."""
        return {"defs": self.defs, "names": [[str(f), p, n] for (f, p), n in self._names.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what `export` gave: registering the same schemas then converts nothing."""
        for mode in MODES:
            self.defs[mode] = dict(state["defs"][mode])
        for file, pointer, name in state["names"]:
            key = (Path(file), pointer)
            self._names[key] = name
            self._taken.add(name)
            self.origin[name] = Origin(*key)

    # -- compiling ------------------------------------------------------------------------------------------------

    def document(self, mode: Mode) -> dict[str, Any]:
        return {"$defs": self.defs[mode]}

    def compile(self) -> list[SchemaProblem]:
        """Compile each direction's document once; a schema that cannot compile is reported at its own pointer.

        The root of a document looks each schema up by name (`properties: {name: {"$ref": "#/$defs/name"}}`), so one
        compiled validator serves every operation (validators.py EntryValidator). jsonschema-rs stops at the first
        schema it cannot compile: that one is set aside and the rest compiled again, so every culprit is reported.
        """
        problems: list[SchemaProblem] = []
        for mode in MODES:
            defs = dict(self.defs[mode])
            for _ in range(100):
                root = {"type": "object", "properties": {n: {"$ref": f"#/$defs/{n}"} for n in defs}, "$defs": defs}
                try:
                    self._maps[mode] = jsonschema_rs.validator_for(root, validate_formats=True)
                    break
                except jsonschema_rs.ValidationError as exc:
                    where, reason = list(exc.instance_path), str(exc).splitlines()[0]
                except Exception as exc:  # noqa: BLE001 - e.g. a reference jsonschema-rs cannot resolve
                    where, reason = [], str(exc).splitlines()[0]
                if len(where) < 2 or where[0] != "$defs" or where[1] not in defs:
                    problems.append(SchemaProblem(Path(""), "", f"schemas cannot be compiled: {reason}"))
                    break
                origin = self.origin[str(where[1])]
                problems.append(SchemaProblem(origin.file, pointer_join(origin.pointer, *where[2:]),
                                              f"schema cannot be compiled: {reason}"))
                defs[str(where[1])] = {}
        unique: dict[tuple[Path, str], SchemaProblem] = {}
        for p in problems:
            unique.setdefault((p.file, p.pointer), p)
        return list(unique.values())

    def validator(self, name: str, mode: Mode) -> Any:
        """(compiled document validator, name) of a registered schema (after `compile()`)."""
        return self._maps[mode]


_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _integer_range(out: dict[str, Any]) -> None:
    """OpenAPI's `format: int32|int64` bound numbers (JSON Schema formats only apply to strings): as min/max."""
    low, high = _INT_RANGES[out["format"]]
    if not isinstance(out.get("minimum"), (int, float)) or out["minimum"] < low:
        out["minimum"] = low
    if not isinstance(out.get("maximum"), (int, float)) or out["maximum"] > high:
        out["maximum"] = high


def _from_30(node: dict[str, Any], out: dict[str, Any]) -> None:
    if node.get("nullable") is True:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(flag) is True and bound in out:
            out[flag] = out.pop(bound)
        elif out.get(flag) is False:
            del out[flag]
