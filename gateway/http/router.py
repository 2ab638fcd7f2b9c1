"""Method + path matching over compiled operations: a segment trie built once, literal segments before templates.

`/orders/search` beats `/orders/{id}`; a path that exists without the method gives 405 with the methods it has.
Segments are split on the raw path and percent-decoded one by one, so `%2F` inside an id stays in that id.
"""

from __future__ import annotations

import re
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote

from gateway.contracts.operations import TEMPLATE_VAR
from gateway.problems import MalformedRequest, MethodNotAllowed, NotFound


class Routable(Protocol):
    """What the router matches on: a compiled Operation, or versions.py's alias of one without its prefix."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=Routable)


class _Node(Generic[R]):
    __slots__ = ("literal", "params", "methods")

    def __init__(self) -> None:
        self.literal: dict[str, _Node[R]] = {}
        # (name of a whole-segment variable or None, compiled pattern for a mixed segment or None,
        #  the variable names of that pattern, child)
        self.params: list[tuple[str | None, re.Pattern[str] | None, tuple[str, ...], _Node[R]]] = []
        self.methods: dict[str, R] = {}


def _segment_pattern(segment: str) -> re.Pattern[str]:
    out, pos = "", 0
    for m in TEMPLATE_VAR.finditer(segment):
        out += re.escape(segment[pos:m.start()]) + f"(?P<{_group(m.group(1))}>[^/]+?)"
        pos = m.end()
    return re.compile(out + re.escape(segment[pos:]) + r"\Z")


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


class Router(Generic[R]):
    """Finds the operation for (method, raw path). Raises NotFound or MethodNotAllowed."""

    def __init__(self, operations: list[R]) -> None:
        self.root: _Node[R] = _Node()
        self.static: dict[str, dict[str, R]] = {}
        for op in operations:
            self._add(op)

    def _add(self, op: R) -> None:
        if "{" not in op.path:
            self.static.setdefault(op.path, {})[op.method] = op
        node = self.root
        for segment in op.path[1:].split("/"):
            if "{" not in segment:
                node = node.literal.setdefault(segment, _Node())
                continue
            whole = TEMPLATE_VAR.fullmatch(segment)
            name = whole.group(1) if whole else None
            pattern = None if whole else _segment_pattern(segment)
            for pname, ppattern, _, child in node.params:
                if pname == name and (ppattern.pattern if ppattern else None) == (pattern.pattern if pattern else None):
                    node = child
                    break
            else:
                child = _Node()
                node.params.append((name, pattern, tuple(TEMPLATE_VAR.findall(segment)), child))
                # Mixed segments (`{id}.json`) are more specific than a bare `{id}`: try them first.
                node.params.sort(key=lambda p: p[0] is not None)
                node = child
        node.methods[op.method] = op

    def match(self, method: str, raw_path: str) -> tuple[R, dict[str, str]]:
        static = self.static.get(raw_path)
        if static is not None and method in static and "%" not in raw_path:
            return static[method], {}
        segments = raw_path[1:].split("/")
        try:
            decoded = [unquote(s, errors="strict") for s in segments]
        except UnicodeDecodeError:
            raise MalformedRequest("the path is not valid UTF-8 after percent-decoding") from None
        if not raw_path.startswith("/") or any(s == "" or "\x00" in s for s in decoded[:-1]) or "\x00" in decoded[-1]:
            raise NotFound(f"no operation at {raw_path[:200]!r}")
        found: list[tuple[_Node[R], dict[str, str]]] = []
        self._walk(self.root, decoded, 0, {}, found)
        if not found:
            raise NotFound("no operation is declared at this path")
        # The most specific path wins outright (OpenAPI: concrete paths before templated ones); its methods are
        # the Allow list, even if a less specific template would accept this method.
        node, params = found[0]
        op = node.methods.get(method)
        if op is None:
            raise MethodNotAllowed(sorted(node.methods))
        return op, params

    def _walk(self, node: _Node[R], segments: list[str], i: int, params: dict[str, str],
              found: list[tuple[_Node[R], dict[str, str]]]) -> None:
        if i == len(segments):
            if node.methods:
                found.append((node, dict(params)))
            return
        segment = segments[i]
        child = node.literal.get(segment)
        if child is not None:
            self._walk(child, segments, i + 1, params, found)
        if segment == "":
            return
        for name, pattern, variables, child in node.params:
            if name is not None:
                params[name] = segment
                self._walk(child, segments, i + 1, params, found)
                del params[name]
            elif pattern is not None and (m := pattern.match(segment)):
                captured = {var: m.group(_group(var)) for var in variables}
                self._walk(child, segments, i + 1, {**params, **captured}, found)

    def operations(self) -> list[R]:
        out: list[R] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            out.extend(node.methods.values())
            stack.extend(node.literal.values())
            stack.extend(child for _, _, _, child in node.params)
        return out

