"""Vendor sandboxes: local imitations of the vendors' real APIs, with fault injection, for the demo and the tests.

Not part of the gateway: they are neither in the wheel nor in the Docker image. One way to start them:

    python -m sandboxes            # every sandbox on its port below (what `make run` does)
    SandboxThread().start()        # tests and benchmarks: ephemeral ports, in a background thread

Port table (the demo's gateway.yaml points the vendors here):

    vendor        port   sandbox
    stripe        8101   sandboxes/stripe.py       (Stripe PaymentIntents + Refunds; wire format in stripe_wire.py)
    hubspot       8102   sandboxes/hubspot.py      (HubSpot CRM v3 contacts)
    woocommerce   8103   sandboxes/woocommerce.py  (WooCommerce REST v3 orders and products)
    shippo        8104   sandboxes/shippo.py       (Shippo shipments, rates, transactions, tracks: the declarative
                                                   vendor; the sandbox is test infrastructure, so Python is fine)
"""

from __future__ import annotations

PORTS = {"stripe": 8101, "hubspot": 8102, "woocommerce": 8103, "shippo": 8104}
