"""Turn an OpenAPI schema object into a self-contained JSON Schema (2020-12) for a compiled validator.

Done once per operation at start-up. What changes on the way:
- every `$ref` (local or in another file) is copied into `$defs`, so the validator needs no resolver;
- OpenAPI 3.0 `nullable` becomes a `"null"` type, 3.0's boolean `exclusiveMinimum/Maximum` become numbers;
- in request schemas a `readOnly` property may not be sent; in response schemas a `writeOnly` one may not appear;
- a `discriminator` selects the one branch to check, so errors point into that branch rather than saying
  "matches none of oneOf".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from .load import RefResolver, pointer_parts

Mode = Literal["request", "response"]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_OPENAPI_ONLY = {"discriminator", "xml", "externalDocs", "example", "nullable", "x-sensitive"}
READ_ONLY_MARK = "x-gateway-read-only"
WRITE_ONLY_MARK = "x-gateway-write-only"


class SchemaBundler:
    """Converts schemas of one contract; shared `$defs` are converted once per (target, mode)."""

    def __init__(self, resolver: RefResolver, openapi_version: str) -> None:
        self.resolver = resolver
        self.v30 = openapi_version == "3.0"

    def bundle(self, schema: Any, file: Path, mode: Mode) -> Any:
        defs: dict[str, Any] = {}
        names: dict[tuple[Path, str], str] = {}
        root = self._convert(schema, file.resolve(), mode, defs, names)
        if defs:
            if isinstance(root, bool):
                root = {} if root else {"not": {}}
            root = {**root, "$defs": {**root.get("$defs", {}), **defs}}
        return root

    def bundle_properties(self, props: dict[str, tuple[Any, Path]], required: list[str], mode: Mode) -> Any:
        """One object schema whose properties come from different places (the parameters of one location)."""
        defs: dict[str, Any] = {}
        names: dict[tuple[Path, str], str] = {}
        root: dict[str, Any] = {
            "type": "object",
            "properties": {n: self._convert(s, f.resolve(), mode, defs, names) for n, (s, f) in props.items()},
            "required": required,
        }
        if defs:
            root["$defs"] = defs
        return root

    # -- internals -------------------------------------------------------------------------------------------

    def _ref_name(self, ref: str, file: Path, mode: Mode, defs: dict[str, Any],
                  names: dict[tuple[Path, str], str]) -> str:
        target_file, pointer, target = self.resolver.resolve(ref, file)
        key = (target_file, pointer)
        if key not in names:
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join([target_file.stem, *pointer_parts(pointer)[-2:]]))
            name, n = base, 1
            while name in defs:
                n += 1
                name = f"{base}_{n}"
            names[key] = name
            defs[name] = True  # placeholder: a cycle back to this schema resolves to the name
            defs[name] = self._convert(target, target_file, mode, defs, names)
        return names[key]

    def _target(self, node: Any, file: Path) -> Any:
        """The schema a `$ref` chain ends at (to read `readOnly` etc. through references)."""
        try:
            return self.resolver.deref(node, file, "")[0]
        except LookupError:
            return node

    def _convert(self, node: Any, file: Path, mode: Mode, defs: dict[str, Any],
                 names: dict[tuple[Path, str], str]) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        if "$ref" in node:
            out["$ref"] = "#/$defs/" + self._ref_name(node["$ref"], file, mode, defs, names)
            if self.v30:  # in 3.0, siblings of $ref are ignored
                return out
        for key, value in node.items():
            if key == "$ref" or key in _OPENAPI_ONLY or key.startswith("x-"):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self._convert(v, file, mode, defs, names) for k, v in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self._convert(v, file, mode, defs, names) for v in value]
            elif key in _SCHEMA_ONE:
                out[key] = self._convert(value, file, mode, defs, names)
            else:
                out[key] = value
        if self.v30:
            self._from_30(node, out)
        self._hide_direction(node, out, file, mode)
        if "discriminator" in node and ("oneOf" in out or "anyOf" in out):
            self._discriminate(node, out, file, mode, defs, names)
        return out

    @staticmethod
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

    def _hide_direction(self, node: dict[str, Any], out: dict[str, Any], file: Path, mode: Mode) -> None:
        """Forbid readOnly properties in requests and writeOnly properties in responses."""
        props = node.get("properties")
        if not isinstance(props, dict):
            return
        flag, mark = ("readOnly", READ_ONLY_MARK) if mode == "request" else ("writeOnly", WRITE_ONLY_MARK)
        hidden = [name for name, sub in props.items()
                  if isinstance(self._target(sub, file), dict) and self._target(sub, file).get(flag) is True]
        if not hidden:
            return
        for name in hidden:
            # A schema that matches nothing, tagged so the error message can say why.
            out["properties"][name] = {"not": {mark: True}}
        if isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r not in hidden]

    def _discriminate(self, node: dict[str, Any], out: dict[str, Any], file: Path, mode: Mode,
                      defs: dict[str, Any], names: dict[tuple[Path, str], str]) -> None:
        disc = node["discriminator"]
        prop = disc.get("propertyName") if isinstance(disc, dict) else None
        branches = node.get("oneOf") or node.get("anyOf") or []
        if not isinstance(prop, str):
            return
        choices: dict[str, Any] = {}
        for value, target in (disc.get("mapping") or {}).items():
            ref = target if "/" in target or target.endswith((".yaml", ".json")) else f"#/components/schemas/{target}"
            choices[str(value)] = {"$ref": "#/$defs/" + self._ref_name(ref, file, mode, defs, names)}
        for branch in branches:
            if isinstance(branch, dict) and "$ref" in branch:
                implicit = branch["$ref"].rsplit("/", 1)[-1]
                target = {"$ref": "#/$defs/" + self._ref_name(branch["$ref"], file, mode, defs, names)}
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
