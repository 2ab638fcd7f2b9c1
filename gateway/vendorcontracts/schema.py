"""OpenAPI 3.0 schemas of a vendor contract as JSON Schema, and the decoding of form-encoded keys.

Two conversions of the same schema:
- `json`: for JSON bodies. `nullable` becomes a null type, `$ref`s point into one `$defs`, OpenAPI-only keywords go.
- `form`: for query strings, path segments, headers and form bodies, whose values all arrive as strings:
  `integer` becomes a string of digits, `number` a decimal string, `boolean` "true"/"false". (Numeric bounds
  cannot be checked on a string and are dropped there.)
- `drift`: for answers, the fast first look of drift.py: `json`, with every object whose properties are listed
  closed to others (unless `x-excerpt-open`), and the constraints drift does not judge (lengths, patterns,
  bounds) left out. An answer it accepts has no drift; one it refuses is walked to say which drift and where.
A sub-schema marked `x-excerpt-pruned: true` (a part of the vendor's object our adapters neither send nor read,
left out of the excerpt) accepts anything.
"""

from __future__ import annotations

import re
from typing import Any, Literal

Mode = Literal["json", "form", "drift"]
PRUNED = "x-excerpt-pruned"
OPEN = "x-excerpt-open"
_DROPPED = {"nullable", "discriminator", "xml", "externalDocs", "example", "examples", "deprecated", "readOnly",
            "writeOnly", "style", "explode", "title", "description", "format"}
_NUMERIC_BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
_NOT_DRIFT = _NUMERIC_BOUNDS | {"pattern", "maxLength", "minLength", "maxItems", "minItems", "uniqueItems"}
_FORM_TYPES: dict[str, dict[str, Any]] = {
    "integer": {"type": "string", "pattern": r"^-?[0-9]+$"},
    "number": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"},
    "boolean": {"type": "string", "enum": ["true", "false"]},
}
REF_PREFIX = "#/components/schemas/"


def ref_name(ref: str) -> str:
    if not ref.startswith(REF_PREFIX):
        raise ValueError(f"only references to {REF_PREFIX}<name> are supported, not {ref!r}")
    return ref[len(REF_PREFIX):]


def convert(node: Any, mode: Mode) -> Any:
    """One OpenAPI schema as JSON Schema (2020-12), references left as `#/$defs/<name>`."""
    if not isinstance(node, dict):
        return node
    if node.get(PRUNED):
        return {}
    if "$ref" in node:
        return {"$ref": "#/$defs/" + ref_name(node["$ref"])}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: convert(v, mode) for k, v in value.items()}
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [convert(v, mode) for v in value]
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = convert(value, mode)
        elif (mode == "form" and key in _NUMERIC_BOUNDS) or (mode == "drift" and key in _NOT_DRIFT):
            continue
        else:
            out[key] = value
    if mode == "form" and out.get("type") in _FORM_TYPES:
        kind = out.pop("type")
        enum = out.pop("enum", None)
        out.update(_FORM_TYPES[kind])
        if enum is not None:
            out["enum"] = [("true" if v else "false") if isinstance(v, bool) else str(v) for v in enum]
    if mode == "drift" and "properties" in out and "additionalProperties" not in out and not node.get(OPEN):
        out["additionalProperties"] = False
    if node.get("nullable") is True and mode != "form":
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def document(schema: Any, components: dict[str, Any], mode: Mode) -> dict[str, Any]:
    """A self-contained JSON Schema: `schema` with every component it may reference in `$defs`."""
    root = convert(schema, mode)
    if not isinstance(root, dict):
        root = {}
    return {**root, "$defs": {name: convert(s, mode) for name, s in components.items()}}


# -- form-encoded keys -------------------------------------------------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A key cannot be read as Stripe-style bracketed nesting (`a[b][]`)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def nest(pairs: list[tuple[str, str]], csv: frozenset[str] = frozenset(),
         repeated: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Form pairs as the object they encode: `a[b]=1` -> {"a": {"b": "1"}}, `a[]=x&a[]=y` and `a[0]=x&a[1]=y` ->
    {"a": ["x", "y"]}. Names in `csv` are comma-separated lists (OpenAPI style form, explode false); names in
    `repeated` are lists written as a repeated key (style form, explode true)."""
    root: dict[str, Any] = {}
    nested = False
    for key, value in pairs:
        if "[" not in key and "]" not in key and key not in csv and key not in repeated:  # the common case
            if key in root:
                raise FormError(key, "is given twice")
            root[key] = value
            continue
        nested = True
        match = _KEY.match(key)
        if match is None:
            raise FormError(key, "is not a parameter name or a bracketed key")
        parts = [match.group(1), *_PART.findall(match.group(2))]
        if len(parts) == 1 and parts[0] in csv:
            _put(root, key, parts, value.split(",") if value else [])
        elif len(parts) == 1 and parts[0] in repeated:
            existing = root.setdefault(parts[0], [])
            if not isinstance(existing, list):
                raise FormError(key, "is given both as a list and as something else")
            existing.append(value)
        else:
            _put(root, key, parts, value)
    return _lists(root) if nested else root


def _put(root: dict[str, Any], key: str, parts: list[str], value: Any) -> None:
    node: Any = root
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):  # came from `name[]`: each `[]` adds an item
            if part != "":
                raise FormError(key, "mixes `[]` with named keys")
            if last:
                node.append(value)
                return
            child: Any = [] if parts[i + 1] == "" else {}
            node.append(child)
            node = child
            continue
        if part == "":
            raise FormError(key, "has `[]` where a name was expected")
        if last:
            if part in node:
                raise FormError(key, "is given twice")
            node[part] = value
            return
        child = node.get(part)
        if child is None:
            child = node[part] = [] if parts[i + 1] == "" else {}
        elif not isinstance(child, (dict, list)):
            raise FormError(key, "is given both as a value and as an object")
        node = child


def _lists(node: Any) -> Any:
    """Objects whose keys are all indexes (`a[0]`, `a[1]`) become lists in index order."""
    if isinstance(node, list):
        return [_lists(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _lists(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out
