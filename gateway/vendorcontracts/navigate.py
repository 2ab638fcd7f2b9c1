"""Schemas of a contract walked by JSON pointer, remembering where each one is written (file and pointer), for the
mapping checker (mapping.py): `$ref`s followed, allOf/anyOf/oneOf looked through, types, enums and required
properties read as a mapping rule needs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.declarative.spec import escape
from gateway.contracts.load import display
from gateway.contracts.shapes import json_type

Deref = Callable[[Any, Path, str], tuple[Any, Path, str]]
DEPTH = 24


@dataclass(frozen=True)
class Pos:
    """A schema (or OpenAPI object) and where it is written: file and JSON pointer."""

    node: Any
    file: Path
    pointer: str

    def where(self) -> str:
        return f"{display(self.file)}#{self.pointer}"

    def at(self, *parts: Any) -> Pos:
        node = self.node
        for part in parts:
            node = node[part]
        return Pos(node, self.file, self.pointer + "".join("/" + escape(p) for p in parts))


CALLER = Pos({"type": "string"}, Path("(the caller)"), "")  # /owner, /idempotency_key: strings the gateway knows


class Schemas:
    """Navigation in one document's schemas, following `$ref`s and looking through allOf/anyOf/oneOf."""

    def __init__(self, deref: Deref) -> None:
        self.deref = deref
        self.last: Pos | None = None  # after a walk that failed: where the missing part should have been

    def resolve(self, pos: Pos) -> Pos:
        node, file, pointer = self.deref(pos.node, pos.file, pos.pointer)
        return Pos(node, file, pointer)

    def parts(self, pos: Pos, depth: int = 0) -> Iterator[Pos]:
        """The schema and every schema it is made of (allOf, anyOf, oneOf), resolved."""
        pos = self.resolve(pos)
        if not isinstance(pos.node, dict) or depth > DEPTH:
            return
        yield pos
        for key in ("allOf", "anyOf", "oneOf"):
            for i, _ in enumerate(pos.node.get(key) or []):
                yield from self.parts(pos.at(key, i), depth + 1)

    def child(self, pos: Pos, part: str | int) -> Pos | None:
        """The schema of one property (or, for a number or `*`, of the items)."""
        fallback = None
        for p in self.parts(pos):
            if isinstance(part, int) or part == "*":
                if isinstance(p.node.get("items"), dict):
                    return p.at("items")
                continue
            if part in (p.node.get("properties") or {}):
                return p.at("properties", part)
            if isinstance(p.node.get("additionalProperties"), dict) and fallback is None:
                fallback = p.at("additionalProperties")
        return fallback

    def walk(self, pos: Pos, parts: tuple[str | int, ...]) -> tuple[Pos | None, str]:
        """The schema at `parts` under `pos`, or None and the first part that is not there."""
        current: Pos | None = pos
        for part in parts:
            assert current is not None
            found = self.child(current, part)
            if found is None:
                self.last = self.resolve(current)
                return None, str(part)
            current = found
        return current, ""

    def types(self, pos: Pos) -> set[str] | None:
        """The JSON types a schema allows (None: any), null included when nullable."""
        found: set[str] = set()
        typed = False
        for p in self.parts(pos):
            declared = p.node.get("type")
            if isinstance(declared, str):
                found.add(declared)
                typed = True
            elif isinstance(declared, list):
                found |= {str(t) for t in declared}
                typed = True
            elif "properties" in p.node:
                found.add("object")
                typed = True
            if p.node.get("nullable") is True:
                found.add("null")
            if isinstance(p.node.get("enum"), list) and "type" not in p.node:
                found |= {json_type(v) for v in p.node["enum"]}
                typed = True
        return found if typed else None

    def enum(self, pos: Pos) -> tuple[list[Any], Pos] | None:
        for p in self.parts(pos):
            if isinstance(p.node.get("enum"), list):
                return p.node["enum"], p.at("enum")
        return None

    def required(self, pos: Pos) -> tuple[set[str], Pos | None]:
        names: set[str] = set()
        where = None
        for p in self.parts(pos):
            if isinstance(p.node.get("required"), list):
                names |= {str(n) for n in p.node["required"]}
                where = where or p.at("required")
        return names, where

    def surely(self, pos: Pos, parts: tuple[str | int, ...]) -> bool:
        """Whether every step of `parts` under `pos` is required (so a value is always there)."""
        current = pos
        for part in parts:
            if isinstance(part, str) and part != "*" and part not in self.required(current)[0]:
                return False
            found = self.child(current, part)
            if found is None:
                return False
            current = found
        return True


def fits(source: set[str] | None, target: set[str] | None) -> bool:
    if source is None or target is None:
        return True
    widened = target | ({"integer"} if "number" in target else set())
    return source <= widened
