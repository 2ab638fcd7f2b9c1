"""What a converted JSON Schema says about the *shape* of a value: its types, properties and items.

Query strings, headers and form bodies carry only strings; these answers say which typed value a string stands for
(`"42"` is 42 where the schema wants an integer) and which keys of `a[b][0]=x` are objects and which are arrays.
They look through `$ref` (into the contract's `$defs`) and `allOf`/`anyOf`/`oneOf`, so `anyOf: [object, integer]`
is known to accept both `?created=1` and `?created[gte]=1`.
"""

from __future__ import annotations

import re
from typing import Any

Defs = dict[str, Any]
# Try the narrowest interpretation of a string first.
_ORDER = {"boolean": 0, "integer": 1, "number": 2, "null": 3, "array": 4, "object": 5, "string": 6}
_COMBINATORS = ("allOf", "anyOf", "oneOf")
_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_NUM = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def deref(schema: Any, defs: Defs) -> Any:
    """The schema a `#/$defs/<name>` chain ends at (siblings of `$ref` are looked at by the callers' combinators)."""
    for _ in range(64):
        if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
            return schema
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
        # 3.1: keywords beside $ref apply too
        schema = target if len(schema) == 1 else {"allOf": [target, {k: v for k, v in schema.items() if k != "$ref"}]}
    return {}


def _branches(schema: dict[str, Any]) -> list[Any]:
    return [b for key in _COMBINATORS for b in (schema.get(key) or []) if isinstance(b, (dict, bool))]


def types_of(schema: Any, defs: Defs, _depth: int = 0) -> tuple[str, ...]:
    """Every JSON type the schema may accept, narrowest first; () when it does not say."""
    schema = deref(schema, defs)
    if not isinstance(schema, dict) or _depth > 16:
        return ()
    t = schema.get("type")
    found: list[str] = [t] if isinstance(t, str) else []
    if isinstance(t, list):
        found = [x for x in t if isinstance(x, str)]
    if not found:
        for branch in _branches(schema):
            found += [x for x in types_of(branch, defs, _depth + 1) if x not in found]
        if not found and "properties" in schema:
            found = ["object"]
        elif not found and ("items" in schema or "prefixItems" in schema):
            found = ["array"]
    if "enum" in schema and not found:
        found = sorted({json_type(v) for v in schema["enum"]})
    return tuple(sorted(set(found), key=lambda x: _ORDER.get(x, 9)))


def json_type(value: Any) -> str:
    """The JSON Schema type of a value parsed from JSON or YAML (anything else, e.g. a YAML date, is a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def properties_of(schema: Any, defs: Defs, _depth: int = 0) -> tuple[dict[str, Any], Any]:
    """(property name -> schema, schema of other properties or None), merged over combinators."""
    schema = deref(schema, defs)
    if not isinstance(schema, dict) or _depth > 16:
        return {}, None
    props = dict(schema.get("properties") or {}) if isinstance(schema.get("properties"), dict) else {}
    extra = schema.get("additionalProperties")
    extra = extra if isinstance(extra, dict) else None
    # `then`/`else`: the branches a discriminator selects between (contracts/schema.py writes them so).
    for branch in [*_branches(schema), *(schema[k] for k in ("then", "else") if isinstance(schema.get(k), dict))]:
        more, more_extra = properties_of(branch, defs, _depth + 1)
        for k, v in more.items():
            props.setdefault(k, v)
        extra = extra or more_extra
    return props, extra


def items_of(schema: Any, defs: Defs, _depth: int = 0) -> Any:
    """The schema of an array's items (merged over combinators), {} when it does not say."""
    schema = deref(schema, defs)
    if not isinstance(schema, dict) or _depth > 16:
        return {}
    if isinstance(schema.get("items"), (dict, bool)):
        return schema["items"]
    for branch in _branches(schema):
        found = items_of(branch, defs, _depth + 1)
        if found != {}:
            return found
    return {}


def coerce(value: str, types: tuple[str, ...]) -> Any:
    """The typed value a string stands for under `types`, or the string itself (the validator then says why)."""
    for t in types:
        if t == "integer" and _INT.fullmatch(value):
            return int(value)
        if t == "number" and _NUM.fullmatch(value) and len(value) <= 40:
            number = float(value)
            if number == number and abs(number) != float("inf"):
                return int(value) if _INT.fullmatch(value) else number
        if t == "boolean" and value in ("true", "false"):
            return value == "true"
        if t == "null" and value in ("", "null"):
            return None
        if t == "string":
            return value
    return value


def coerce_tree(value: Any, schema: Any, defs: Defs, _depth: int = 0) -> Any:
    """Strings, dicts and lists from a form or deepObject turned into what the schema describes.

    A dict whose keys are all indexes (`a[0]`, `a[1]`) becomes a list where the schema wants an array.
    """
    if _depth > 32:
        return value
    if isinstance(value, str):
        return coerce(value, types_of(schema, defs) or ("string",))
    if isinstance(value, list):
        items = items_of(schema, defs)
        return [coerce_tree(v, items, defs, _depth + 1) for v in value]
    if isinstance(value, dict):
        types = types_of(schema, defs)
        if "array" in types and value and all(k.isdigit() for k in value) and "object" not in types[:1]:
            items = items_of(schema, defs)
            return [coerce_tree(value[k], items, defs, _depth + 1) for k in sorted(value, key=int)]
        props, extra = properties_of(schema, defs)
        return {k: coerce_tree(v, props.get(k, extra if extra is not None else {}), defs, _depth + 1)
                for k, v in value.items()}
    return value
