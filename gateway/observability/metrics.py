"""Every Prometheus metric the gateway exports, defined in one place (prometheus-client, one registry).

Features add their metrics here, named `gateway_<area>_<what>[_total|_seconds]`, with bounded label values only:
API, version, operationId, vendor, status class, client id (clients are configured, so bounded) — never a raw
path, an id from a request, or a credential. A client id outside the configured clients is counted as "other"
(`client_label`), since a trusted external issuer could otherwise mint unbounded ids.

Several worker processes (`gateway serve --workers N`): prometheus-client's multiprocess mode. The CLI sets
PROMETHEUS_MULTIPROC_DIR before any worker imports this module; every worker then writes its samples to files
there and `/metrics` (any worker) merges them all (`exposition()`). Gauges say how to merge (`multiprocess_mode`).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.samples import Sample

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

requests_total = Counter(
    "gateway_requests_total", "Requests answered, by operation and status class",
    ["api", "version", "operation", "status_class", "client"], registry=REGISTRY)
request_seconds = Histogram(
    "gateway_request_seconds", "Time from routing until the answer is ready to send",
    ["api", "version", "operation", "status_class", "client"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
vendor_attempt_seconds = Histogram(
    "gateway_vendor_attempt_seconds", "Each vendor attempt, by how it ended (ok, 4xx, 5xx, timeout, unavailable, "
    "error); its count is the number of attempts", ["vendor", "operation", "outcome"], buckets=LATENCY_BUCKETS,
    registry=REGISTRY)
vendor_calls_total = Counter(
    "gateway_vendor_calls_total", "Logical vendor calls (all attempts of one request), by final outcome",
    ["vendor", "operation", "outcome"], registry=REGISTRY)
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
breaker_state = Gauge(
    "gateway_breaker_state", "Circuit breaker per vendor: 0 closed, 1 half-open, 2 open", ["vendor"],
    registry=REGISTRY, multiprocess_mode="max")
breaker_transitions_total = Counter(
    "gateway_breaker_transitions_total", "Circuit breaker state changes, by the state entered", ["vendor", "to"],
    registry=REGISTRY)
breaker_rejections_total = Counter(
    "gateway_breaker_rejections_total", "Calls refused without touching the vendor because its breaker was open",
    ["vendor"], registry=REGISTRY)
vendor_retries_total = Counter(
    "gateway_vendor_retries_total", "Vendor calls retried, by why", ["vendor", "reason"], registry=REGISTRY)
vendor_drift_total = Counter(
    "gateway_vendor_drift_total", "Vendor answers that differ from the vendor's contract (contracts/vendors/), by kind",
    ["vendor", "operation", "kind"], registry=REGISTRY)
vendor_contract_violations_total = Counter(
    "gateway_vendor_contract_violations_total", "Requests to a vendor that broke the vendor's contract, by mode",
    ["vendor", "operation", "mode"], registry=REGISTRY)
retry_budget_exhausted_total = Counter(
    "gateway_retry_budget_exhausted_total", "Retries not made because the vendor's retry budget was spent",
    ["vendor"], registry=REGISTRY)
idempotency_replays_total = Counter(
    "gateway_idempotency_replays_total", "Requests answered from a stored first response (Idempotency-Key)",
    ["api", "version", "operation"], registry=REGISTRY)
auth_flood_refusals_total = Counter(
    "gateway_auth_flood_refusals_total", "Requests answered 429 without checking their credentials: their source IP "
    "sent too many bad ones (auth.failed_auth)", registry=REGISTRY)
ratelimit_rejections_total = Counter(
    "gateway_ratelimit_rejections_total", "Requests refused (or let through unchecked) by rate limits and quotas",
    ["api", "version", "operation", "client", "reason"], registry=REGISTRY)
vendor_throttled_total = Counter(
    "gateway_vendor_throttled_total", "Vendor calls not made to keep under the vendor's limits, by why",
    ["vendor", "reason"], registry=REGISTRY)
jobs_accepted_total = Counter(
    "gateway_jobs_accepted_total", "Requests accepted for asynchronous processing (202)", ["operation"],
    registry=REGISTRY)
jobs_finished_total = Counter(
    "gateway_jobs_finished_total", "Job attempts by how they ended (succeeded, retry, dead)",
    ["kind", "name", "outcome"], registry=REGISTRY)
jobs_queue_depth = Gauge(
    "gateway_jobs_queue_depth", "Jobs pending, retrying or running", registry=REGISTRY, multiprocess_mode="max")
jobs_oldest_age_seconds = Gauge(
    "gateway_jobs_oldest_age_seconds", "Age of the oldest job not finished yet", registry=REGISTRY,
    multiprocess_mode="max")
jobs_dead = Gauge("gateway_jobs_dead", "Dead letters waiting for an operator", registry=REGISTRY,
                  multiprocess_mode="max")
dlq_replays_total = Counter(
    "gateway_dlq_replays_total", "Dead letters replayed or discarded by operators", ["action"], registry=REGISTRY)
store_up = Gauge(
    "gateway_store_up", "1 while the store answers, 0 while it is known to be down (the job store, Redis)",
    ["store"], registry=REGISTRY, multiprocess_mode="livemin")
store_unavailable_total = Counter(
    "gateway_store_unavailable_total", "Store calls refused: the store was known down, did not answer in time, "
    "or could not be reached", ["store", "reason"], registry=REGISTRY)
process_deaths_total = Counter(
    "gateway_process_deaths_total", "Worker processes of `gateway serve --workers N` that exited or were killed "
    "(and were replaced)", ["signal"], registry=REGISTRY)
webhooks_received_total = Counter(
    "gateway_webhooks_received_total", "Inbound vendor webhooks, by outcome", ["vendor", "outcome"],
    registry=REGISTRY)
webhook_deliveries_total = Counter(
    "gateway_webhook_deliveries_total", "Outbound webhook delivery attempts, by outcome",
    ["subscription", "outcome"], registry=REGISTRY)

# -- monitoring (gateway/monitoring/, docs/monitoring.md) -----------------------------------------------------------
FRESHNESS_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0)
job_completion_seconds = Histogram(
    "gateway_job_completion_seconds", "Asynchronous operations: from acceptance (202) until the vendor's success",
    ["api", "version", "operation"], buckets=FRESHNESS_BUCKETS, registry=REGISTRY)
reconcile_mismatches = Gauge(
    "gateway_reconcile_mismatches", "Mismatches the last complete run of a reconciliation rule found", ["rule"],
    registry=REGISTRY, multiprocess_mode="mostrecent")
reconcile_runs_total = Counter(
    "gateway_reconcile_runs_total", "Reconciliation runs by how they ended (ok, mismatches, paused, failed)",
    ["rule", "status"], registry=REGISTRY)
reconcile_last_run_timestamp = Gauge(
    "gateway_reconcile_last_run_timestamp_seconds", "When a rule's last run ended, by its status",
    ["rule", "status"], registry=REGISTRY, multiprocess_mode="max")
synthetic_runs_total = Counter(
    "gateway_synthetic_runs_total", "Synthetic golden path runs by outcome (ok, failed)", ["path", "outcome"],
    registry=REGISTRY)
synthetic_step_seconds = Histogram(
    "gateway_synthetic_step_seconds", "Each step of a synthetic golden path", ["path", "step"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY)
volume_anomalies_total = Counter(
    "gateway_volume_anomalies_total", "Hours judged anomalous, by series kind (requests, recorded, error_ratio, "
    "latency_p95) and direction", ["operation", "kind", "direction"], registry=REGISTRY)
slo_burn_rate = Gauge(
    "gateway_slo_burn_rate", "Error budget burn rate per SLO and window, as the gateway evaluates it",
    ["operation", "slo", "window"], registry=REGISTRY, multiprocess_mode="mostrecent")
alerts_firing = Gauge(
    "gateway_alerts_firing", "Alerts firing now (silenced ones included), by family", ["family"],
    registry=REGISTRY, multiprocess_mode="mostrecent")
alert_notifications_total = Counter(
    "gateway_alert_notifications_total", "Alert notifications sent, by receiver kind and outcome",
    ["receiver", "outcome"], registry=REGISTRY)
exceptions_open = Gauge(
    "gateway_exceptions_open", "The exception queue's backlog: items waiting for a person, by kind", ["kind"],
    registry=REGISTRY, multiprocess_mode="mostrecent")
exceptions_oldest_age_seconds = Gauge(
    "gateway_exceptions_oldest_age_seconds", "Age of the oldest item waiting in the exception queue, by kind",
    ["kind"], registry=REGISTRY, multiprocess_mode="mostrecent")
exception_resolution_seconds = Histogram(
    "gateway_exception_resolution_seconds", "Time from an exception's creation to its resolution, by kind",
    ["kind"], buckets=(60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0),
    registry=REGISTRY)


MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


admission_shed_total = Counter(
    "gateway_admission_shed_total", "Requests shed at admission (503 overloaded) before any work, by why: "
    "queue_full (would wait longer than the target), queue_timeout, displaced (a fairer or higher-priority request "
    "took its place)", ["api", "version", "operation", "priority", "reason"], registry=REGISTRY)
admission_limit = Gauge(
    "gateway_admission_limit", "The adaptive concurrency limit (summed over worker processes)", registry=REGISTRY,
    multiprocess_mode="livesum")
admission_in_flight = Gauge(
    "gateway_admission_in_flight", "Requests past admission right now", registry=REGISTRY,
    multiprocess_mode="livesum")
admission_queued = Gauge(
    "gateway_admission_queued", "Requests waiting for admission right now", registry=REGISTRY,
    multiprocess_mode="livesum")
admission_loop_delay_seconds = Gauge(
    "gateway_admission_loop_delay_seconds", "The event loop's largest delay in the last window (late: another "
    "process takes the core)", registry=REGISTRY, multiprocess_mode="max")
admission_cpu_busy_ratio = Gauge(
    "gateway_admission_cpu_busy_ratio", "The share of one core a worker used in the last window (at busy_ratio the "
    "CPU counts as full and the limit follows Little's law; the busiest worker)", registry=REGISTRY,
    multiprocess_mode="max")


def _registry() -> CollectorRegistry:
    """This process's registry, or a collector of every worker's samples in multiprocess mode."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition() -> tuple[bytes, str]:
    """The text format of every metric: this process's, or every worker's merged in multiprocess mode."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100] if 1 <= status // 100 <= 5 else "other"


_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def samples() -> list[Sample]:
    """Every sample (name, labels, value) now: this process's, or every worker's in multiprocess mode."""
    return [s for metric in _registry().collect() for s in metric.samples]

# Events on NATS JetStream (gateway/events/): the transactional outbox and its relay.
events_outbox_depth = Gauge(
    "gateway_events_outbox_depth", "Events stored and not yet acknowledged by JetStream", registry=REGISTRY,
    multiprocess_mode="max")
events_outbox_oldest_age_seconds = Gauge(
    "gateway_events_outbox_oldest_age_seconds", "Age of the oldest event waiting in the outbox", registry=REGISTRY,
    multiprocess_mode="max")
events_publish_lag_seconds = Histogram(
    "gateway_events_publish_lag_seconds", "From an event's store to JetStream's acknowledgement",
    buckets=LATENCY_BUCKETS + (30.0, 60.0, 300.0), registry=REGISTRY)
events_published_total = Counter(
    "gateway_events_published_total", "Events acknowledged by JetStream (stored, or dropped as a duplicate)",
    ["result"], registry=REGISTRY)
events_refused_total = Counter(
    "gateway_events_refused_total", "Events refused at the source: their data broke the declared schema",
    ["type"], registry=REGISTRY)
