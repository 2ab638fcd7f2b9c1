"""Impact of a vendor release: `gateway diff --vendor NAME OLD NEW`.

The two versions of a vendor contract are compared with the public contracts' diff engine
(gateway/contracts/diff.py): its directions fit the vendor side unchanged, because there the gateway is the client
(a newly required request parameter breaks our requests; a new enum value or a field that may now be missing breaks
our reading of answers). Each change is then traced to what it touches: its pointer names a vendor operation
(`/paths/...`) or a component (`/components/schemas/...`, followed to every operation that reaches it through
`$ref`); each vendor operation names the adapter operations that call it (`x-gateway-used-by`, kept true by
tests/unit/test_vendor_contracts.py, which records the calls every adapter operation makes); and the public
contracts say which of our operations route to those adapter operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.contracts.diff import Change, diff_contracts
from gateway.contracts.load import load_contracts

from .contract import VendorContract, VendorOperation, load_vendor_contract


@dataclass
class Impact:
    change: Change
    vendor_operations: list[str] = field(default_factory=list)
    adapter_operations: list[str] = field(default_factory=list)
    public_operations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.change.as_dict(), "vendor_operations": self.vendor_operations,
                "adapter_operations": self.adapter_operations, "public_operations": self.public_operations}


def _reach(contract: VendorContract, op: VendorOperation) -> set[str]:
    """Every `#/components/...` reference the operation reaches, transitively."""
    item = contract.data["paths"][op.template]
    start = [item.get("parameters") or [], item[op.method]]
    seen: set[str] = set()
    stack: list[Any] = list(start)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/") and ref not in seen:
                seen.add(ref)
                stack.append(contract.resolve({"$ref": ref}))
            stack.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def _touched(contract: VendorContract, pointer: str) -> list[VendorOperation]:
    ops = []
    for op in contract.operations:
        if pointer == op.pointer or pointer.startswith(op.pointer + "/"):
            ops.append(op)
        elif pointer.startswith("/components/"):
            parts = pointer.split("/")
            if len(parts) >= 4 and "#/" + "/".join(parts[1:4]) in _reach(contract, op):
                ops.append(op)
    return ops


def vendor_impact(vendor: str, old: Path, new: Path,
                  routes: dict[str, list[str]]) -> tuple[list[Impact], list[str]]:
    """The changes from `old` to `new` with what each touches; `routes` maps an adapter operation to the public
    operations routed to it. Returns (impacts, errors)."""
    loaded, problems = load_contracts([old, new])
    if problems or len(loaded) != 2:
        return [], [str(p) for p in problems] or ["both versions must load"]
    by_file = {c.path.resolve(): c for c in loaded}
    changes = diff_contracts(by_file[old.resolve()], by_file[new.resolve()])
    versions = (load_vendor_contract(vendor, old), load_vendor_contract(vendor, new))
    impacts = []
    for change in changes:
        touched: dict[str, VendorOperation] = {}
        for contract in versions:  # a removed part is pointed at in the old version, an added one in the new
            for op in _touched(contract, change.pointer):
                touched.setdefault(op.operation_id, op)
        adapter_ops = sorted({name for op in touched.values() for name in op.used_by})
        public = sorted({p for name in adapter_ops for p in routes.get(name, [])})
        impacts.append(Impact(change, sorted(touched), adapter_ops, public))
    return impacts, []


def public_routes(operations: list[Any], adapter: str, vendor_names: set[str]) -> dict[str, list[str]]:
    """adapter operation -> "api version operationId (METHOD path)" of each compiled public operation routed to it
    through a vendor configured with this adapter."""
    routes: dict[str, list[str]] = {}
    for op in operations:
        if op.vendor in vendor_names:
            routes.setdefault(op.adapter_operation, []).append(
                f"{op.api} {op.version} {op.operation_id} ({op.method} {op.path})")
    return routes
