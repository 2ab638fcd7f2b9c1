"""Vendor contracts (docs/vendor-contracts.md): the vendor side of the adapter layer checked against the vendor's
own OpenAPI document in contracts/vendors/.

    schema.py    OpenAPI 3.0 schemas -> JSON Schema (JSON bodies, or form/query values that arrive as strings);
                 Stripe-style bracketed keys decoded into nested objects
    contract.py  one vendor's contract compiled once: operations matched by method and path, validators built
    drift.py     an answer compared with the contract: drift found, counted, logged once, kept for `gateway drift`
    check.py     the hook the runtime installs into each VendorClient (adapters/client.py)
    mapping.py   a declarative adapter's mapping file checked against both contracts (navigate.py walks schemas)
"""

from .check import ContractCheck, build_check
from .contract import VendorContract, load_vendor_contract
from .drift import Drift, DriftLog, find_drift

__all__ = ["ContractCheck", "Drift", "DriftLog", "VendorContract", "build_check", "find_drift",
           "load_vendor_contract"]
