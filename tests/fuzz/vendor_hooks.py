"""schemathesis hooks for tests/fuzz/test_vendor_sandboxes.py: the sandbox's answers must not drift from the
vendor's contract (gateway/vendorcontracts/drift.py: no undeclared field, no missing required one, no type change,
no unknown enum value, no undeclared status). schemathesis' own response_schema_conformance allows undeclared
fields; a real vendor would not send them, so a sandbox must not either."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import schemathesis

from gateway.vendorcontracts import VendorContract, find_drift, load_vendor_contract


@cache
def _contract() -> VendorContract:
    file = Path(os.environ["VENDOR_CONTRACT"])
    return load_vendor_contract(file.stem, file)


@schemathesis.check
def no_vendor_drift(ctx: Any, response: Any, case: Any) -> bool | None:
    contract = _contract()
    op = next(o for o in contract.operations
              if o.template == case.operation.path and o.method == case.operation.method.lower())
    declared = op.response_for(response.status_code)
    if declared is None:
        raise AssertionError(f"{op.operation_id}: HTTP {response.status_code} is not declared by the vendor contract")
    if declared.schema is None or not response.content:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise AssertionError(f"{op.operation_id}: the answer is not JSON") from None
    drifts = find_drift(contract, declared.schema, body)
    if drifts:
        raise AssertionError(f"{op.operation_id} HTTP {response.status_code} drifts from the vendor contract: "
                             + "; ".join(f"{d.kind} at {d.pointer or '/'} ({d.detail})" for d in drifts[:10]))
    return None
