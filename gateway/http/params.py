"""Parameters: decode path, query, header and cookie values per OpenAPI style/explode, coerce, validate.

Compiled once per operation (`compile_parameters`); per request `ParameterSet.parse` does only string work and
one validator call per location that has parameters. Every violation of every location is reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from gateway.contracts.shapes import coerce
from gateway.contracts.validators import SchemaValidator
from gateway.problems import MalformedRequest, Violation

LOCATIONS = ("path", "query", "header", "cookie")
DEFAULT_STYLE = {"path": "simple", "query": "form", "header": "simple", "cookie": "form"}
# RFC 9110 / OpenAPI: these are described by other means and are ignored as header parameters.
IGNORED_HEADERS = {"accept", "content-type", "authorization"}
__all__ = ["DEFAULT_STYLE", "LOCATIONS", "ParamSpec", "ParameterSet", "coerce"]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One declared parameter, with everything needed to decode it precomputed."""

    name: str
    location: str
    required: bool
    style: str
    explode: bool
    shape: str  # primitive | array | object
    types: tuple[str, ...]  # primitive types, or item types for arrays
    property_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    json_content: bool = False
    # An object parameter whose schema also accepts scalars (`anyOf: [object, integer]`): `?created=1` is the scalar.
    scalar_types: tuple[str, ...] = ()
    # Tolerance (docs/contracts.md): an array query parameter may also come as `a[]=x&a[]=y` or `a[0]=x&a[1]=y`.
    brackets: bool = False

    @property
    def key(self) -> str:
        return self.name.lower() if self.location == "header" else self.name

    def decode(self, raw: str | list[str] | dict[str, str]) -> Any:
        """Deserialize a raw value (a list for exploded query arrays, a dict for exploded/deep objects)."""
        if isinstance(raw, dict):
            return {k: coerce(v, self.property_types.get(k, ("string",))) for k, v in raw.items()}
        if self.json_content:
            import json

            try:
                return json.loads(raw if isinstance(raw, str) else raw[-1])
            except ValueError:
                return raw
        if self.shape == "array":
            items = raw if isinstance(raw, list) else _split_array(raw, self.style, self.explode)
            return [coerce(i, self.types) for i in items]
        if isinstance(raw, list):
            raw = raw[-1]
        if self.shape == "object":
            if self.scalar_types and (self.style == "deepObject" or "=" not in raw and "," not in raw):
                return coerce(raw, self.scalar_types)
            return self._decode_object(raw)
        if self.style == "label" and raw.startswith("."):
            raw = raw[1:]
        elif self.style == "matrix" and raw.startswith(f";{self.name}="):
            raw = raw[len(self.name) + 2:]
        return coerce(raw, self.types)

    def _decode_object(self, raw: str) -> Any:
        sep = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(self.style, ",")
        if self.style == "label":
            raw = raw.lstrip(".")
        parts = [p for p in raw.split(sep)] if raw else []
        out: dict[str, Any] = {}
        if self.explode and all("=" in p for p in parts):
            pairs = [p.split("=", 1) for p in parts]
        elif len(parts) % 2 == 0:
            pairs = [[parts[i], parts[i + 1]] for i in range(0, len(parts), 2)]
        else:
            return raw
        for k, v in pairs:
            out[k] = coerce(v, self.property_types.get(k, ("string",)))
        return out


def _split_array(raw: str, style: str, explode: bool) -> list[str]:
    if raw == "":
        return []
    if style == "spaceDelimited":
        return raw.split(" ")
    if style == "pipeDelimited":
        return raw.split("|")
    if style == "label":
        return raw.lstrip(".").split("." if explode else ",")
    if style == "matrix":
        if explode:
            return [p.split("=", 1)[-1] for p in raw.lstrip(";").split(";")]
        return raw.split("=", 1)[-1].split(",")
    return raw.split(",")


def _bracketed(name: str, multi: dict[str, list[str]]) -> list[str] | None:
    """`a[]=x&a[]=y` or `a[0]=x&a[1]=y` (in index order) as the list of an array parameter `a`; None if absent."""
    if name + "[]" in multi:
        return multi[name + "[]"]
    prefix = name + "["
    indexed = [(k[len(prefix):-1], v) for k, v in multi.items() if k.startswith(prefix) and k.endswith("]")]
    if not indexed or not all(i.isdigit() and len(i) <= 6 for i, _ in indexed):
        return None
    return [v[-1] for _, v in sorted(indexed, key=lambda item: int(item[0]))]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


class ParameterSet:
    """All parameters of one operation; `parse` returns the typed values by name or raises RequestInvalid."""

    __slots__ = ("by_location", "validators", "exploded_objects", "deep_objects", "bracketed", "empty")

    def __init__(self, specs: list[ParamSpec], validators: dict[str, SchemaValidator | None]) -> None:
        self.by_location: dict[str, list[ParamSpec]] = {loc: [s for s in specs if s.location == loc]
                                                        for loc in LOCATIONS}
        self.validators = validators
        self.exploded_objects = [s for s in self.by_location["query"]
                                 if s.shape == "object" and s.style == "form" and s.explode]
        self.deep_objects = [s for s in self.by_location["query"] if s.style == "deepObject"]
        self.bracketed = [s for s in self.by_location["query"] if s.brackets]
        self.empty = not specs

    def parse(self, path_values: dict[str, str], query_string: bytes,
              headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], list[Violation]]:
        values: dict[str, Any] = {}
        violations: list[Violation] = []
        if self.empty:
            return values, violations
        for location, raw in (("path", path_values), ("query", self._query(query_string)),
                              ("header", self._headers(headers)), ("cookie", self._cookies(headers))):
            specs = self.by_location[location]
            if not specs:
                continue
            typed: dict[str, Any] = {}
            for spec in specs:
                if spec.key in raw:
                    value = spec.decode(raw[spec.key])
                    if _has_nul(value):
                        violations.append(Violation(location, "/" + spec.name, "must not contain NUL characters"))
                        continue
                    typed[spec.name] = value
            validator = self.validators.get(location)
            if validator is not None and not validator.is_valid(typed):
                violations.extend(validator.violations(typed, location))
            values.update(typed)
        return values, violations

    def _query(self, query_string: bytes) -> dict[str, Any]:
        if not self.by_location["query"] or not query_string:
            return {}
        try:
            pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, errors="strict",
                              max_num_fields=1000)
        except UnicodeDecodeError:
            raise MalformedRequest("the query string is not valid UTF-8 after percent-decoding") from None
        except ValueError as exc:
            raise MalformedRequest(f"the query string cannot be parsed: {exc}") from None
        multi: dict[str, Any] = {}
        for k, v in pairs:
            multi.setdefault(k, []).append(v)
        out: dict[str, Any] = {}
        for spec in self.by_location["query"]:
            if spec.name in multi:
                vals = multi[spec.name]
                out[spec.name] = vals if (spec.shape == "array" and spec.explode and spec.style == "form") else vals[-1]
        for spec in self.exploded_objects:
            if spec.name not in out:
                props = {k: multi[k][-1] for k in spec.property_types if k in multi}
                if props:
                    out[spec.name] = props
        for spec in self.deep_objects:
            prefix = spec.name + "["
            props = {k[len(prefix):-1]: v[-1] for k, v in multi.items() if k.startswith(prefix) and k.endswith("]")}
            if props:
                out[spec.name] = props
        for spec in self.bracketed if self.bracketed and any("[" in k for k in multi) else ():
            if spec.name not in out:
                found = _bracketed(spec.name, multi)
                if found is not None:
                    out[spec.name] = found
        return out

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
        if not self.by_location["header"]:
            return {}
        wanted = {s.key for s in self.by_location["header"]}
        out: dict[str, str] = {}
        for k, v in headers:
            name = k.decode("latin-1").lower()
            if name in wanted:
                out[name] = v.decode("latin-1").strip()
        return out

    def _cookies(self, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
        if not self.by_location["cookie"]:
            return {}
        out: dict[str, str] = {}
        for k, v in headers:
            if k.lower() == b"cookie":
                for part in v.decode("latin-1").split(";"):
                    name, sep, value = part.strip().partition("=")
                    if sep:
                        out[name] = unquote(value)
        return out

