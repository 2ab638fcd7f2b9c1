"""Adapter names used in `gateway.yaml` (`vendors.<name>.adapter`) and the classes behind them.

A name not listed here may be a dotted path `package.module:ClassName` to an adapter of your own. `declarative` is
a vendor without Python: its class is made from the vendor's mapping file (`adapter_for`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from gateway.settings import VendorSettings

from .base import Adapter

BUILTIN = {
    "http": "adapters.http.adapter:HttpAdapter",
    "stripe": "adapters.stripe.adapter:StripeAdapter",
    "hubspot": "adapters.hubspot.adapter:HubSpotAdapter",
    "woocommerce": "adapters.woocommerce.adapter:WooCommerceAdapter",
    "gateway": "gateway.jobs.status:GatewayOperationsAdapter",
}


def adapter_for(vendor: str, settings: VendorSettings, base_dir: Path) -> type[Adapter]:
    """The adapter class of one configured vendor: `adapter_class`, or for `adapter: declarative` the class made
    from its mapping file. LookupError with a readable reason if there is none."""
    if settings.adapter == "declarative":
        from .declarative.adapter import declarative_class

        return declarative_class(vendor, settings, base_dir)
    return adapter_class(settings.adapter)


def adapter_class(name: str) -> type[Adapter]:
    """The adapter class for `name`; LookupError with a readable reason if there is none."""
    if name == "declarative":
        raise LookupError("a declarative adapter is made from its vendor's mapping file (adapter_for)")
    target = BUILTIN.get(name, name)
    if ":" not in target:
        raise LookupError(f"unknown adapter {name!r} (built in: {', '.join(sorted(BUILTIN))})")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"adapter {name!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise LookupError(f"adapter {name!r} is not an Adapter subclass")
    return cls
