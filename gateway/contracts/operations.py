"""Walk a loaded contract's operations with their parameters dereferenced: shared by lint and compile."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .load import Contract, pointer_join

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TEMPLATE_VAR = re.compile(r"\{([^{}/]+)\}")


@dataclass
class RawOperation:
    """An operation as written, located: its file, JSON pointer, merged parameters and extensions."""

    contract: Contract
    path: str
    method: str
    pointer: str
    node: dict[str, Any]
    parameters: list[tuple[dict[str, Any], Path, str]]  # (parameter object, file it lives in, its pointer)
    base_path: str
    file: Path  # the file the operation object is written in ($refs inside it are relative to this)
    # The default route (and upstream_path) from the path item's or the document's `x-gateway`, and where it is.
    defaults: dict[str, Any] = field(default_factory=dict)
    defaults_pointer: str = ""

    @property
    def operation_id(self) -> str:
        """The operationId, or one derived from method and path where the document has none (OpenAPI makes it
        optional): `GET /users/{id}/posts` -> `get_users_id_posts`."""
        given = self.node.get("operationId")
        if isinstance(given, str) and given:
            return given
        words = re.findall(r"[A-Za-z0-9]+", self.path)
        return "_".join([self.method, *words]) if words else self.method

    @property
    def full_path(self) -> str:
        return (self.base_path.rstrip("/") + self.path) if self.base_path else self.path

    @property
    def extension(self) -> Any:
        """The operation's `x-gateway`, completed by the defaults of its path item and document."""
        own = self.node.get("x-gateway")
        if not self.defaults:
            return own
        if own is None:
            return dict(self.defaults)
        return {**self.defaults, **own} if isinstance(own, dict) else own

    @property
    def route_pointer(self) -> str:
        """Where the operation's route is written: on it, or the default it inherits."""
        own = self.node.get("x-gateway")
        if isinstance(own, dict) and "route" in own or not self.defaults:
            return pointer_join(self.pointer, "x-gateway", "route")
        return pointer_join(self.defaults_pointer, "route")


def base_path(data: dict[str, Any]) -> str:
    """The path prefix of the first server URL (`/v1` from `https://api.example.com/v1`), '' if none."""
    servers = data.get("servers") or []
    if not servers or not isinstance(servers[0], dict):
        return ""
    url = str(servers[0].get("url", ""))
    for name, var in (servers[0].get("variables") or {}).items():
        url = url.replace("{" + name + "}", str(var.get("default", "")))
    path = urlsplit(url).path if "://" in url else url
    return "/" + path.strip("/") if path.strip("/") else ""


def iter_operations(contract: Contract) -> Iterator[RawOperation | tuple[str, str]]:
    """Each operation of `contract`; a (pointer, reason) tuple instead where a path item cannot be read."""
    data = contract.data
    prefix = base_path(data)
    resolver = contract.resolver
    root = _defaults(data.get("x-gateway"), ("route",))
    for path, item in (data.get("paths") or {}).items():
        item_ptr = pointer_join("/paths", path)
        try:
            item, item_file, _ = resolver.deref(item, contract.path, item_ptr)
        except LookupError as exc:
            yield item_ptr, str(exc)
            continue
        if not isinstance(item, dict):
            continue
        shared = _parameters(item.get("parameters"), contract, item_file, pointer_join(item_ptr, "parameters"))
        own = _defaults(item.get("x-gateway"), ("route", "upstream_path"))
        defaults, defaults_ptr = ({**root, **own}, pointer_join(item_ptr, "x-gateway")) if own.get("route") \
            else (root, "/x-gateway")
        if own.get("upstream_path") and not own.get("route"):
            defaults = {**defaults, "upstream_path": own["upstream_path"]}
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            op_ptr = pointer_join(item_ptr, method)
            op_params = _parameters(op.get("parameters"), contract, item_file, pointer_join(op_ptr, "parameters"))
            merged = {(p.get("name"), p.get("in")): (p, f, ptr) for p, f, ptr in shared}
            merged.update({(p.get("name"), p.get("in")): (p, f, ptr) for p, f, ptr in op_params})
            yield RawOperation(contract, path, method, op_ptr, op, list(merged.values()), prefix, item_file,
                               defaults, defaults_ptr)


def _defaults(block: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The keys of an `x-gateway` block that operations below it inherit (only those that are strings)."""
    if not isinstance(block, dict):
        return {}
    return {k: block[k] for k in keys if isinstance(block.get(k), str)}


def _parameters(params: Any, contract: Contract, file: Path, pointer: str) -> list[tuple[dict[str, Any], Path, str]]:
    out = []
    for i, p in enumerate(params or []):
        try:
            node, pfile, _ = contract.resolver.deref(p, file, pointer_join(pointer, i))
        except LookupError:
            continue  # reported by the ref check during loading
        if isinstance(node, dict):
            out.append((node, pfile, pointer_join(pointer, i)))
    return out
