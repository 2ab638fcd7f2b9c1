"""Declarative adapters: a vendor served from a mapping file (spec.py), compiled into rules (engine.py) and run by
one generic Adapter (adapter.py). docs/vendor-contracts.md#declarative-adapters."""
