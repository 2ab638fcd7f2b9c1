"""Adapter names used in `gateway.yaml` (`vendors.<name>.adapter`) and the classes behind them.

A name not listed here may be a dotted path `package.module:ClassName` to an adapter of your own.
"""

from __future__ import annotations

import importlib

from .base import Adapter

BUILTIN = {
    "http": "adapters.http.adapter:HttpAdapter",
    "stripe": "adapters.stripe.adapter:StripeAdapter",
    "hubspot": "adapters.hubspot.adapter:HubSpotAdapter",
    "woocommerce": "adapters.woocommerce.adapter:WooCommerceAdapter",
    "gateway": "gateway.jobs.status:GatewayOperationsAdapter",
}


def adapter_class(name: str) -> type[Adapter]:
    """The adapter class for `name`; LookupError with a readable reason if there is none."""
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
