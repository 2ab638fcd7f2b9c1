"""Version mappings: how a newer contract version's shapes map onto the adapter's canonical model (v1) and back.

One adapter serves every version of an API; a contract names its mapping at the root (`x-gateway.mapping`), and the
dispatcher applies it around the adapter call. A mapping is a module here with two functions, keyed by operationId:

    def to_canonical(operation_id: str, call: AdapterCall) -> AdapterCall      # the request, before the adapter
    def from_canonical(operation_id: str, result: AdapterResult) -> AdapterResult  # the answer, after it
"""

from __future__ import annotations

import importlib
from types import ModuleType

KNOWN = ("orders_v2",)


def load_mapping(name: str) -> ModuleType:
    """The mapping module `name`; LookupError naming the known ones if there is none."""
    if name not in KNOWN:
        raise LookupError(f"unknown mapping {name!r} (known: {', '.join(KNOWN)})")
    return importlib.import_module(f"gateway.mappings.{name}")
