"""Form bodies as their schema and `encoding` describe them: urlencoded (flat, deepObject, bracketed arrays) and
multipart/form-data (parts, per-part content types).

Built once per operation and media type; per request only the body is parsed. The value handed to the validator is
typed by the schema (`"42"` -> 42 where an integer is wanted), so the body is checked like a JSON one:
- `metadata[order_id]=6735` for a property whose encoding says `style: deepObject` is `{"metadata": {"order_id":
  "6735"}}`, nested to any depth (`items[0][price]=...`: an object whose keys are all indexes is an array where the
  schema wants one);
- `expand[]=a&expand[]=b` and `expand[0]=a` for an array property are the list (a tolerance, on by default:
  `x-gateway.bracketed_arrays: false` turns it off for an API);
- `encoding.{name}.explode: false` splits `tags=a,b` (spaceDelimited / pipeDelimited with their separators);
- `encoding.{name}.contentType: application/json` parses that field as JSON.
A multipart part is checked against `encoding.{name}.contentType` (a list, with wildcards) or the default OpenAPI
gives (text/plain for primitives, application/json for objects and arrays, anything for binary strings); a text
part is typed like a form field, a JSON part parsed, a binary part kept as its bytes (as a latin-1 string, so that
`maxLength` counts bytes).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from gateway.contracts.shapes import Defs, coerce_tree, properties_of, types_of
from gateway.problems import MalformedRequest, Violation

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_SEPARATORS = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|"}
MAX_DEPTH = 8


def _path(key: str) -> tuple[str, list[str]] | None:
    """`a[b][0]` -> ("a", ["b", "0"]); None when the key is not in bracket notation."""
    start = key.find("[")
    if start <= 0 or not key.endswith("]"):
        return None
    rest = key[start:]
    parts = _BRACKETS.findall(rest)
    if "".join(f"[{p}]" for p in parts) != rest or len(parts) > MAX_DEPTH:
        return None
    return key[:start], parts


def _insert(out: dict[str, Any], base: str, parts: list[str], value: str) -> bool:
    """Put `value` at out[base][parts...]; `[]` (append) only as the last part. False if the key cannot nest."""
    append = parts[-1] == ""
    walk = parts[:-1] if append else parts
    if "" in walk:
        return False
    node, key = out, base
    for part in walk:
        child = node.get(key)
        if not isinstance(child, dict):
            if child is not None and not isinstance(child, dict):
                return False
            child = node[key] = {}
        node, key = child, part
    if append:
        current = node.get(key)
        if current is None:
            node[key] = [value]
        elif isinstance(current, list):
            current.append(value)
        else:
            return False
    else:
        node[key] = value
    return True


def _media_matches(sent: str, allowed: list[str]) -> bool:
    for pattern in allowed:
        if pattern in ("*/*", sent) or (pattern.endswith("/*") and sent.split("/")[0] == pattern[:-2]):
            return True
    return False


class FormDecoder:
    """application/x-www-form-urlencoded for one operation: field names, nesting and types from the schema."""

    def __init__(self, name: str, defs: Defs, encoding: dict[str, Any], brackets: bool) -> None:
        self.schema = {"$ref": f"#/$defs/{name}"}
        self.defs = defs
        props, _ = properties_of(self.schema, defs)
        self.arrays = {k for k, v in props.items() if "array" in types_of(v, defs)}
        self.nested = {k for k, e in encoding.items() if isinstance(e, dict) and e.get("style") == "deepObject"}
        self.nested |= {k for k, v in props.items() if "object" in types_of(v, defs)}
        if brackets:
            self.nested |= self.arrays
        self.split = {k: _SEPARATORS.get(e.get("style", "form"), ",") for k, e in encoding.items()
                      if isinstance(e, dict) and e.get("explode") is False and k in self.arrays}
        self.json = {k for k, e in encoding.items()
                     if isinstance(e, dict) and "json" in str(e.get("contentType", "")).lower()}

    def decode(self, raw: bytes) -> tuple[dict[str, Any], list[Violation]]:
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=1000)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedRequest(f"form body cannot be parsed: {exc}") from None
        out: dict[str, Any] = {}
        violations: list[Violation] = []
        for key, value in pairs:
            if "\x00" in key or "\x00" in value:
                raise MalformedRequest("form body contains a NUL character")
            path = _path(key) if "[" in key else None
            if path is not None and path[0] in self.nested:
                if not isinstance(out.get(path[0]), (dict, list)):
                    out.pop(path[0], None)  # `metadata=` (unset) followed by `metadata[k]=v`: the object wins
                if not _insert(out, path[0], path[1], value):
                    violations.append(Violation("body", "/" + path[0], f"field {key!r} mixes incompatible forms"))
            elif key in self.json:
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    violations.append(Violation("body", "/" + key, "must be JSON (its encoding says so)"))
            elif key in self.split:
                out[key] = value.split(self.split[key]) if value else []
            elif key in self.arrays:
                previous = out.get(key)
                out[key] = [*previous, value] if isinstance(previous, list) else [value]
            else:
                out[key] = value  # a repeated scalar field: the last one counts
        typed = coerce_tree({k: v for k, v in out.items() if k not in self.json}, self.schema, self.defs)
        typed.update({k: out[k] for k in self.json if k in out})
        return typed, violations


class MultipartDecoder:
    """multipart/form-data for one operation: each part by name, its content type checked, its value typed."""

    def __init__(self, name: str | None, defs: Defs, encoding: dict[str, Any]) -> None:
        self.schema: Any = {"$ref": f"#/$defs/{name}"} if name else {}
        self.defs = defs
        props, _ = properties_of(self.schema, defs) if name else ({}, None)
        self.allowed: dict[str, list[str]] = {}
        self.kinds: dict[str, str] = {}  # name -> text | json | binary
        self.arrays = {k for k, v in props.items() if "array" in types_of(v, defs)}
        for prop, schema in props.items():
            target = schema if isinstance(schema, dict) else {}
            types = types_of(target, defs)
            declared = (encoding.get(prop) or {}).get("contentType") if isinstance(encoding.get(prop), dict) else None
            if declared:
                self.allowed[prop] = [m.strip().lower() for m in str(declared).split(",") if m.strip()]
            binary = _is_binary(target, defs)
            self.kinds[prop] = ("binary" if binary else "json" if ("object" in types or
                                                                    ("array" in types and prop not in self.arrays))
                                else "text")
            if declared is None and not binary and ("object" in types):
                self.allowed[prop] = ["application/json"]

    def decode(self, raw: bytes, content_type: str) -> tuple[dict[str, Any], list[Violation]]:
        if "boundary=" not in content_type.lower():
            raise MalformedRequest("multipart/form-data needs a boundary parameter in Content-Type")
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        if not message.is_multipart() or any("Boundary" in type(d).__name__ for d in message.defects):
            raise MalformedRequest("multipart body cannot be parsed (missing or wrong boundary)")
        out: dict[str, Any] = {}
        violations: list[Violation] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or not name:
                violations.append(Violation("body", "", "every part needs a Content-Disposition with a name"))
                continue
            sent = part.get_content_type().lower() if part.get("content-type") else None
            decoded = part.get_payload(decode=True)  # bytes, or None for a nested multipart
            payload = decoded if isinstance(decoded, bytes) else b""
            allowed = self.allowed.get(name)
            if allowed and sent is not None and not _media_matches(sent, allowed):
                violations.append(Violation("body", "/" + name, f"part has Content-Type {sent}; expected "
                                            f"{' or '.join(allowed)}"))
                continue
            value: Any
            kind = self.kinds.get(name, "text")
            if kind == "binary" or part.get_filename() is not None and kind != "json":
                value = payload.decode("latin-1")
            elif kind == "json" or (sent is not None and (sent == "application/json" or sent.endswith("+json"))):
                try:
                    value = json.loads(payload)
                except ValueError:
                    violations.append(Violation("body", "/" + name, "part is not valid JSON"))
                    continue
            else:
                try:
                    value = payload.decode("utf-8")
                except UnicodeDecodeError:
                    violations.append(Violation("body", "/" + name, "text part is not valid UTF-8"))
                    continue
                if "\x00" in value:
                    raise MalformedRequest("a multipart text part contains a NUL character")
            if name in self.arrays:
                out.setdefault(name, []).append(value)
            else:
                out[name] = value
        texts = {k: v for k, v in out.items() if self.kinds.get(k, "text") == "text"}
        typed = coerce_tree(texts, self.schema, self.defs) if self.schema else texts
        return {**out, **typed}, violations


def _is_binary(schema: Any, defs: Defs) -> bool:
    from gateway.contracts.shapes import deref

    target = deref(schema, defs)
    if not isinstance(target, dict):
        return False
    if target.get("format") in ("binary", "byte") or "contentMediaType" in target or "contentEncoding" in target:
        return True
    items = target.get("items")
    return isinstance(items, dict) and _is_binary(items, defs)
