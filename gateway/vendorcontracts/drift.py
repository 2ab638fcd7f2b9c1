"""Drift: where a vendor's answer differs from the vendor's contract.

Kinds (the `kind` label of `gateway_vendor_drift_total{vendor,operation,kind}`):
    undeclared_field   a property the contract does not declare (objects whose properties it lists)
    missing_required   a property the contract says is always there
    type_change        a value of another JSON type than declared (null where not nullable included)
    unknown_enum       a value outside the declared enum
    undeclared_status  an HTTP status the operation does not declare (and no range or `default` covers)
    not_json           a body that does not parse although the contract declares a JSON schema

The comparison walks the answer along the contract's schema (hand-written rather than a JSON Schema validator's
errors: a validator reports a mismatch under `anyOf` as "matches none" at the branch point, where drift needs the
kind and the pointer of the differing field; docs/decisions/vendor-drift-walker.md). Array indexes in pointers are
written `*`, so the same drift in every item of a list is one drift.

DriftLog counts every occurrence, logs each distinct (vendor, operation, kind, pointer) once per process with its
pointer, and keeps it in a SQLite file (var/vendor-drift.sqlite) that `gateway drift` lists. The public answer is not
touched: the adapter's mapping and the public contract's response check decide that, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.contracts.shapes import json_type
from gateway.observability import metrics
from gateway.stores.sqlite import connect

from .contract import VendorContract, VendorOperation

log = logging.getLogger("gateway.vendors.drift")
_MAX_DEPTH = 64


@dataclass(frozen=True)
class Drift:
    kind: str
    pointer: str
    detail: str


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _fits(value: Any, declared: str) -> bool:
    actual = json_type(value)
    return actual == declared or (declared == "number" and actual == "integer") or (
        declared == "integer" and isinstance(value, float) and value.is_integer())


def find_drift(contract: VendorContract, schema: Any, value: Any) -> list[Drift]:
    """Every difference between `value` and `schema` (an OpenAPI schema of `contract`)."""
    found: list[Drift] = []
    _walk(contract, schema, value, "", found, 0)
    return found


def _walk(contract: VendorContract, schema: Any, value: Any, pointer: str, found: list[Drift], depth: int) -> None:
    if depth > _MAX_DEPTH or not isinstance(schema, dict):
        return
    schema = contract.resolve(schema)
    if not isinstance(schema, dict) or schema.get("x-excerpt-pruned"):
        return
    if value is None:
        if not schema.get("nullable") and (schema.get("type") or _branches(schema)):
            found.append(Drift("type_change", pointer or "/", "is null, which the contract does not allow"))
        return
    branches = _branches(schema)
    if branches:
        chosen = _choose(contract, branches, value)
        if chosen is None:
            kinds = sorted({str(contract.resolve(b).get("type", "object" if "properties" in contract.resolve(b)
                                                          else "any")) for b in branches})
            found.append(Drift("type_change", pointer or "/",
                               f"is {json_type(value)}, the contract allows {' or '.join(kinds)}"))
        else:
            _walk(contract, chosen, value, pointer, found, depth + 1)
        for extra in schema.get("allOf") or []:
            _walk(contract, extra, value, pointer, found, depth + 1)
        if "type" not in schema and "properties" not in schema:
            return
    declared = schema.get("type") or ("object" if "properties" in schema else None)
    if declared is not None and not _fits(value, declared):
        found.append(Drift("type_change", pointer or "/", f"is {json_type(value)}, the contract says {declared}"))
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        found.append(Drift("unknown_enum", pointer or "/", f"has a value outside the contract's {len(enum)} values"))
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                found.append(Drift("missing_required", f"{pointer}/{_escape(name)}", "is missing"))
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            where = f"{pointer}/{_escape(name)}"
            if name in props:
                _walk(contract, props[name], item, where, found, depth + 1)
            elif isinstance(extra, dict):
                _walk(contract, extra, item, where, found, depth + 1)
            elif props and extra is not True and not schema.get("x-excerpt-open"):
                found.append(Drift("undeclared_field", where, "is not declared by the contract"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _walk(contract, schema["items"], item, f"{pointer}/*", found, depth + 1)


def _branches(schema: dict[str, Any]) -> list[Any]:
    return list(schema.get("anyOf") or schema.get("oneOf") or [])


def _choose(contract: VendorContract, branches: list[Any], value: Any) -> Any:
    """The branch of an anyOf/oneOf that `value` is meant to be: the first of its JSON type (or untyped)."""
    for branch in branches:
        b = contract.resolve(branch)
        if not isinstance(b, dict):
            continue
        declared = b.get("type") or ("object" if "properties" in b else None)
        if b.get("x-excerpt-pruned") and declared is None:
            return b
        if declared is not None and _fits(value, declared):
            return b
        if declared is None and not _branches(b):
            return b
    return None


class DriftLog:
    """Drift counted, logged once per distinct drift, kept in a SQLite file for `gateway drift`.

    The file holds, per distinct drift, when it was first and last seen and how often; it is written when a drift is
    first seen by this process and then at most once a minute per drift (a short blocking write, rare by design)."""

    WRITE_EVERY_S = 60.0

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[tuple[str, str, str, str], list[float]] = {}  # key -> [last write, occurrences unwritten]
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._db: Any = None
        self._lock = threading.Lock()

    def record(self, vendor: str, operation: str, drifts: list[Drift], request_id: str | None = None) -> None:
        now = time.time()
        for drift in drifts:
            label = (vendor, operation, drift.kind)
            counter = self._counters.get(label)
            if counter is None:
                counter = self._counters[label] = metrics.vendor_drift_total.labels(*label)
            counter.inc()
            key = (vendor, operation, drift.kind, drift.pointer)
            state = self._seen.get(key)
            if state is None:
                self._seen[key] = [now, 0]
                log.warning("vendor drift: %s %s %s at %s: %s", vendor, operation, drift.kind, drift.pointer,
                            drift.detail, extra={"vendor": vendor, "operation": operation, "kind": drift.kind,
                                                 "pointer": drift.pointer, "request_id": request_id})
                self._keep(key, drift.detail, now, 1)
                continue
            state[1] += 1
            if now - state[0] >= self.WRITE_EVERY_S:
                self._keep(key, drift.detail, now, int(state[1]))
                state[0], state[1] = now, 0

    def _keep(self, key: tuple[str, str, str, str], detail: str, now: float, count: int) -> None:
        if self.path is None:
            return
        try:
            with self._lock:
                if self._db is None:
                    self._db = open_db(self.path)
                self._db.execute(
                    "INSERT INTO vendor_drift (vendor, operation, kind, pointer, detail, first_seen, last_seen, "
                    "count) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vendor, operation, kind, pointer) DO UPDATE "
                    "SET last_seen = excluded.last_seen, count = count + excluded.count, detail = excluded.detail",
                    (*key, detail, now, now, count))
        except Exception:  # noqa: BLE001 - keeping the list must never fail the request that showed the drift
            log.exception("vendor drift: cannot write %s", self.path)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_db(path: Path) -> Any:
    db = connect(path, 5.0)
    db.execute("CREATE TABLE IF NOT EXISTS vendor_drift (vendor TEXT, operation TEXT, kind TEXT, pointer TEXT, "
               "detail TEXT, first_seen REAL, last_seen REAL, count INTEGER, "
               "PRIMARY KEY (vendor, operation, kind, pointer))")
    return db


def read_drift(path: Path, since: float | None = None) -> list[dict[str, Any]]:
    """The drift kept in `path`, most recently seen last (only what was seen at or after `since`)."""
    if not path.exists():
        return []
    db = open_db(path)
    try:
        rows = db.execute("SELECT vendor, operation, kind, pointer, detail, first_seen, last_seen, count "
                          "FROM vendor_drift WHERE last_seen >= ? ORDER BY last_seen, vendor, operation, pointer",
                          (since or 0.0,)).fetchall()
    finally:
        db.close()
    names = ("vendor", "operation", "kind", "pointer", "detail", "first_seen", "last_seen", "count")
    return [dict(zip(names, r, strict=True)) for r in rows]


def check_status(op: VendorOperation, status: int) -> list[Drift]:
    if op.response_for(status) is None:
        return [Drift("undeclared_status", "", f"HTTP {status} is not declared for this operation")]
    return []
