"""Every Prometheus metric the gateway exports, defined in one place (prometheus-client, one registry).

Features add their metrics here, named `gateway_<area>_<what>[_total|_seconds]`, with bounded label values only:
API, version, operationId, vendor, status class, client id (clients are configured, so bounded) — never a raw
path, an id from a request, or a credential.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

requests_total = Counter(
    "gateway_requests_total", "Requests answered, by operation and status class",
    ["api", "version", "operation", "status_class", "client"], registry=REGISTRY)
request_seconds = Histogram(
    "gateway_request_seconds", "Time from routing to the last byte handed to the server",
    ["api", "version", "operation"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
validation_failures_total = Counter(
    "gateway_validation_failures_total", "Requests refused by validation, by where the first violation was",
    ["api", "version", "operation", "location"], registry=REGISTRY)
upstream_violations_total = Counter(
    "gateway_upstream_contract_violations_total", "Vendor answers that broke the contract",
    ["api", "version", "operation", "vendor", "mode"], registry=REGISTRY)
deprecated_calls_total = Counter(
    "gateway_deprecated_calls_total", "Calls to deprecated operations, by client: who still uses what is going away",
    ["api", "version", "operation", "client"], registry=REGISTRY)
vendor_credential_failures_total = Counter(
    "gateway_vendor_credential_failures_total", "Vendor answers refusing the gateway's own credentials (401/403)",
    ["vendor"], registry=REGISTRY)
